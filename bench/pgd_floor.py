"""PGD-40 (or APGD-100) against its floor: what advx's attack costs beyond the model's passes.

The floor of a k-step gradient attack is k forward + backward passes of the model (the gradient
of the cross-entropy w.r.t. the input, by ``torch.autograd.grad``) on the whole batch.  This
times advx's PGD (Linf eps 0.3, 40 steps of 0.01, one random start) -- or with ``--attack``
APGD-CE / APGD-DLR (Linf eps 0.1, 100 steps, one run; at eps 0.3 every digit falls early and
APGD stops, which says nothing of its cost per step) -- on madry-cnn over MNIST test digits
against that floor, on the same batches in the same run.  Attack and floor alternate batch by batch
(the order flipping every pair) over several rounds, because timings on shared machines drift
by 10% back to back; the ratio reported is the median of the per-batch attack/floor ratios.
Batches of 500 by default.

    python bench/pgd_floor.py                 # trained madry-cnn (trained and cached if needed)
    python bench/pgd_floor.py --attack apgd-ce
    python bench/pgd_floor.py --untrained     # seeded initial weights: timing only

Prints robust accuracy and the ratio, and rewrites the attack's section of bench/README.md
(between ``<!-- pgd-floor:start -->`` and ``<!-- pgd-floor:end -->`` for pgd,
``<!-- apgd-ce-floor:start -->`` ... for apgd-ce; ``--no-readme`` skips that).
"""

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import time

import advx
import attrs
import torch
from _readme import update_section

README = pathlib.Path(__file__).with_name("README.md")
# name -> (title, parameters, eps, steps)
ATTACKS = {
    "pgd": ("PGD-40", {"steps": 40, "step_size": 0.01, "random_start": True, "restarts": 1},
            0.3, 40),
    "apgd-ce": ("APGD-CE-100", {"steps": 100}, 0.1, 100),
    "apgd-dlr": ("APGD-DLR-100", {"steps": 100}, 0.1, 100),
}


def markers(name):
    return f"<!-- {name}-floor:start -->", f"<!-- {name}-floor:end -->"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", choices=sorted(ATTACKS), default="pgd",
                        help="pgd (Linf 0.3, 40 x 0.01) or apgd-ce/apgd-dlr (Linf 0.1, 100)")
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


@attrs.define
class Timings:
    """Seconds per round, attack/floor ratio per batch pair, robust count, load averages."""

    attack_s: list = attrs.Factory(list)
    floor_s: list = attrs.Factory(list)
    pair_ratios: list = attrs.Factory(list)
    robust: list = attrs.Factory(list)  # unfooled per round
    loads: list = attrs.Factory(list)
    steps: int = 1  # the floor's passes
    pass_ratios: list = attrs.Factory(list)  # per batch pair: per-pass cost over the floor's

    def add(self, round_, attack, floor, unfooled, passes=None):
        """One batch pair; ``passes``: the mean gradient passes per sample the attack ran
        (fooled samples leave early), to compare the cost per pass with the floor's."""
        if len(self.attack_s) == round_:
            self.attack_s.append(0.0), self.floor_s.append(0.0), self.robust.append(0)
        self.attack_s[round_] += attack
        self.floor_s[round_] += floor
        self.robust[round_] += unfooled
        self.pair_ratios.append(attack / floor)
        if passes is not None:
            self.pass_ratios.append(attack / floor * self.steps / passes)


def time_attack(attack, model, x, y, threat, seed):
    """Seconds for the attack on one batch, the number of samples left unfooled, and the mean
    queries (for gradient attacks: passes) per sample."""
    start = time.perf_counter()
    result = attack(model, x, y, threat, seed=seed)
    seconds = time.perf_counter() - start
    return seconds, int((~result.success).sum()), float(result.queries.double().mean())


def time_floor(model, x, y, steps):
    """Seconds for ``steps`` forward + backward passes (input gradient of CE) on one batch."""
    start = time.perf_counter()
    x = x.clone().requires_grad_(True)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
        torch.autograd.grad(loss, x)
    return time.perf_counter() - start


