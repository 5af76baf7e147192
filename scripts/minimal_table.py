"""The ABS paper's table from a minimal-perturbation run: per model and norm the median of the
smallest adversarial, the robust accuracy at the paper's distances, and the attacks that found
the smallest adversarial most often.

    python scripts/minimal_table.py runs/abs-mnist
"""

import argparse
import json
import pathlib

NORMS = ("l0", "l2", "linf")
NAMES = {"l0": "L0", "l2": "L2", "linf": "Linf"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=pathlib.Path, help="a run folder holding report.json")
    return parser.parse_args(argv)


def _median(entry):
    median = entry["median"]
    if median is None:
        return "> all found"
    return f"{median:.0f}" if entry["norm"] == "l0" else f"{median:.3f}"


def _at(entry):
    at = entry.get("accuracy_at")
    return "" if at is None else f"{at['robust_accuracy']:.0%}"


def _top(entry, most=2):
    found = sorted(entry["best_found_by"].items(), key=lambda item: -item[1])[:most]
    return ", ".join(f"{attack} {count}" for attack, count in found)


def tables(report):
    """Markdown: medians and accuracies per model (a row) and norm, then the best attacks."""
    entries = {(e["model"], e["norm"]): e for e in report["minimal_perturbation"]}
    models = [m["id"] for m in report["models"]]
    first = next(iter(entries.values()))
    distances = {n: (entries.get((first["model"], n)) or {}).get("accuracy_at") for n in NORMS}
    head = ["model", "clean"] + [f"median {NAMES[n]}" for n in NORMS] + [
        f"acc. at {NAMES[n]} {d['distance']:g}" for n, d in distances.items() if d]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in models:
        row = [model, f"{report['clean_accuracy'][model]:.0%}"]
        row += [_median(entries[(model, n)]) for n in NORMS]
        row += [_at(entries[(model, n)]) for n, d in distances.items() if d]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| model | " + " | ".join(f"smallest {NAMES[n]} found by" for n in NORMS)
              + " |", "|---|" + "---|" * len(NORMS)]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(_top(entries[(model, n)]) for n in NORMS)
                     + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    print(tables(json.loads((args.run / "report.json").read_text())))


if __name__ == "__main__":
    main()
