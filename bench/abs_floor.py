"""ABS inference against the floor of its decoder passes, and score-based queries batched.

Three measurements on the "abs" entry of ``examples/abs-mnist.toml`` (its VAEs trained and
cached on first use), run with the ``paper`` inference settings (8,000 prior latents, 50 Adam
steps; the inference settings share the trained VAEs):

1. Inference of a batch (selection of the best candidate latent per digit and class, 50 Adam
   steps on the ten latents, the scores at the final latents) against its floor: 50 x 10
   decoder forward + backward passes on the same batch (each class's decoder on its latents,
   the gradient of the same loss), alternating batch by batch, the order flipping every pair.
   The target: within 1.3x.
2. The candidates: decoding the 10 x 8,000 prior latents (done once per set of weights, then
   kept) against selecting among them for a batch (one matrix product): what decoding them
   again for every batch would cost.
3. A score-based attack batches its queries: ``estimated-gradient`` FGSM (NES, 10 antithetic
   pairs: 21 queries per digit) on ABS with the ``cpu`` settings, against the floor of its
   queries: one ABS pass over all the rows they make (digits x 21) as one batch.

    python bench/abs_floor.py               # rewrites its section of bench/README.md
    python bench/abs_floor.py --no-readme
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
from _readme import update_section
from advx.run.context import Session
from advx.run.spec import load_spec

HERE = pathlib.Path(__file__).parent
SPEC = HERE.parent / "examples" / "abs-mnist.toml"
README = HERE / "README.md"
MARKERS = ("<!-- abs-floor:start -->", "<!-- abs-floor:end -->")
NES_PAIRS = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="test digits (default 100)")
    parser.add_argument("--batch", type=int, default=50, help="batch size (default 50)")
    parser.add_argument("--rounds", type=int, default=2, help="timing rounds (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--cache", default=None, help="cache root (default: advx's)")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    return parser.parse_args(argv)


def models(args):
    """``(cpu module, paper module)``: the example's "abs" entry as a run builds it, and the
    same trained VAEs under the paper's inference settings."""
    registry = advx.get_registry()
    spec = load_spec(SPEC, registry)
    session = Session(spec, registry, device="cpu", cache=args.cache)
    cpu = session.built(spec.model("abs")).classifier.eval()
    paper = registry.create("models", "abs", preset="paper").build(advx.get_dataset(
        "mnist").info)
    paper.load_state_dict(cpu.state_dict())
    return cpu, paper.eval()


