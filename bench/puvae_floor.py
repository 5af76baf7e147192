"""Adaptive PGD-40 on PuVAE + detector against its floor, and PuVAE's batched classes.

Two measurements, each a ratio of timings interleaved in one run:

1. The defended model of ``examples/puvae-mnist.toml``'s "puvae + detector" entry
   (classifier-a behind the reconstruction-error detector on PuVAE's reconstruction and the
   PuVAE purifier, `cpu` presets, trained and cached on first use) attacked adaptively by advx's
   PGD (Linf eps 0.3, 40 steps of 0.01, one random start), against its floor: 40 forward +
   backward passes (input gradient of the cross-entropy of its N + 1 outputs) of the same
   defended model on the same batch.  Attack and floor alternate batch by batch, the order
   flipping every pair.  Fooled digits leave PGD early, so the ratio compared with the target
   (< 1.3) is per pass: each batch's attack time over its mean passes per digit, against the
   floor's time over 40; the median over batch pairs.
2. PuVAE's reconstruction of a batch under all ten classes: the cvae's ``reconstruct_all``
   (one encoder pass per input, the ten decodes in one batched call) against ten separate
   ``reconstruct(x, class)`` calls, each a full encoder and decoder pass.

    python bench/puvae_floor.py               # rewrites its section of bench/README.md
    python bench/puvae_floor.py --no-readme
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
from advx.plugins.reports.detection_run import purifiers
from advx.run.context import Session
from advx.run.spec import load_spec
from pgd_floor import interleaved

HERE = pathlib.Path(__file__).parent
SPEC = HERE.parent / "examples" / "puvae-mnist.toml"
ENTRY = "puvae + detector"
README = HERE / "README.md"
MARKERS = ("<!-- puvae-floor:start -->", "<!-- puvae-floor:end -->")
STEPS = 40


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="test digits (default 200)")
    parser.add_argument("--batch", type=int, default=100, help="batch size (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--cache", default=None, help="cache root (default: advx's)")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    return parser.parse_args(argv)


def defended_model(args):
    """``(module, purifier, batches)``: the example's defended entry, built (trained and cached
    if needed) as a run builds it, and its first ``n`` test digits in batches."""
    registry = advx.get_registry()
    spec = load_spec(SPEC, registry)
    session = Session(spec, registry, device="cpu", cache=args.cache)
    entry = next(m for m in spec.models if m.id == ENTRY)
    module = session.module(entry).eval()
    purifier = purifiers(module)[0]
    x, y = advx.get_dataset("mnist").load("test")
    x, y = x[:args.n], y[:args.n]
    return module, purifier, list(zip(x.split(args.batch), y.split(args.batch)))


def measure_pgd(args, module, batches):
    attack = advx.get_attack("pgd", steps=STEPS, step_size=0.01, random_start=True)
    threat = advx.ThreatModel(norm="linf", eps=0.3)
    return interleaved(attack, threat, STEPS, module, batches, args.rounds)


def measure_classes(args, purifier, batches, repeats=3):
    """Per batch and repeat: seconds of reconstruct_all and of ten one-class calls."""
    generator, ratios, batched_s, looped_s = purifier.generator, [], [], []
    with torch.no_grad():
        for _ in range(repeats):
            for x, _y in batches:
                start = time.perf_counter()
                generator.reconstruct_all(x)
                batched = time.perf_counter() - start
                start = time.perf_counter()
                for k in range(10):
                    generator.reconstruct(x, torch.full((len(x),), k, dtype=torch.int64))
                looped = time.perf_counter() - start
                batched_s.append(batched), looped_s.append(looped)
                ratios.append(looped / batched)
    return batched_s, looped_s, ratios


def flags(args):
    """The command's options that differ from the defaults (the cache root left out)."""
    defaults = vars(parse_args([]))
    return "".join(f" --{k} {v}" for k, v in vars(args).items()
                   if k not in ("cache", "no_readme") and v != defaults[k])


def report(args, n, t, classes):
    ratio = statistics.median(t.pair_ratios)  # of the times, early-stopped passes included
    batched_s, looped_s, class_ratios = classes
    per = args.batch
    return "\n".join([
        "### Adaptive PGD-40 on PuVAE + detector vs its floor; PuVAE's batched classes",
        "",
        f"The \"{ENTRY}\" entry of examples/puvae-mnist.toml (classifier-a, magnet-detector on "
        "PuVAE's reconstruction error at FPR 0.1%, PuVAE; `cpu` presets), adaptive; "
        f"{n} MNIST test digits in batches of {args.batch}; {args.threads} torch threads; "
        f"{args.rounds} rounds, attack and floor alternating batch by batch. Floor: {STEPS} "
        "forward + backward passes of the whole defended model (input gradient of the "
        "cross-entropy of its 11 outputs) on the same batches.",
        "",
        "| | seconds per round (median) | per step and digit |",
        "|---|---|---|",
        f"| advx pgd, Linf 0.3, 40 x 0.01 | {statistics.median(t.attack_s):.2f} | "
        f"{statistics.median(t.attack_s) / STEPS / n * 1e3:.2f} ms |",
        f"| floor ({STEPS} x fwd+bwd) | {statistics.median(t.floor_s):.2f} | "
        f"{statistics.median(t.floor_s) / STEPS / n * 1e3:.2f} ms |",
        f"| ratio of the times (median of {len(t.pair_ratios)} batch pairs) | {ratio:.3f} "
        "| |",
        f"| **ratio per pass** (times over passes; median of {len(t.pass_ratios)} pairs) | "
        f"**{statistics.median(t.pass_ratios):.3f}** | target < 1.3 |",
        "",
        "A digit PGD fools leaves the batch at that step, so the attack runs fewer than 40 "
        "passes per digit; the ratio per pass divides each batch's attack time by its mean "
        "passes per digit (the attack's `queries`) and the floor's by 40: the overhead of the "
        "attack over the defended model's own passes.",
        "",
        f"Robust accuracy (not rejected and still correct, adaptive): {t.robust[-1] / n:.1%}. "
        "Pair ratios: " + ", ".join(f"{r:.3f}" for r in t.pair_ratios) + ". 1-minute load "
        f"average: {min(t.loads):.1f} to {max(t.loads):.1f} on {os.cpu_count()} CPUs.",
        "",
        f"PuVAE's reconstruction of {per} digits under all 10 classes: `reconstruct_all` "
        f"{statistics.median(batched_s):.3f} s (one encoder pass, the ten decodes batched) vs "
        f"ten one-class `reconstruct` calls {statistics.median(looped_s):.3f} s: "
        f"**{statistics.median(class_ratios):.2f}x** faster batched (median of "
        f"{len(class_ratios)} batches).",
        "",
        f"Command: `python bench/puvae_floor.py{flags(args)}` — "
        f"{datetime.date.today().isoformat()}, "
        f"torch {torch.__version__}, advx {advx.__version__}, Python "
        f"{platform.python_version()}, {platform.machine()}.",
    ])


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    module, purifier, batches = defended_model(args)
    classes = measure_classes(args, purifier, batches)
    timings = measure_pgd(args, module, batches)
    n = sum(len(y) for _, y in batches)
    section = report(args, n, timings, classes)
    print(section)
    if not args.no_readme:
        update_section(section, *MARKERS, README)


if __name__ == "__main__":
    main()
