"""Cold vs warm `advx run`: what the adversarial-set cache saves on a rerun of the same spec.

With the spec's models already trained and cached, this runs ``advx run SPEC`` twice on one
fresh cache: cold (every adversarial set computed and stored) and warm (every set read back).
Each run is a separate process, timed from start to exit (start-up, imports and model loading
included); the attack phase is the run's own ``attack_phase_seconds`` (wall time spent
obtaining the adversarial sets). The warm run must compute no attack and write nothing to the
cache; the script checks both.

    python bench/cache_rerun.py                    # the built-in quickstart spec
    python bench/cache_rerun.py examples/x.toml    # another spec

Rewrites the section of bench/README.md between ``<!-- cache-rerun:start -->`` and
``<!-- cache-rerun:end -->`` (``--no-readme`` skips that).
"""

import argparse
import datetime
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import advx
from _readme import update_section
from advx.cli.run import quickstart_text
from advx.run.spec import load_spec, parse_spec
from advx.train import stack
from advx.train.builder import Builder

README = pathlib.Path(__file__).with_name("README.md")
START, END = "<!-- cache-rerun:start -->", "<!-- cache-rerun:end -->"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", help="run spec (default: the quickstart)")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    return parser.parse_args(argv)


def train_models(spec, cache):
    """Train (or load) every model of ``spec`` into ``cache`` before anything is timed."""
    builder = Builder(spec.dataset, advx.get_registry(), "cpu", cache)
    for model in spec.models:
        stack.build(model, builder)


def timed_run(spec_path, out, cache):
    """Wall seconds of one `advx run` process, and its report."""
    command = [sys.executable, "-m", "advx.cli", "run", "--out", str(out), "--cache", str(cache),
               "--no-progress"] + ([str(spec_path)] if spec_path else [])
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return wall, json.loads((out / "report.json").read_text())


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in pathlib.Path(root).rglob("*")}


def measure(spec_path, work):
    registry = advx.get_registry()
    spec = (load_spec(spec_path, registry) if spec_path
            else parse_spec(quickstart_text(), registry, source="<quickstart>"))
    cache = work / "cache"
    train_models(spec, cache)
    cold_wall, cold = timed_run(spec_path, work / "cold", cache)
    before = snapshot(cache)
    warm_wall, warm = timed_run(spec_path, work / "warm", cache)
    origins = sorted({r["cache"] for r in warm["results"]})
    return {
        "spec": spec_path or "<quickstart>",
        "title": spec.title,
        "sets": len(cold["results"]),
        "samples": cold["dataset"]["n"],
        "cold_wall": cold_wall, "warm_wall": warm_wall,
        "cold_attack": cold["attack_phase_seconds"], "warm_attack": warm["attack_phase_seconds"],
        "warm_origins": origins,
        "cache_unchanged": snapshot(cache) == before,
        "same_results": _results(cold) == _results(warm),
    }


def _results(report):
    return [{k: v for k, v in r.items() if k not in ("cache", "seconds")}
            for r in report["results"]]


def render(m):
    ratio = m["warm_attack"] / m["cold_attack"]
    stamp = (f"{datetime.date.today().isoformat()}, torch {__import__('torch').__version__}, "
             f"advx {advx.__version__}, Python {platform.python_version()}, "
             f"{platform.machine()}")
    return "\n".join([
        "### Cold vs warm rerun (adversarial-set cache)",
        "",
        f"Spec: {m['spec']} ({m['title']}): {m['sets']} adversarial sets of {m['samples']} "
        "samples; models trained and cached beforehand; each run a separate `advx run` "
        "process on one fresh cache.",
        "",
        "| | whole command (wall, start-up included) | attack phase |",
        "|---|---|---|",
        f"| cold (every set computed and stored) | {m['cold_wall']:.2f} s "
        f"| {m['cold_attack']:.2f} s |",
        f"| warm (every set read from the cache) | {m['warm_wall']:.2f} s "
        f"| {m['warm_attack']:.3f} s |",
        f"| **warm / cold** | {m['warm_wall'] / m['cold_wall']:.3f} "
        f"| **{ratio:.4f}** (target < 0.05) |",
        "",
        f"Warm run: results from {', '.join(m['warm_origins'])}; cache unchanged by it: "
        f"{'yes' if m['cache_unchanged'] else 'NO'}; results identical to the cold run's: "
        f"{'yes' if m['same_results'] else 'NO'}.",
        "",
        f"Command: `python bench/cache_rerun.py{_spec_argument(m['spec'])}` — {stamp}.",
    ])


def _spec_argument(spec):
    return "" if spec == "<quickstart>" else f" {spec}"


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="advx-bench-") as work:
        measured = measure(args.spec, pathlib.Path(work))
    section = render(measured)
    print(section)
    if not args.no_readme:
        update_section(section, START, END, README)
    ok = (measured["warm_attack"] < 0.05 * measured["cold_attack"]
          and measured["cache_unchanged"] and measured["same_results"]
          and measured["warm_origins"] == ["cache"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