def seconds(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def floor(module, x):
    """The decoder passes of inference alone: ``steps`` x 10 decoder forward + backward
    passes (the same loss, the gradient w.r.t. the latents) from the selected latents."""
    search, vaes = module.search, module.vaes.vaes
    z = search.select(module.vaes.bank, x)
    flat = x.flatten(1)
    with torch.enable_grad():
        for _ in range(search.steps):
            leaf = z.detach().requires_grad_(True)
            loss = sum(((vae.decode(leaf[:, c]).flatten(1) - flat).square().sum(1)
                        + 0.5 * leaf[:, c].square().sum(1)).sum() for c, vae in enumerate(vaes))
            torch.autograd.grad(loss, leaf)


def measure_inference(args, module, batches):
    inference_s, floor_s, ratios = [], [], []
    with torch.no_grad():
        for _ in range(args.rounds):
            for i, (x, _y) in enumerate(batches):
                if i % 2:
                    low = seconds(floor, module, x)
                spent = seconds(module, x)
                if not i % 2:
                    low = seconds(floor, module, x)
                inference_s.append(spent), floor_s.append(low), ratios.append(spent / low)
    return inference_s, floor_s, ratios


def measure_candidates(module, x):
    search, bank = module.search, module.vaes.bank
    search.forget()
    decode = seconds(search.candidates, bank, x)
    select = statistics.median(seconds(search.select, bank, x) for _ in range(3))
    return decode, select


def measure_queries(module, x, y, repeats=3):
    """Per repeat: seconds of estimated-gradient FGSM on ``x`` and of one ABS pass over as
    many rows as its queries."""
    attack = advx.get_attack("estimated-gradient", attack={"name": "fgsm"},
                             samples=NES_PAIRS, sigma=0.01)
    threat = advx.ThreatModel(norm="linf", eps=0.1)
    rows = x.repeat_interleave(2 * NES_PAIRS + 1, 0)
    attack_s, floor_s = [], []
    for _ in range(repeats):
        attack_s.append(seconds(attack, module, x, y, threat))
        with torch.no_grad():
            floor_s.append(seconds(module, rows))
    queries = attack(module, x, y, threat).queries
    return attack_s, floor_s, queries


def report(args, n, inference, candidates, queries):
    inference_s, floor_s, ratios = inference
    decode, select = candidates
    attack_s, query_floor_s, spent = queries
    per_digit = int(spent.max())
    return "\n".join([
        "### ABS inference vs its decoder passes; score-based queries batched",
        "",
        "The \"abs\" entry of examples/abs-mnist.toml (ten class VAEs trained on the MNIST "
        "sample), inference with the paper's settings (8,000 prior latents, 50 Adam steps); "
        f"{n} test digits in batches of {args.batch}; {args.threads} torch threads; "
        f"{args.rounds} rounds, inference and floor alternating batch by batch. Floor: 50 x 10 "
        "decoder forward + backward passes (each class's decoder on its latents, the gradient "
        "of the same loss) from the same selected latents.",
        "",
        "| | seconds per batch (median) | per digit |",
        "|---|---|---|",
        f"| ABS inference (selection, 50 steps, final scores) | "
        f"{statistics.median(inference_s):.2f} | "
        f"{statistics.median(inference_s) / args.batch * 1e3:.1f} ms |",
        f"| floor (50 x 10 decoder fwd+bwd) | {statistics.median(floor_s):.2f} | "
        f"{statistics.median(floor_s) / args.batch * 1e3:.1f} ms |",
        f"| **ratio** (median of {len(ratios)} batch pairs) | "
        f"**{statistics.median(ratios):.3f}** | target < 1.3 |",
        "",
        f"Candidates: decoding the 10 x 8,000 prior latents took {decode:.2f} s, once per set "
        f"of weights; selecting among them for a batch of {args.batch} digits (one matrix "
        f"product) {select:.3f} s: decoding them again per batch would cost "
        f"{decode / select:.0f}x the selection.",
        "",
        f"Score-based queries: `estimated-gradient` FGSM (NES, {NES_PAIRS} antithetic pairs: "
        f"{per_digit} queries per digit) on ABS with the `cpu` settings, {args.batch} digits: "
        f"{statistics.median(attack_s):.2f} s, against one ABS pass over the "
        f"{args.batch * per_digit} rows its queries make, as one batch: "
        f"{statistics.median(query_floor_s):.2f} s (**ratio "
        f"{statistics.median(attack_s) / statistics.median(query_floor_s):.2f}**, median of "
        f"{len(attack_s)}): the probes of all digits go to the model together.",
        "",
        "Batch ratios: " + ", ".join(f"{r:.3f}" for r in ratios) + f". 1-minute load average "
        f"at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
        "",
        f"Command: `python bench/abs_floor.py{flags(args)}` — "
        f"{datetime.date.today().isoformat()}, torch {torch.__version__}, advx "
        f"{advx.__version__}, Python {platform.python_version()}, {platform.machine()}.",
    ])


def flags(args):
    """The command's options that differ from the defaults (the cache root left out)."""
    defaults = vars(parse_args([]))
    return "".join(f" --{k} {v}" for k, v in vars(args).items()
                   if k not in ("cache", "no_readme") and v != defaults[k])


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu, paper = models(args)
    x, y = advx.get_dataset("mnist").load("test")
    x, y = x[:args.n], y[:args.n]
    batches = list(zip(x.split(args.batch), y.split(args.batch)))
    candidates = measure_candidates(paper, batches[0][0])
    inference = measure_inference(args, paper, batches)
    queries = measure_queries(cpu, *batches[0])
    section = report(args, len(x), inference, candidates, queries)
    print(section)
    if not args.no_readme:
        update_section(section, *MARKERS, README)


if __name__ == "__main__":
    main()
