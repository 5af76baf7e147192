"""PGD-40 against its floor: how much advx's PGD costs beyond the model's own passes.

The floor of a k-step gradient attack is k forward + backward passes of the model (the gradient
of the cross-entropy w.r.t. the input, by ``torch.autograd.grad``).  This times advx's PGD
(Linf eps 0.3, 40 steps of 0.01, one random start) on madry-cnn over MNIST test digits against
that floor, on the same batches in the same run.  Attack and floor timings alternate over
several rounds (the order flips every round) and the medians are compared, because timings on
shared machines drift by 10% back to back.

    python bench/pgd_floor.py                 # trained madry-cnn (trained and cached if needed)
    python bench/pgd_floor.py --untrained     # seeded initial weights: timing only

Prints robust accuracy and the ratio, and rewrites the section of bench/README.md between
``<!-- pgd-floor:start -->`` and ``<!-- pgd-floor:end -->`` (``--no-readme`` skips that).
"""

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import time

import advx
import torch

README = pathlib.Path(__file__).with_name("README.md")
START, END = "<!-- pgd-floor:start -->", "<!-- pgd-floor:end -->"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test digits (default 1000)")
    parser.add_argument("--batch", type=int, default=500, help="batch size (default 500)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--untrained", action="store_true", help="seeded untrained model")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    return parser.parse_args(argv)


def load(args):
    """``(model, batches)``: madry-cnn for MNIST and the first ``n`` test digits in batches."""
    model = advx.get_model("madry-cnn", dataset="mnist", train=not args.untrained)
    x, y = advx.get_dataset("mnist").load("test")
    x, y = x[:args.n], y[:args.n]
    return model.eval(), list(zip(x.split(args.batch), y.split(args.batch)))


def run_attack(attack, model, batches, threat):
    """Seconds for the attack over all batches, and the number of samples left unfooled."""
    start = time.perf_counter()
    robust = sum(int((~attack(model, x, y, threat, seed=i).success).sum())
                 for i, (x, y) in enumerate(batches))
    return time.perf_counter() - start, robust


def run_floor(model, batches, steps):
    """Seconds for ``steps`` forward + backward passes (input gradient of CE) per batch."""
    start = time.perf_counter()
    for x, y in batches:
        x = x.clone().requires_grad_(True)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
            torch.autograd.grad(loss, x)
    return time.perf_counter() - start


def measure(args, model, batches):
    """Interleaved timings over ``rounds``: attack and floor seconds, robust count, load."""
    steps = 40
    attack = advx.get_attack("pgd", steps=steps, step_size=0.01, random_start=True, restarts=1)
    threat = advx.ThreatModel(norm="linf", eps=0.3)
    run_floor(model, batches[:1], 2)  # warm-up: allocator and kernels
    attack_s, floor_s, robust, load = [], [], None, [os.getloadavg()[0]]
    for r in range(args.rounds):
        order = ("attack", "floor") if r % 2 == 0 else ("floor", "attack")
        for what in order:
            if what == "attack":
                seconds, robust = run_attack(attack, model, batches, threat)
                attack_s.append(seconds)
            else:
                floor_s.append(run_floor(model, batches, steps))
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}: attack {attack_s[-1]:.2f} s, floor {floor_s[-1]:.2f} s, "
              f"ratio {attack_s[-1] / floor_s[-1]:.3f}, load {load[-1]:.1f}")
    return attack_s, floor_s, robust, load


def report(args, model, n, attack_s, floor_s, robust, load):
    """The Markdown section for README.md."""
    attack_med, floor_med = statistics.median(attack_s), statistics.median(floor_s)
    source = getattr(model, "advx_metadata", {}).get("source", "?")
    weights = "untrained (seeded init)" if args.untrained else f"trained (weights: {source})"
    flags = " --untrained" if args.untrained else ""
    return "\n".join([
        "### PGD-40 vs its floor (madry-cnn, MNIST)",
        "",
        f"PGD Linf eps 0.3, 40 steps of 0.01, one random start; madry-cnn {weights}; "
        f"{n} MNIST test digits in batches of {args.batch}; {args.threads} torch threads; "
        f"median of {args.rounds} interleaved rounds. Floor: 40 forward + backward passes "
        "(input gradient of the CE loss) on the same batches.",
        "",
        "| | seconds (median) | per step and digit |",
        "|---|---|---|",
        f"| advx pgd | {attack_med:.2f} | {attack_med / 40 / n * 1e3:.3f} ms |",
        f"| floor (40 x fwd+bwd) | {floor_med:.2f} | {floor_med / 40 / n * 1e3:.3f} ms |",
        f"| **ratio** | **{attack_med / floor_med:.3f}** | target < 1.10 |",
        "",
        f"Robust accuracy: {robust / n:.1%} ({robust} of {n}). Per-round ratios: "
        + ", ".join(f"{a / f:.3f}" for a, f in zip(attack_s, floor_s))
        + f". 1-minute load average during the rounds: {min(load):.1f} to {max(load):.1f} "
        f"on {os.cpu_count()} CPUs (other processes inflate the cost of every kernel launch).",
        "",
        f"Command: `python bench/pgd_floor.py{flags}` — {datetime.date.today().isoformat()}, "
        f"torch {torch.__version__}, advx {advx.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}.",
    ])


def update_readme(section, path=README):
    """Replace the marked section of ``path`` (or append it) with ``section``."""
    block = f"{START}\n{section}\n{END}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model, batches = load(args)
    attack_s, floor_s, robust, loads = measure(args, model, batches)
    n = sum(len(y) for _, y in batches)
    section = report(args, model, n, attack_s, floor_s, robust, loads)
    print(section)
    if not args.no_readme:
        update_readme(section)


if __name__ == "__main__":
    main()
