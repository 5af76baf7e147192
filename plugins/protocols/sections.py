"""The built-in protocols' part of report.md: results, worst cases, minimal distances, sanity
checks and curves, rendered from report.json alone (so ``advx report`` can redraw them)."""

import advx

WORST_CASE = "worst case"
# per list of report.json: the keys these sections read from each entry
ENTRY_KEYS = {
    "results": ("model", "attack", "norm", "eps", "targeted", "robust_accuracy",
                "attack_success_rate", "median_distance", "seconds"),
    "worst_case": ("model", "norm", "eps", "robust_accuracy", "attacks"),
    "minimal_perturbation": ("model", "norm", "median", "fooled", "best_found_by"),
    "sanity": ("check", "model", "norm", "eps", "detail"),
    "curves": ("model", "attack", "norm", "eps", "robust_accuracy"),
}
FOOTNOTE = ("Robust accuracy counts a sample when the model classifies both the clean and the "
            "adversarial input correctly (an adversarial a detector rejects counts as "
            "defended). Attack success is measured on the samples the model classifies "
            "correctly (and, for targeted attacks, whose label is not the target), recomputed "
            "from the model's predictions on the returned examples. Seconds are the compute "
            "time of each adversarial set; \"set\" says whether it was computed in this run, "
            "read from the cache, or resumed from a killed run, and gives its key "
            "(`advx cache info KEY`).")


def robust_sections(report):
    """The sections of the robust-accuracy family of protocols."""
    check_lists(report)
    blocks = [_results(report.get("results", []))]
    if report.get("worst_case"):  # the curve protocol has its worst cases in its curves
        blocks.append(_worst_case(report["worst_case"]))
    blocks += [b for b in (_detection(report),
                           _minimal(report.get("minimal_perturbation"),
                                    report.get("clean_accuracy")),
                           _sanity(report.get("sanity"))) if b]
    blocks.append(FOOTNOTE)
    if report.get("curves"):
        blocks.append(_curves(report["curves"]))
    return blocks


def check_lists(report):
    """Raise :class:`advx.UsageError` naming the first malformed list these sections read."""
    for key, fields in ENTRY_KEYS.items():
        entries = report.get(key)
        if entries is not None and not isinstance(entries, list):
            raise advx.UsageError(f"{key!r} is not a list")
        for index, entry in enumerate(entries or []):
            if not isinstance(entry, dict):
                raise advx.UsageError(f"{key}[{index}] is not an object")
            absent = [f for f in fields if f not in entry]
            if absent:
                raise advx.UsageError(f"{key}[{index}] lacks " + ", ".join(map(repr, absent)))
    for index, curve in enumerate(report.get("curves") or []):
        if not (isinstance(curve["eps"], list) and isinstance(curve["robust_accuracy"], list)
                and len(curve["eps"]) == len(curve["robust_accuracy"])):
            raise advx.UsageError(f"curves[{index}]: 'eps' and 'robust_accuracy' are not lists "
                                  "of one length")


def pct(value):
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


