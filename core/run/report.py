"""Reports of a run: report.json for machines, report.md and report.html for people.

Every file is written atomically.  report.md and report.html are functions of report.json (and
of the PNG files it lists under "pictures"), so ``advx report RUN_DIR`` rebuilds them from a
finished run without recomputing anything.
"""

import json
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import quote

from ..kernel.errors import UsageError
from .pictures import WORST_CASE
from .report_html import to_html


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value):
    return "n/a" if value is None else f"{value:.4g}"


def _eps(value):
    return "min" if value is None else f"{value:g}"


def _origin(row):
    """Where a result's adversarial set came from, with its key's first 12 characters."""
    if not row.get("set_key"):
        return "n/a"
    return f"{row.get('cache', 'computed')} {row['set_key'][:12]}"


def markdown(report):
    """report.md: clean accuracy, per-attack results and the worst case, as tables; the curves
    and pictures (with the reasons some were not drawn) when report.json lists them."""
    lines = [f"# advx report{': ' + report['title'] if report.get('title') else ''}", ""]
    lines += [f"advx {report['advx_version']}, torch {report['torch_version']}, "
              f"device {report['device']}, dataset {report['dataset']['name']} "
              f"({report['dataset']['n']} test samples), {report['seconds']:.1f} s.", ""]
    lines += ["## Clean accuracy", "", "| model | source | clean accuracy |", "|---|---|---|"]
    for model in report["models"]:
        lines.append(f"| {model['id']} | {model['source']} | {_pct(model['clean_accuracy'])} |")
    lines += ["", "## Robust accuracy per attack", "",
              "| model | attack | threat | robust accuracy | attack success | median distance "
              "| seconds | set |", "|---|---|---|---|---|---|---|---|"]
    for r in report.get("results", []):
        threat = f"{r['norm']} {_eps(r['eps'])}{' targeted' if r['targeted'] else ''}"
        lines.append(f"| {r['model']} | {r['attack']} | {threat} | {_pct(r['robust_accuracy'])} "
                     f"| {_pct(r['attack_success_rate'])} | {_num(r['median_distance'])} "
                     f"| {r['seconds']:.1f} | {_origin(r)} |")
    if report.get("worst_case"):  # the curve protocol has its worst cases in its curves
        lines += ["", "## Worst case over attacks", "",
                  "| model | threat | robust accuracy | attacks |", "|---|---|---|---|"]
    for w in report.get("worst_case", []):
        lines.append(f"| {w['model']} | {w['norm']} {_eps(w['eps'])} "
                     f"| {_pct(w['robust_accuracy'])} | {', '.join(w['attacks'])} |")
    lines += _minimal_section(report.get("minimal_perturbation"))
    lines += _sanity_section(report.get("sanity"))
    lines += ["", "Robust accuracy counts a sample when the model classifies both the clean and "
              "the adversarial input correctly. Attack success is measured on the samples the "
              "model classifies correctly (and, for targeted attacks, whose label is not the "
              "target), recomputed from the model's predictions on the returned examples. "
              "Seconds are the compute time of each adversarial set; \"set\" says whether it "
              "was computed in "
              "this run, read from the cache, or resumed from a killed run, and gives its key "
              "(`advx cache info KEY`)."]
    lines += _curves_section(report.get("curves"))
    lines += _pictures_section(report.get("pictures"), report.get("skipped_pictures"))
    return "\n".join(lines + [""])


def html(report, run_dir):
    """report.html: :func:`markdown` as one self-contained page, pictures read from ``run_dir``."""
    return to_html(markdown(report), run_dir)


def _minimal_section(entries):
    if not entries:
        return []
    lines = ["", "## Smallest adversarial per sample", "",
             "| model | norm | median distance | fooled | smallest found by |",
             "|---|---|---|---|---|"]
    for e in entries:
        found = ", ".join(f"{name} {count}" for name, count in
                          sorted(e["best_found_by"].items(), key=lambda kv: -kv[1]))
        median = "inf" if e["median"] is None else f"{e['median']:.4g}"
        lines.append(f"| {e['model']} | {e['norm']} | {median} | {_pct(e['fooled'])} | {found} |")
    lines += ["", "Per norm, each sample's smallest successful adversarial over every untargeted "
              "attack of that norm; samples no attack fooled count as infinitely far, "
              "misclassified clean samples as 0."]
    return lines


def _sanity_section(flags):
    if flags is None:
        return []
    lines = ["", "## Sanity checks (gradient masking)", ""]
    if not flags:
        return lines + ["No flag raised: no gradient attack weaker than a black-box or transfer "
                        "attack, robust accuracy never rising with eps, unbounded attacks at "
                        "~0%, no large gain from more steps or restarts (among the attacks "
                        "this run has)."]
    lines += ["| check | model | threat | finding |", "|---|---|---|---|"]
    for f in flags:
        lines.append(f"| {f['check']} | {f['model']} | {f['norm']} {_eps(f['eps'])} "
                     f"| {f['detail']} |")
    return lines + ["", "A flag is a symptom of gradient masking (or of a weak attack): check "
                    "it with a stronger or adaptive attack before trusting the numbers above."]


