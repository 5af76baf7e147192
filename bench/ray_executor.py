"""The ray executor against the local one: a spec of independent sets, and Ray's cost per unit.

Two measurements, each run in a fresh cache that holds only the trained model (copied from a
warm cache, so no run trains):

1. Throughput: blog-cnn on MNIST digits attacked by PGD-20 at 8 Linf eps (8 independent sets,
   ``--n`` digits each, shards of ``--batch``): the local executor with 1 torch thread and with 2,
   and a local Ray instance with 2 single-CPU actors.  The reports must be equal (same sets,
   same numbers); the seconds are the runs' attack phases.
2. Overhead per unit: FGSM at 8 eps on 16 digits in shards of 1 digit (128 tiny units) with the
   local executor (1 thread) and on Ray; (Ray - local) / units bounds what Ray adds to a unit
   from submission to result (scheduling, object transfer, the driver's bookkeeping).

What it predicts for N GPUs: with one actor per GPU a run's attack phase shrinks toward
``local / N`` while a unit's compute time stays well above the overhead per unit; the table
prints that ratio for the shards of measurement 1.

    python bench/ray_executor.py               # rewrites its section of bench/README.md
    python bench/ray_executor.py --no-readme
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import tempfile
import time

import advx
import ray
import torch
from _readme import update_section
from advx.run.execute import execute
from advx.run.spec import parse_spec

HERE = pathlib.Path(__file__).parent
README = HERE / "README.md"
MARKERS = ("<!-- ray-executor:start -->", "<!-- ray-executor:end -->")
EPS = [0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3]

SPEC = """
[dataset]
name = "mnist"

[[models]]
name = "blog-cnn"

[[attacks]]
name = "{attack}"
norm = "linf"
eps = {eps}
{params}
[protocol]
name = "robust-accuracy"
limit = {n}
batch_size = {batch}
{executor}
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="digits per set (default 400)")
    parser.add_argument("--batch", type=int, default=100, help="shard size (default 100)")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    return parser.parse_args(argv)


def spec_text(attack, n, batch, ray, params=""):
    executor = "[executor]\nname = \"ray\"\nworkers = 2\n" if ray else ""
    return SPEC.format(attack=attack, eps=json.dumps(EPS), params=params, n=n, batch=batch,
                       executor=executor)


def timed_run(text, warm, threads):
    """``(attack-phase seconds, results)`` of a run of ``text`` in a fresh cache holding the
    warm cache's trained models."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        cache = pathlib.Path(folder) / "cache"
        shutil.copytree(warm / "models", cache / "models")
        registry = advx.get_registry()
        report = execute(parse_spec(text, registry), registry, pathlib.Path(folder) / "out",
                         device="cpu", cache=cache)
    results = [(r["attack"], r["eps"], r["robust_accuracy"]) for r in report["results"]]
    return report["attack_phase_seconds"], results


def warm_cache(warm):
    """Train blog-cnn once into ``warm`` (a tiny run)."""
    registry = advx.get_registry()
    execute(parse_spec(spec_text("fgsm", 4, 4, False), registry), registry, warm / "out",
            device="cpu", cache=warm)


def measure(args, warm):
    pgd = "steps = 20\n"
    runs = {
        "local, 1 thread": timed_run(spec_text("pgd", args.n, args.batch, False, pgd), warm, 1),
        "local, 2 threads": timed_run(spec_text("pgd", args.n, args.batch, False, pgd), warm, 2),
        "ray, 2 actors x 1 CPU": timed_run(spec_text("pgd", args.n, args.batch, True, pgd),
                                           warm, 1),
    }
    tiny = {name: timed_run(spec_text("fgsm", 16, 1, ray), warm, 1)
            for name, ray in (("local", False), ("ray", True))}
    return runs, tiny


def report(args, runs, tiny, startup):
    base = runs["local, 1 thread"][0]
    same = len({tuple(results) for _, results in runs.values()}) == 1
    units = len(EPS) * -(-args.n // args.batch)
    tiny_units = len(EPS) * 16
    overhead = (tiny["ray"][0] - tiny["local"][0]) / tiny_units
    per_unit = base / units
    lines = [
        "### The ray executor vs the local one (blog-cnn, MNIST)",
        "",
        f"PGD-20 at {len(EPS)} Linf eps (8 independent sets) on the first {args.n} test digits, "
        f"shards of {args.batch} ({units} units); each run in a fresh cache holding only the "
        "trained blog-cnn. Seconds: the runs' attack phases.",
        "",
        "| executor | attack phase (s) | speed-up over local, 1 thread |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {seconds:.1f} | {base / seconds:.2f}x |"
              for name, (seconds, _) in runs.items()]
    lines += [
        "",
        f"Reports equal across the three runs: {'yes' if same else 'NO'}. Overhead per unit: "
        f"FGSM at {len(EPS)} eps on 16 digits in shards of one digit ({tiny_units} units) took "
        f"{tiny['local'][0]:.1f} s locally and {tiny['ray'][0]:.1f} s on Ray (its two actors "
        f"started by the run, the Ray instance already running: starting it took "
        f"{startup:.1f} s once): at most **{overhead * 1e3:.0f} ms per unit** from submission "
        "to result. "
        f"A unit of the PGD runs computes for about {per_unit:.2f} s (local, 1 thread), so with "
        f"one actor per GPU the attack phase should approach 1/N of a single device's while "
        f"units stay many times longer than that overhead (and at least N units are in flight: "
        f"here {units}).",
        "",
        f"Command: `python bench/ray_executor.py{flags(args)}` — "
        f"{datetime.date.today().isoformat()}, torch "
        f"{torch.__version__}, advx {advx.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs (1-minute load at the end "
        f"{os.getloadavg()[0]:.1f}).",
    ]
    return "\n".join(lines)


def flags(args):
    """The command's options that differ from the defaults."""
    defaults = vars(parse_args([]))
    return "".join(f" --{k} {v}" for k, v in vars(args).items()
                   if k != "no_readme" and v != defaults[k])


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        warm = pathlib.Path(folder)
        warm_cache(warm)
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        startup = time.perf_counter() - started
        try:
            runs, tiny = measure(args, warm)
        finally:
            ray.shutdown()
    section = report(args, runs, tiny, startup)
    print(section)
    if not args.no_readme:
        update_section(section, *MARKERS, README)


if __name__ == "__main__":
    main()