def measure(args, model, batches):
    """Per round, attack and floor seconds over all batches, timed pairwise per batch."""
    _, params, eps, steps = ATTACKS[args.attack]
    attack = advx.get_attack(args.attack, **params)
    threat = advx.ThreatModel(norm="linf", eps=eps)
    return interleaved(attack, threat, steps, model, batches, args.rounds)


def interleaved(attack, threat, steps, model, batches, rounds):
    """:class:`Timings` of ``attack`` and its floor of ``steps`` passes of ``model``.

    Attack and floor alternate batch by batch (the order flips every pair), so slow phases of
    a shared machine hit both alike.
    """
    time_floor(model, *batches[0], 2)  # warm-up: allocator and kernels
    timings = Timings(loads=[os.getloadavg()[0]], steps=steps)
    for r in range(rounds):
        for i, (x, y) in enumerate(batches):
            first_attack = len(timings.pair_ratios) % 2 == 0
            if not first_attack:
                floor = time_floor(model, x, y, steps)
            seconds, unfooled, passes = time_attack(attack, model, x, y, threat, seed=i)
            if first_attack:
                floor = time_floor(model, x, y, steps)
            timings.add(r, seconds, floor, unfooled, passes)
        timings.loads.append(os.getloadavg()[0])
        print(f"round {r + 1}: attack {timings.attack_s[r]:.2f} s, "
              f"floor {timings.floor_s[r]:.2f} s, load {timings.loads[-1]:.1f}")
    return timings


def report(args, model, n, t):
    """The Markdown section for README.md from :class:`Timings` ``t``."""
    attack_med, floor_med = statistics.median(t.attack_s), statistics.median(t.floor_s)
    ratio = statistics.median(t.pair_ratios)
    source = getattr(model, "advx_metadata", {}).get("source", "?")
    weights = "untrained (seeded init)" if args.untrained else f"trained (weights: {source})"
    flags = (f" --attack {args.attack}" if args.attack != "pgd" else "") + (
        " --untrained" if args.untrained else "")
    robust = t.robust[-1]
    title, params, eps, k = ATTACKS[args.attack]
    setting = ", ".join(f"{key} {value}" for key, value in params.items())
    return "\n".join([
        f"### {title} vs its floor (madry-cnn, MNIST)",
        "",
        f"advx {args.attack} Linf eps {eps}, {setting}; madry-cnn {weights}; "
        f"{n} MNIST test digits in batches of {args.batch}; {args.threads} torch threads; "
        f"{args.rounds} rounds, attack and floor alternating batch by batch. "
        f"Floor: {k} forward + backward passes (input gradient of the CE loss) on the same "
        "whole batches (advx runs its passes in chunks of 128 digits on CPU, faster here).",
        "",
        "| | seconds per round (median) | per step and digit |",
        "|---|---|---|",
        f"| advx {args.attack} | {attack_med:.2f} | {attack_med / k / n * 1e3:.3f} ms |",
        f"| floor ({k} x fwd+bwd) | {floor_med:.2f} | {floor_med / k / n * 1e3:.3f} ms |",
        f"| **ratio** (median of {len(t.pair_ratios)} batch pairs) | **{ratio:.3f}** "
        "| target < 1.05 |",
        "",
        f"Robust accuracy: {robust / n:.1%} ({robust} of {n}). Pair ratios: "
        + ", ".join(f"{r:.3f}" for r in t.pair_ratios)
        + f". 1-minute load average during the rounds: {min(t.loads):.1f} to "
        f"{max(t.loads):.1f} on {os.cpu_count()} CPUs (other processes inflate the cost of "
        "every kernel launch).",
        "",
        f"Command: `python bench/pgd_floor.py{flags}` — {datetime.date.today().isoformat()}, "
        f"torch {torch.__version__}, advx {advx.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}.",
    ])


def update_readme(section, name, path=README):
    """Replace the attack's marked section of ``path`` (or append it) with ``section``."""
    update_section(section, *markers(name), path)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model, batches = load(args)
    timings = measure(args, model, batches)
    n = sum(len(y) for _, y in batches)
    section = report(args, model, n, timings)
    print(section)
    if not args.no_readme:
        update_readme(section, args.attack)


if __name__ == "__main__":
    main()
