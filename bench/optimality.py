"""advx's attacks against the peers' implementations of the same algorithms, at one budget of
forward + backward propagations per sample: AttackBench's optimality (Cinà et al., 2025).

For each model, one run spec holds, per norm and algorithm, advx's attack and every peer's
(Foolbox, torchattacks, adv_lib: :mod:`_peer_attacks`, registered beside the built-ins), each
entry with ``propagations = BUDGET``: the core counts every propagation any of them makes and
refuses the ones beyond the budget.  The protocol ``optimality`` scores them against the
per-sample best over all of them; fixed-eps attacks (APGD, APGD-T, PGD) are made minimal by
its per-sample eps search over a grid of ``GRID_COUNT`` eps, the budget holding for the whole
search.  Step counts fill the budget from each implementation's measured propagations per
step (:data:`ENTRIES`).  Adversarial sets go to a fresh cache (every set computed, its seconds
measured); trained models come from the model cache (``--model-cache``).

    python bench/optimality.py --n 16                  # the README's run
    python bench/optimality.py --n 8 --budget 50 --models madry-cnn --no-readme

Rewrites the section of bench/README.md between ``<!-- optimality:start -->`` and
``<!-- optimality:end -->`` (``--no-readme`` skips that).
"""
# ruff: noqa: E402

import os

if __name__ == "__main__":  # before torch and numpy load OpenMP; imported (a test), the
    os.environ.setdefault("OMP_NUM_THREADS", "2")  # environment is left alone: it leaks into
    # every process started later (Ray workers), whose thread count changes float results

import argparse
import datetime
import math
import multiprocessing
import pathlib
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, wait

import _peer_attacks
import _timing
import advx
import torch
from advx.host.pluginmanager import add_plugin, load_plugins
from advx.host.registry import Registry
from advx.plugins.protocols import curves
from advx.plugins.protocols.minimal import searched
from advx.run.context import Session
from advx.run.spec import spec_from_dict
from advx.store.paths import CACHE_ENV, DEFAULT_CACHE, cache_root

README = pathlib.Path(__file__).with_name("README.md")
START, END = "<!-- optimality:start -->", "<!-- optimality:end -->"
DATASET = {"name": "mnist"}  # the spec's dataset table
MODELS = {  # the model entries (ids as the tables show them), trained as the cache holds them
    "madry-cnn": {"name": "madry-cnn"},
    "madry-cnn-at": {"name": "madry-cnn",
                     "defenses": [{"name": "adversarial-training", "preset": "cpu"}]},
    "classifier-a": {"name": "classifier-a"},
}
GRID_COUNT = 63  # eps of a fixed-eps attack's search grid: bisection takes <= 6 probes
GRIDS = {"l2": (0.08, 5.04), "linf": (0.008, 0.504)}  # spacing 0.08 and 0.008
PROBES = math.ceil(math.log2(GRID_COUNT + 1))
LOAD_EVERY = 60  # seconds between load samples while worker processes run
_REGISTRY = None  # the process's registry (built-ins plus the peers' attacks): see _start
LIBRARIES = {"advx": "advx", "foolbox": "Foolbox", "torchattacks": "torchattacks",
             "adv_lib": "adv_lib"}


def _steps(budget, per_step, overhead=0, parts=1):
    """Steps that fit ``budget``: ``parts`` runs of them cost ``per_step`` each, plus
    ``overhead`` once."""
    return max(1, int((budget - overhead) / (per_step * parts)))


def _probe(budget):
    """What one probe of an eps search may spend (the search takes <= PROBES of them)."""
    return budget // PROBES


def _minimal(per_step, overhead=0, key="steps"):
    return lambda b: {key: _steps(b, per_step, overhead)}


def _cw_rounds(b):  # 9 rounds on c, each ``steps`` Adam steps and one forward
    return {"binary_search_steps": 9, "steps": _steps(b, 2, 9, parts=9)}


def _pgd(overhead):
    def params(b):
        steps = _steps(_probe(b), 2, overhead)
        return {"steps": steps, "rel_step_size": round(2.5 / steps, 6)}
    return params


