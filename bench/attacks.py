"""advx's attacks against torchattacks, Foolbox and ART: strength and speed in one run.

On trained madry-cnn and blog-cnn (MNIST test digits) every row of ``_peers.rows`` runs in
every available library at one budget, and every output is scored by one function,
:func:`score` (success recomputed from the model's predictions, never the library's flag).
Time is reported as images per second and as a ratio to the attack's floor (``_timing``).

    OMP_NUM_THREADS=2 python bench/attacks.py                 # the full run
    OMP_NUM_THREADS=2 python bench/attacks.py --quick --no-readme
    python bench/attacks.py --models madry-cnn --attacks pgd-linf,deepfool

Rewrites the section of bench/README.md between ``<!-- attacks:start -->`` and
``<!-- attacks:end -->`` (``--no-readme`` skips that).
"""
# ruff: noqa: E402

import os

if __name__ == "__main__":  # before torch and numpy load OpenMP; imported (a test), the
    os.environ.setdefault("OMP_NUM_THREADS", "2")  # environment is left alone: it leaks into
    # every process started later (Ray workers)

import argparse
import datetime
import pathlib
import sys
import time

import _peers
import _timing
import advx
import attrs
import torch

README = pathlib.Path(__file__).with_name("README.md")
START, END = "<!-- attacks:start -->", "<!-- attacks:end -->"
MODELS = ("madry-cnn", "blog-cnn")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000,
                        help="digits for FGSM/PGD/APGD/DeepFool; other rows use at most their "
                             "own smaller N (default 1000)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--slow-models", default="madry-cnn",
                        help="models for the black-box rows and JSMA (default madry-cnn)")
    parser.add_argument("--attacks", default=None, help="comma-separated row keys (default all)")
    parser.add_argument("--rounds", type=int, default=1, help="timing rounds (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--floor-passes", type=int, default=10,
                        help="passes timed per floor measurement, scaled to k (0: all k)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 digits per row")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    return parser.parse_args(argv)


@attrs.frozen
class Score:
    """One library's output on one row, scored like every other (tensors per digit)."""

    n: int
    correct: torch.Tensor  # bool: clean digit classified correctly
    success: torch.Tensor  # bool: correct digit fooled (targeted: classified as the target)
    robust: torch.Tensor  # bool: correct on clean and adversarial (or a placeholder)
    distance: torch.Tensor  # in the threat model's norm
    extra: torch.Tensor | None  # in the row's extra norm
    outside: int  # examples outside the bounds or the ball, projected before scoring
    placeholders: int  # all-lower-bound images where x is not (Foolbox CW's "nothing found")

    @property
    def success_rate(self):
        return float(self.success.sum()) / max(1, int(self.correct.sum()))

    @property
    def robust_accuracy(self):
        return float(self.robust.sum()) / self.n

    def median(self, values=None):
        """Median distance over the successes (nan where none)."""
        values = self.distance if values is None else values
        chosen = values[self.success]
        return float(chosen.median()) if chosen.numel() else float("nan")