def _curves_section(curves):
    """Per (model, norm), robust accuracy with eps as rows and attacks as columns."""
    if not curves:
        return []
    lines = ["", "## Robust accuracy against epsilon", "",
             "Robust accuracy per eps (rows) and attack (columns); \"worst case\" counts a "
             "sample as robust only when it survives every attack of the run at that eps."]
    panels = {}
    for curve in curves:
        panels.setdefault((curve["model"], curve["norm"]), []).append(curve)
    for (model, norm), entries in panels.items():
        entries = sorted(entries, key=lambda c: c["attack"] == WORST_CASE)  # worst case last
        columns = [dict(zip(c["eps"], c["robust_accuracy"])) for c in entries]
        eps_values = sorted({e for c in entries for e in c["eps"]},
                            key=lambda e: (e is None, e or 0))  # None (unbounded) last
        lines += ["", f"### {model}, {norm}", "",
                  "| eps | " + " | ".join(c["attack"] for c in entries) + " |",
                  "|---" * (len(entries) + 1) + "|"]
        lines += [f"| {_eps(eps)} | " + " | ".join(_pct(c.get(eps)) for c in columns) + " |"
                  for eps in eps_values]
    return lines


def _pictures_section(pictures, skipped):
    """Each picture as a heading and an image; a list of the pictures not drawn and why."""
    if not pictures and not skipped:
        return []
    lines = ["", "## Pictures"]
    for picture in pictures or []:
        title = _picture_title(picture)
        alt = re.sub(r"([\\\[\]])", r"\\\1", title)
        lines += ["", f"### {title}", "", f"![{alt}]({quote(picture['path'], safe='/')})"]
    if skipped:
        lines += ["", "Pictures not drawn:", ""]
        lines += [f"- {_one_line(s['kind'])}: {_one_line(s['reason'])}" for s in skipped]
    return lines


def _picture_title(picture):
    title = picture.get("title") or " ".join(
        str(picture[k]) for k in ("kind", "model", "attack") if picture.get(k))
    return _one_line(title)


def _one_line(text):
    return " ".join(str(text).split())


REQUIRED = ("advx_version", "torch_version", "device", "dataset", "seconds", "models")
# per list of report.json: the keys markdown() reads from each entry
ENTRY_KEYS = {
    "models": ("id", "source", "clean_accuracy"),
    "results": ("model", "attack", "norm", "eps", "targeted", "robust_accuracy",
                "attack_success_rate", "median_distance", "seconds"),
    "worst_case": ("model", "norm", "eps", "robust_accuracy", "attacks"),
    "minimal_perturbation": ("model", "norm", "median", "fooled", "best_found_by"),
    "sanity": ("check", "model", "norm", "eps", "detail"),
    "curves": ("model", "attack", "norm", "eps", "robust_accuracy"),
    "pictures": ("kind", "path"),
    "skipped_pictures": ("kind", "reason"),
}


def check_report(report):
    """The first thing that keeps ``report`` (parsed report.json) from being rendered, or None."""
    if not isinstance(report, dict):
        return f"its top level is a JSON {type(report).__name__}, not an object"
    missing = [key for key in REQUIRED if key not in report]
    if missing:
        return "it lacks " + ", ".join(map(repr, missing))
    if not isinstance(report["dataset"], dict) or {"name", "n"} - set(report["dataset"]):
        return "'dataset' lacks 'name' or 'n'"
    for key, fields in ENTRY_KEYS.items():
        entries = report.get(key)
        if entries is not None and not isinstance(entries, list):
            return f"{key!r} is not a list"
        for index, entry in enumerate(entries or []):
            if not isinstance(entry, dict):
                return f"{key}[{index}] is not an object"
            absent = [f for f in fields if f not in entry]
            if absent:
                return f"{key}[{index}] lacks " + ", ".join(map(repr, absent))
    for index, curve in enumerate(report.get("curves") or []):
        if not (isinstance(curve["eps"], list) and isinstance(curve["robust_accuracy"], list)
                and len(curve["eps"]) == len(curve["robust_accuracy"])):
            return f"curves[{index}]: 'eps' and 'robust_accuracy' are not lists of one length"
    for index, picture in enumerate(report.get("pictures") or []):
        if not isinstance(picture["path"], str):
            return f"pictures[{index}]: 'path' is not a string"
    return None


def read_report(run_dir):
    """The parsed, checked report.json of the run in ``run_dir``; a one-line
    :class:`~advx.errors.UsageError` naming the file when it is missing or malformed."""
    path = Path(run_dir) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (RUN_DIR must be the output folder of a "
                         "finished `advx run`)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno})") from None
    problem = check_report(report)
    if problem:
        raise UsageError(f"{path}: not an advx report: {problem}")
    return report


def write_report(out_dir, report, spec_toml):
    """Write spec.toml, report.md, report.html and report.json into ``out_dir``."""
    out_dir = Path(out_dir)
    write_atomic(out_dir / "spec.toml", spec_toml)
    write_pages(out_dir, report)
    write_atomic(out_dir / "report.json", json.dumps(report, indent=2) + "\n")


def write_pages(out_dir, report):
    """Write report.md and report.html (pictures embedded from ``out_dir``); their paths."""
    out_dir = Path(out_dir)
    pages = (out_dir / "report.md", out_dir / "report.html")
    write_atomic(pages[0], markdown(report))
    write_atomic(pages[1], html(report, out_dir))
    return pages