def _apgd_t(per_step, overhead):
    return lambda b: {"steps": _steps(_probe(b), per_step, overhead, parts=3),
                      "target_classes": 3}


# (algorithm, library, plugin, norms, budget -> parameters).  Propagations per step and
# overheads were measured with the core's counts (madry-cnn, 4 digits, 10 steps): FMN, DDN,
# sigma-zero, PGD, CW: 2 per step (Foolbox: one forward more per call); FAB: 11 (a forward
# and the gradients of the 9 logit differences; torchattacks 12.3, with a forward more per
# step on the samples still open); APGD: 2 per step plus 1-3; APGD-T 2.1-2.4 per step.
ENTRIES = (
    ("fmn", "advx", "fmn", ("l2", "linf", "l0"), _minimal(2)),
    ("fmn", "foolbox", "foolbox-fmn", ("l2", "linf", "l0"), _minimal(2, 1)),
    ("fmn", "adv_lib", "adv-lib-fmn", ("l2", "linf", "l0"), _minimal(2)),
    ("sigma-zero", "advx", "sigma-zero", ("l0",), _minimal(2)),
    ("sigma-zero", "adv_lib", "adv-lib-sigma-zero", ("l0",), _minimal(2)),
    ("ddn", "advx", "ddn", ("l2",), _minimal(2)),
    ("ddn", "foolbox", "foolbox-ddn", ("l2",), _minimal(2, 1)),
    ("ddn", "adv_lib", "adv-lib-ddn", ("l2",), _minimal(2)),
    ("fab", "advx", "fab", ("l2", "linf"), _minimal(11, 1)),
    ("fab", "torchattacks", "torchattacks-fab", ("l2", "linf"), _minimal(12.5, 4)),
    ("fab", "adv_lib", "adv-lib-fab", ("l2", "linf"), _minimal(11, 1)),
    ("cw-l2", "advx", "cw-l2", ("l2",), _cw_rounds),
    ("cw-l2", "foolbox", "foolbox-cw-l2", ("l2",), _cw_rounds),
    ("cw-l2", "adv_lib", "adv-lib-cw-l2", ("l2",), _cw_rounds),
    ("cw-l2", "torchattacks", "torchattacks-cw-l2", ("l2",), _minimal(2)),
    ("apgd-ce", "advx", "apgd-ce", ("l2", "linf"), lambda b: {"steps": _steps(_probe(b), 2, 1)}),
    ("apgd-ce", "torchattacks", "torchattacks-apgd-ce", ("l2", "linf"),
     lambda b: {"steps": _steps(_probe(b), 2, 3)}),
    ("apgd-ce", "adv_lib", "adv-lib-apgd-ce", ("l2", "linf"),
     lambda b: {"steps": _steps(_probe(b), 2, 2)}),
    ("apgd-t", "advx", "apgd-t", ("l2", "linf"), _apgd_t(2.2, 4)),
    ("apgd-t", "torchattacks", "torchattacks-apgd-t", ("l2", "linf"), _apgd_t(2.4, 8)),
    ("apgd-t", "adv_lib", "adv-lib-apgd-t", ("l2", "linf"), _apgd_t(2.3, 4)),
    ("pgd", "advx", "pgd", ("l2", "linf"), _pgd(0)),
    ("pgd", "torchattacks", "torchattacks-pgd", ("l2", "linf"), _pgd(0)),
    ("pgd", "foolbox", "foolbox-pgd", ("l2", "linf"), _pgd(1)),
    ("pgd", "adv_lib", "adv-lib-pgd", ("linf",), _pgd(0)),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="MNIST test digits (default 16)")
    parser.add_argument("--budget", type=int, default=2000,
                        help="propagations per sample of every entry (default 2000)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--norms", default="l2,linf,l0", help="comma-separated norms")
    parser.add_argument("--algorithms", default=None, help="comma-separated (default all)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads per process (default 2)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="models attacked at once, each in its own process (default 1)")
    parser.add_argument("--model-cache", default=None,
                        help="cache root of the trained models (default $ADVX_CACHE, else the "
                             "repository's data_cache); a missing model is trained into it")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    return parser.parse_args(argv)


def registry():
    """The installed plugins plus the peers' attacks."""
    loaded = load_plugins()
    add_plugin(loaded, _peer_attacks.PLUGIN, "bench-peer-attacks", distribution="bench")
    return Registry(loaded)


def entries(args, norms):
    """``[(algorithm, library, attack table)]`` of the run, peers that do not import and
    attacks not registered left out."""
    names = set(_REGISTRY.names("attacks"))
    chosen = set(args.algorithms.split(",")) if args.algorithms else None
    out = []
    for algorithm, library, plugin, plugin_norms, params in ENTRIES:
        if (chosen and algorithm not in chosen) or plugin not in names or (
                library != "advx" and not _peer_attacks.available(library)):
            continue
        for norm in (n for n in plugin_norms if n in norms):
            table = {"id": f"{algorithm} {library} {norm}", "name": plugin, "norm": norm,
                     "propagations": args.budget, **params(args.budget)}
            if _REGISTRY.get("attacks", plugin).cls.kind == "fixed-eps":
                low, high = GRIDS[norm]
                table["eps"] = {"from": low, "to": high, "count": GRID_COUNT}
            out.append((algorithm, library, table))
    return out


def spec_of(args, model_id, tables):
    return {"dataset": dict(DATASET),
            "models": [{"id": model_id, **MODELS[model_id]}],
            "attacks": tables,
            "protocol": {"name": "optimality", "limit": args.n, "batch_size": args.n}}


def out_of_budget(session, model, attack):
    """Correctly classified samples a propagation was refused to (over a search's probes)."""
    if searched(attack):
        grid = curves.grid_of(attack, session.attacks)
        arrays = curves.swept(session, model, attack, grid)[1].stored.arrays
        refused = torch.from_numpy(arrays["out_of_budget"])
    else:
        refused = session.outcome(model, attack, None).out_of_budget
    return int((refused & session.clean_correct(model)).sum())


def _log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def run_model(args, model_id, chosen, sets_root, log=_log):
    """The optimality entries of one model: ``[(norm, clean accuracy, rows)]``, each row a
    protocol row with ``algorithm``, ``library``, ``params`` and ``out_of_budget`` added."""
    tables = [table for _, _, table in chosen]
    spec = spec_from_dict(spec_of(args, model_id, tables), _REGISTRY, source="bench")
    session = Session(spec, _REGISTRY, device="cpu", cache=sets_root)
    model = spec.models[0]
    log(f"{model_id}: weights {session.model_source(model)}; "
        f"{len(tables)} attack entries on {session.n} digits")
    report = session.protocol.evaluate(session)
    by_id = {table["id"]: (alg, lib, table) for alg, lib, table in chosen}
    specs = {a.id: a for a in spec.attacks}
    out = []
    for entry in report["optimality"]:
        rows = []
        for row in entry["attacks"]:
            algorithm, library, table = by_id[row["attack"]]
            params = {k: v for k, v in table.items()
                      if k not in ("id", "name", "norm", "propagations", "eps")}
            rows.append({**row, "algorithm": algorithm, "library": library, "params": params,
                         "out_of_budget": out_of_budget(session, model, specs[row["attack"]]),
                         "searched": row["attack"] in entry["searched"]})
        out.append((entry["norm"], entry["clean_accuracy"], rows))
        log(f"  {entry['norm']}: " + ", ".join(
            f"{r['algorithm']}/{r['library']} {_fixed(r['optimality'])}" for r in rows))
    return out


def _fixed(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _params(row):
    text = ", ".join(f"{k} {v}" for k, v in row["params"].items())
    return text + (", eps search" if row["searched"] else "")


HEADER = ("| algorithm | library | parameters | optimality | median dist | success "
          "| propagations (mean) | out of budget | seconds | worse |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
TIE = 0.005  # optimality within this of the best peer counts as equal
SPEED_TIE = 0.10  # seconds within 10% of the fastest peer's count as equal (shared CPUs)


def table(rows):
    lines = [HEADER]
    order = sorted(rows, key=lambda r: (r["algorithm"], r["library"] != "advx", r["library"]))
    for i, r in enumerate(order):
        first = i == 0 or order[i - 1]["algorithm"] != r["algorithm"]
        median = "n/a" if r["median_distance"] is None else f"{r['median_distance']:.4g}"
        spent = r["mean_propagations"]
        lines.append(
            f"| {r['algorithm'] if first else ''} | {LIBRARIES[r['library']]} | {_params(r)} "
            f"| {_fixed(r['optimality'])} | {median} | {r['success_rate']:.1%} "
            f"| {'n/a' if spent is None else f'{spent:,.0f}'} | {r['out_of_budget']} "
            f"| {r['seconds']:.1f} | {r['returned_worse']} |")
    return "\n".join(lines)


def verdicts(model_id, norm, rows):
    """Per algorithm: advx the most optimal of its implementations, and no slower than the
    fastest peer (the numbers beside)."""
    for algorithm in sorted({r["algorithm"] for r in rows}):
        mine = [r for r in rows if r["algorithm"] == algorithm]
        ours = next((r for r in mine if r["library"] == "advx"), None)
        peers = [r for r in mine if r["library"] != "advx"]
        if ours is None or not peers:
            continue
        best = max(peers, key=lambda r: r["optimality"] or 0.0)
        fastest = min(peers, key=lambda r: r["seconds"])
        optimal = (ours["optimality"] or 0.0) >= (best["optimality"] or 0.0) - TIE
        quick = ours["seconds"] <= fastest["seconds"] * (1 + SPEED_TIE)
        yield (f"{model_id}, {norm}, {algorithm}: optimality {_fixed(ours['optimality'])} vs "
               f"best peer {_fixed(best['optimality'])} ({LIBRARIES[best['library']]}): "
               f"{'**most optimal**' if optimal else '**SHORTFALL**'}; "
               f"{ours['seconds']:.1f} s vs fastest peer {fastest['seconds']:.1f} s "
               f"({LIBRARIES[fastest['library']]}): "
               f"{'**no slower**' if quick else '**slower**'}")


INTRO = (
    "The first {n} MNIST test digits; every entry capped at {budget:,} forward + backward "
    "propagations per sample (`propagations = {budget}`), counted and enforced by the core "
    "for advx's attacks and the peers' alike: the peers run as advx attack plugins "
    "(bench/_peer_attacks.py) whose model calls pass the ledger's hook on the model. Rows a "
    "peer evaluates on a subset of the batch (torchattacks' APGD and FAB on the samples not "
    "yet fooled, adv_lib's restarts) are attributed to the nearest clean digit (L2), exact "
    "while perturbations stay below half the distance between two digits. Step counts fill "
    "the budget from each implementation's propagations per step; fixed-eps attacks (APGD-CE, "
    "APGD-T over the top 3 classes, PGD) are made minimal by the protocol's per-sample eps "
    "search over {count} eps (L2 {l2[0]:g} to {l2[1]:g}, Linf {linf[0]:g} to {linf[1]:g}), "
    "each probe given budget / {probes}. Optimality: AttackBench's, against the per-sample "
    "best over every row of the model and norm; median distance over the correctly "
    "classified digits (inf where not fooled: n/a when half or more were not); success over "
    "them; propagations: mean per correctly classified digit; out of budget: digits a "
    "propagation was refused to; worse: digits returned with a worse point than one the "
    "attack had queried. Seconds: the set's compute time ({threads} torch thread(s) per "
    "process, {jobs} model(s) attacked at once; other processes shared the CPUs, see the load "
    "below); in the verdicts seconds within {speed:.0%} of the fastest peer's count as no "
    "slower, optimality within {tie} of the best peer's as most optimal. Peers at their own "
    "defaults except the steps (and PGD's step size, 2.5 eps over the steps, for all).")


def report(args, results, total, loads, command):
    out = ["### Optimality at equal propagation budgets: advx vs Foolbox, torchattacks, "
           "adv_lib (MNIST)", "",
           INTRO.format(n=args.n, budget=args.budget, count=GRID_COUNT, l2=GRIDS["l2"],
                        linf=GRIDS["linf"], probes=PROBES, threads=args.threads,
                        jobs=args.jobs, speed=SPEED_TIE, tie=TIE), ""]
    lines = []
    for model_id, entries_ in results:
        if isinstance(entries_, str):
            out += [f"#### {model_id}", "", f"Failed: {entries_}", ""]
            continue
        for norm, clean, rows in entries_:
            out += [f"#### {model_id}, {norm} (clean accuracy {clean:.1%})", "", table(rows),
                    ""]
            lines += verdicts(model_id, norm, rows)
    out += ["#### Verdicts", ""] + [f"- {line}" for line in lines]
    versions = ", ".join(f"{k} {v}" for k, v in _versions().items())
    out += ["", f"Command: `{command}` — {datetime.date.today().isoformat()}, "
            f"{total / 60:.1f} min in all; torch {torch.__version__}, {versions}; 1-minute load "
            f"{min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs."]
    return "\n".join(out)


def _versions():
    import importlib.metadata

    found = {"advx": advx.__version__}
    for library, dist in (("foolbox", "foolbox"), ("torchattacks", "torchattacks"),
                          ("adv_lib", "adv-lib")):
        if _peer_attacks.available(library):
            found[library] = importlib.metadata.version(dist)
    return found


def model_cache_root(option):
    """``--model-cache``, else $ADVX_CACHE, else the repository's data_cache (whatever the
    working directory)."""
    if option is None and not os.environ.get(CACHE_ENV):
        return pathlib.Path(__file__).resolve().parents[1] / DEFAULT_CACHE
    return cache_root(option)


def _start(threads):
    """Set up a process of the bench: torch threads, quiet peers, the registry."""
    global _REGISTRY
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    _REGISTRY = registry()


def run_models(args, chosen, sets_root, loads):
    """``[(model id, run_model's entries)]``, ``args.jobs`` models at once."""
    models = args.models.split(",")
    if args.jobs <= 1:
        results = []
        for model_id in models:
            results.append((model_id, run_model(args, model_id, chosen, sets_root)))
            loads.append(_timing.load_average())
        return results
    context = multiprocessing.get_context("spawn")  # no fork of a process with torch threads
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_start,
                             initargs=(args.threads,)) as pool:
        futures = [pool.submit(run_model, args, m, chosen, sets_root) for m in models]
        while wait(futures, timeout=LOAD_EVERY).not_done:
            loads.append(_timing.load_average())  # the load while the workers run
        results = [(m, _outcome(m, f)) for m, f in zip(models, futures)]
    loads.append(_timing.load_average())
    return results


def _outcome(model_id, future):
    """A worker's entries, or the error that ended its model (the others still report)."""
    try:
        return future.result()
    except Exception as error:  # one model failing must not lose the others' hour
        _log(f"{model_id}: {type(error).__name__}: {error}")
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"


def main(argv=None):
    args = parse_args(argv)
    _start(args.threads)
    started, loads = time.perf_counter(), [_timing.load_average()]
    chosen = entries(args, args.norms.split(","))
    with tempfile.TemporaryDirectory(prefix="advx-optimality-") as sets_root:
        models_cache = model_cache_root(args.model_cache) / "models"
        models_cache.mkdir(parents=True, exist_ok=True)
        (pathlib.Path(sets_root) / "models").symlink_to(models_cache.resolve(),
                                                        target_is_directory=True)
        results = run_models(args, chosen, sets_root, loads)
    total = time.perf_counter() - started
    command = "OMP_NUM_THREADS={} python bench/optimality.py{}".format(
        os.environ.get("OMP_NUM_THREADS"), "".join(" " + a for a in sys.argv[1:]))
    section = report(args, results, total, loads, command)
    print(section)
    if not args.no_readme:
        _timing.update_section(section, START, END, README)
    return results


if __name__ == "__main__":
    main()