def predict(model, x, batch=_peers.BATCH):
    """The model's labels for ``x``, in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([model(part).argmax(1) for part in x.split(batch)])


def score(model, x, y, x_adv, threat, targets=None, extra_norm=None):
    """Score ``x_adv`` (any library's output for ``x``) under ``threat``; see :class:`Score`."""
    x_adv = torch.as_tensor(x_adv, dtype=x.dtype).reshape(x.shape)
    inside = threat.contains(x, x_adv)
    outside = int((~inside).sum())
    x_adv = torch.where(inside.view(-1, *[1] * (x.dim() - 1)), x_adv,
                        threat.project(x, torch.nan_to_num(x_adv)))
    lower = threat.bounds[0]
    placeholder = ((x_adv == lower).flatten(1).all(1) & ~(x == lower).flatten(1).all(1))
    correct = predict(model, x) == y
    pred = predict(model, x_adv)
    fooled = pred == targets if threat.targeted else pred != y
    success = correct & fooled & ~placeholder
    extra = advx.ThreatModel(norm=extra_norm).distance(x, x_adv) if extra_norm else None
    robust = correct & ((pred == y) | placeholder)  # a placeholder is a failed attack
    return Score(n=len(x), correct=correct, success=success, robust=robust,
                 distance=threat.distance(x, x_adv), extra=extra, outside=outside,
                 placeholders=int((placeholder & correct & fooled).sum()))


@attrs.frozen
class Result:
    """One library on one row of one model: its score and timing (or the error it raised)."""

    model: str
    row: _peers.Row
    library: str
    n: int
    score: Score | None = None
    timing: _timing.Timing | None = None
    error: str | None = None


def run_row(ctx, model_name, row, x, y, args, log=print):
    """Time and score every available library on ``row``: a list of :class:`Result`.

    Libraries with the same number of digits are timed together (see ``_timing``).
    """
    libraries = [lib for lib in row.libraries if _peers.available(lib)]
    results = []
    for n in sorted({row.n_of(lib) for lib in libraries}, reverse=True):
        group = [lib for lib in libraries if row.n_of(lib) == n]
        results += _run_group(ctx, model_name, row, group, x[:n], y[:n], args, log)
    return sorted(results, key=lambda r: libraries.index(r.library))


def _run_group(ctx, model_name, row, libraries, x, y, args, log):
    targets = (y + 1) % ctx.classes if row.threat.targeted else None
    parts = [t.split(_peers.BATCH) if t is not None else [None] * -(-len(x) // _peers.BATCH)
             for t in (x, y, targets)]
    errors = {}
    runners = {lib: _peers.guarded(ctx, row, lib, errors) for lib in libraries}

    def floor(batch):
        return _timing.floor_seconds(ctx.model, batch[0], batch[1], row.passes or 1,
                                     args.floor_passes)

    batches = list(zip(*parts))
    if not row.slow:  # warm-up on one digit, untimed: first calls pay lazy imports and caches
        for run in runners.values():
            run(tuple(None if t is None else t[:1] for t in batches[0]))
    timings = _timing.interleave(runners, batches, floor, args.rounds, log=log)
    results = []
    for lib in libraries:
        if lib in errors:
            results.append(Result(model_name, row, lib, len(x), error=errors[lib]))
            continue
        x_adv = torch.cat(timings[lib].outputs)
        s = score(ctx.model, x, y, x_adv, row.threat, targets, row.extra_norm)
        results.append(Result(model_name, row, lib, len(x), s, timings[lib]))
    return results


NAMES = {"advx": "advx", "torchattacks": "torchattacks", "foolbox": "Foolbox", "art": "ART"}
NORMS = {"l0": "L0", "l1": "L1", "l2": "L2", "linf": "Linf"}
HEADER = ("| attack | library | budget | N | robust acc | success | median dist | img/s "
          "| x floor |\n|---|---|---|---|---|---|---|---|---|")
TIE = 0.005  # distances within 0.5% of each other count as equal in the strength verdicts
PASS = {True: "**pass**", False: "**FAIL**"}
INTRO = (
    "Trained models, the first N MNIST test digits, batches of {batch}, {args.threads} torch "
    "threads, {args.rounds} timing round(s); black-box rows and JSMA on {args.slow_models} only. "
    "Each library first runs once, untimed, on one digit (warm-up; not in the black-box rows). "
    "Every output is scored alike: examples outside the threat model are counted and projected "
    "into it; success is recomputed from the model's predictions over the correctly classified "
    "digits (JSMA: classified as the target y + 1 mod 10); robust accuracy counts digits right "
    "on both the clean and the adversarial input, over all N; the median distance is over the "
    "successes. img/s: N over the attack's seconds. x floor: the attack's time over k forward + "
    "backward passes (input gradient of the CE) of the same model on the same batch, timed "
    "right before and after the attack ({floor} passes timed, scaled to k); † marks attacks "
    "with a variable number of passes, timed as a multiple of ONE pass. advx runs its passes in "
    "chunks of 128 digits on CPU, which is faster here than whole-batch passes, so its ratios "
    "can fall below 1. Verdicts compare "
    "libraries on the digits both ran on; in the strength verdicts distances within {tie:.1%} "
    "of each other count as equal.")


def table_line(r, first):
    row, s, t = r.row, r.score, r.timing
    head = f"| {row.title if first else ''} | {NAMES[r.library]} | " \
           f"{row.budget if first else ''} | {r.n} |"
    if s is None:
        return f"{head} error: {r.error} | | | | |"
    dist = f"{NORMS[row.threat.norm]} {s.median():.3g}"
    if row.extra_norm:
        dist += f" ({NORMS[row.extra_norm]} {s.median(s.extra):.3g})"
    return (f"{head} {s.robust_accuracy:.1%} | {s.success_rate:.1%} | {dist} | "
            f"{_num(r.n / t.seconds)} | {_num(t.ratio)}{'' if row.passes else '†'} |")


def _num(value):
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def notes(results):
    for r in results:
        s, where = r.score, f"{r.model}, {r.row.key}, {NAMES[r.library]}"
        if s and s.outside:
            yield f"{where}: {s.outside} of {r.n} outside the threat model (projected, then scored)"
        if s and s.placeholders:
            yield (f"{where}: {s.placeholders} all-zero \"nothing found\" images that the model "
                   "misclassifies, counted as failures")


def _strength(a, p):
    """``(ok, text)``: advx's result ``a`` at least as strong as peer result ``p``, compared
    on the digits both ran on: robust accuracy (fixed eps), else success and the median
    distance over the digits both fooled."""
    n, name = min(a.n, p.n), NAMES[p.library]
    if a.row.threat.eps is not None:
        mine, theirs = (float(r.score.robust[:n].float().mean()) for r in (a, p))
        return mine <= theirs, f"{name} {theirs:.1%}" + (f" (first {n})" if n < a.n else "")
    rate = [float(r.score.success[:n].sum()) / max(1, int(r.score.correct[:n].sum()))
            for r in (a, p)]
    both = a.score.success[:n] & p.score.success[:n]
    mine, theirs = (float(r.score.distance[:n][both].median()) if both.any() else 0.0
                    for r in (a, p))
    ok = rate[0] >= rate[1] and mine <= theirs * (1 + TIE)
    first = f" of the first {n}" if n < a.n else ""
    return ok, (f"vs {name}: success {rate[0]:.1%} vs {rate[1]:.1%}{first}, median "
                f"{mine:.3g} vs {theirs:.3g} on the {int(both.sum())} digits both fooled")


def _targets(by, model):
    """The issue's targets: floor ratios, CW-L2 and DeepFool against Foolbox."""
    for key in ("pgd-linf", "pgd-l2", "apgd-ce", "apgd-dlr"):
        if a := by.get((model, key, "advx")):
            peers = [by[k].timing.ratio for k in by if k[:2] == (model, key) and k[2] != "advx"]
            span = f"; peers {min(peers):.2f}-{max(peers):.2f}" if peers else ""
            yield (f"{model}, {key}: advx {a.timing.ratio:.2f}x its floor (target < 1.05"
                   f"{span}; robust accuracy {a.score.robust_accuracy:.1%}): "
                   f"{PASS[a.timing.ratio < 1.05]}")
    for key in ("cw-l2", "cw-l2-default", "deepfool"):
        a, fb = by.get((model, key, "advx")), by.get((model, key, "foolbox"))
        if not (a and fb):
            continue
        ok = a.score.success_rate == 1 and a.score.median() <= fb.score.median()
        text = (f"{model}, {key}: advx success {a.score.success_rate:.1%}, median L2 "
                f"{a.score.median():.3g} vs Foolbox's {fb.score.median():.3g} at the same "
                "budget (target 100% and <=")
        if key == "deepfool":
            speed = (a.n / a.timing.seconds) / (fb.n / fb.timing.seconds)
            text += f"; speed {speed:.1f}x Foolbox's, target >= 4"
            ok = ok and speed >= 4
        yield f"{text}): {PASS[ok]}"


def verdicts(results):
    """Pass/fail lines for the issue's targets, with the measured numbers."""
    by = {(r.model, r.row.key, r.library): r for r in results if r.score}
    for model in dict.fromkeys(r.model for r in results):
        yield from _targets(by, model)
        for key in dict.fromkeys(k[1] for k in by if k[0] == model):
            peers = [by[k] for k in by if k[:2] == (model, key) and k[2] != "advx"]
            if (a := by.get((model, key, "advx"))) and peers:
                checks = [_strength(a, p) for p in peers]
                mine = (f"advx {a.score.robust_accuracy:.1%} robust vs "
                        if a.row.threat.eps is not None else "advx ")
                yield (f"{model}, {key}, at least as strong as every peer: {mine}"
                       + "; ".join(text for _, text in checks)
                       + f": {PASS[all(ok for ok, _ in checks)]}")


def report(results, args, total, loads, command):
    """The Markdown section for README.md."""
    out = ["### advx's attacks vs torchattacks, Foolbox and ART (MNIST)", "", INTRO.format(
        batch=_peers.BATCH, args=args, floor=args.floor_passes or "all k", tie=TIE), ""]
    for model in dict.fromkeys(r.model for r in results):
        mine = [r for r in results if r.model == model]
        big = max(mine, key=lambda r: r.n if r.score else 0).score
        acc = f" (clean accuracy {float(big.correct.float().mean()):.1%} on the first " \
            f"{big.n} digits)" if big else ""
        out += [f"#### {model}{acc}", "", HEADER]
        out += [table_line(r, i == 0 or mine[i - 1].row.key != r.row.key)
                for i, r in enumerate(mine)]
        out.append("")
    out += [f"- {line}" for line in notes(results)]
    out += ["", "#### Verdicts", ""] + [f"- {line}" for line in verdicts(results)]
    versions = ", ".join(f"{k} {v}" for k, v in _peers.versions().items())
    out += ["", f"Command: `{command}` — {datetime.date.today().isoformat()}, "
            f"{total / 60:.1f} min in all; torch {torch.__version__}, {versions}; 1-minute load "
            f"{min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs."]
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started, loads = time.perf_counter(), [_timing.load_average()]
    models = args.models.split(",")
    slow_models = args.slow_models.split(",")
    x_all, y_all = advx.get_dataset("mnist").load("test")
    results = []
    for name in models:
        model = advx.get_model(name, dataset="mnist").eval()
        ctx = _peers.Context(model, tuple(x_all.shape[1:]), 10)
        for row in _peers.select(args.attacks, 20 if args.quick else args.n):
            if row.slow and name not in slow_models:
                continue
            print(f"{name} {row.key} ({row.n} digits)", flush=True)
            results += run_row(ctx, name, row, x_all, y_all, args)
            loads.append(_timing.load_average())
    total = time.perf_counter() - started
    command = "OMP_NUM_THREADS={} python bench/attacks.py{}".format(
        os.environ.get("OMP_NUM_THREADS"), "".join(" " + a for a in sys.argv[1:]))
    section = report(results, args, total, loads, command)
    print(section)
    if not args.no_readme:
        _timing.update_section(section, START, END, README)


if __name__ == "__main__":
    main()
