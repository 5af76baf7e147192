"""Reports of a run: report.json for machines, report.md for people, written atomically."""

import json
import os
import tempfile
from pathlib import Path


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
    """report.md: clean accuracy, per-attack results and the worst case, as tables."""
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
              "(`advx cache info KEY`).", ""]
    return "\n".join(lines)


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


def write_report(out_dir, report, spec_toml):
    """Write report.json, report.md and spec.toml into ``out_dir``."""
    out_dir = Path(out_dir)
    write_atomic(out_dir / "spec.toml", spec_toml)
    write_atomic(out_dir / "report.md", markdown(report))
    write_atomic(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