def _results(rows):
    lines = ["## Robust accuracy per attack", "",
             "| model | attack | threat | robust accuracy | attack success | median distance "
             "| propagations | seconds | set |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        threat = f"{r['norm']} {_eps(r['eps'])}{' targeted' if r['targeted'] else ''}"
        lines.append(f"| {r['model']} | {r['attack']} | {threat} | {pct(r['robust_accuracy'])} "
                     f"| {pct(r['attack_success_rate'])} | {_num(r['median_distance'])} "
                     f"| {propagations_cell(r)} | {r['seconds']:.1f} | {_origin(r)} |")
    return "\n".join(lines)


def propagations_cell(row):
    """Mean forward + backward propagations per sample, with the budget when capped (n/a for
    sets computed before advx counted them)."""
    mean = row.get("mean_propagations")
    if mean is None:
        return "n/a"
    budget = row.get("propagations_budget")
    return f"{mean:.0f}" + ("" if budget is None else f" of {budget}")


def _worst_case(rows):
    lines = ["## Worst case over attacks", "",
             "| model | threat | robust accuracy | attacks |", "|---|---|---|---|"]
    lines += [f"| {w['model']} | {w['norm']} {_eps(w['eps'])} | {pct(w['robust_accuracy'])} "
              f"| {', '.join(w['attacks'])} |" for w in rows]
    return "\n".join(lines)


def _detection(report):
    """Behind a detector: the clean false-positive rate, rejection per attack and eps, and the
    strongest eps (the number to read beside the one at the largest eps)."""
    rows = report.get("detection")
    if not rows:
        return ""
    lines = ["## Detection", "",
             "| model | requested FPR | clean FPR (test) | clean accuracy with rejection |",
             "|---|---|---|---|"]
    lines += [f"| {r['model']} | {', '.join(pct(f) for f in r['requested_fpr'])} "
              f"| {pct(r['clean_fpr'])} of {r['n']} | {pct(r['clean_accuracy'])} |"
              for r in rows]
    lines += ["", "| model | attack | threat | robust accuracy | rejected |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['attack']} | {r['norm']} {_eps(r['eps'])} "
              f"| {pct(r['robust_accuracy'])} | {pct(r['rejection_rate'])} |"
              for r in report.get("results", []) if "rejection_rate" in r]
    strongest = report.get("strongest_eps") or []
    if strongest:
        lines += ["", "| model | attack | strongest eps | robust accuracy there "
                  "| at the largest eps |", "|---|---|---|---|---|"]
        lines += [f"| {w['model']} | {w['attack']} | {w['eps']:g} | {pct(w['robust_accuracy'])} "
                  f"| {pct(w['robust_at_largest_eps'])} at {w['largest_eps']:g} |"
                  for w in strongest]
    lines += ["", "A rejected adversarial counts as defended, a rejected clean input as an "
              "error. Behind a detector a larger eps is not always stronger: the strongest eps "
              "of the grid is the number to read."]
    return "\n".join(lines)


def _minimal(entries, clean=None):
    """Per norm, a table of each model's smallest adversarials: clean accuracy, median, the
    fraction fooled, robust accuracy at the protocol's ``accuracy_at`` distance and the attack
    that found the smallest adversarial most often."""
    if not entries:
        return ""
    blocks = []
    for norm in sorted({e["norm"] for e in entries}):
        group = [e for e in entries if e["norm"] == norm]
        at = next((e["accuracy_at"]["distance"] for e in group if e.get("accuracy_at")), None)
        lines = [f"## Smallest adversarial per sample, {norm}", "",
                 f"| model | clean accuracy | median distance | fooled "
                 f"| robust accuracy at {_num(at)} | smallest found most often by |",
                 "|---|---|---|---|---|---|"]
        for e in group:
            accuracy = (e.get("clean_accuracy") if "clean_accuracy" in e
                        else (clean if isinstance(clean, dict) else {}).get(e["model"]))
            median = "inf" if e["median"] is None else f"{e['median']:.4g}"
            at_value = (e.get("accuracy_at") or {}).get("robust_accuracy")
            lines.append(f"| {e['model']} | {pct(accuracy)} | {median} | {pct(e['fooled'])} "
                         f"| {pct(at_value)} | {_most_often(e['best_found_by'])} |")
        blocks.append("\n".join(lines))
    blocks.append(
        "Per norm, each sample's smallest successful adversarial over every untargeted "
        "attack of that norm; samples no attack fooled count as infinitely far, "
        "misclassified clean samples as 0. Robust accuracy at a distance d counts a sample "
        "unless the model misclassifies it clean or its smallest adversarial lies within d; "
        "the whole accuracy-distortion curve is in report.json (`minimal_perturbation`, "
        "`curve`) and, with the plots extra, in pictures/distortion-<norm>.png.")
    return "\n\n".join(blocks)


def _most_often(counts):
    """The attack that found the most smallest adversarials, with its count of all."""
    if not counts:
        return "none"
    name, count = max(counts.items(), key=lambda kv: kv[1])
    return f"{name} ({count} of {sum(counts.values())})"


def _sanity(flags):
    if flags is None:
        return ""
    lines = ["## Sanity checks (gradient masking)", ""]
    if not flags:
        return "\n".join(lines + [
            "No flag raised: no gradient attack weaker than a black-box or transfer attack, "
            "robust accuracy never rising with eps, unbounded attacks at ~0%, no large gain "
            "from more steps or restarts (among the attacks this run has)."])
    lines += ["| check | model | threat | finding |", "|---|---|---|---|"]
    lines += [f"| {f['check']} | {f['model']} | "
              f"{'-' if f['norm'] is None else f['norm'] + ' ' + _eps(f['eps'])} | "
              f"{f['detail']} |" for f in flags]
    return "\n".join(lines + ["", "A flag is a symptom of gradient masking (or of a weak "
                              "attack): check it with a stronger or adaptive attack before "
                              "trusting the numbers above."])


def _curves(curves):
    """Per (model, norm), robust accuracy with eps as rows and attacks as columns."""
    lines = ["## Robust accuracy against epsilon", "",
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
        lines += [f"| {_eps(eps)} | " + " | ".join(pct(c.get(eps)) for c in columns) + " |"
                  for eps in eps_values]
    return "\n".join(lines)
