"""The optimality protocol's part of report.md, rendered from report.json alone."""

from .sections import pct, propagations_cell, robust_sections


def optimality_sections(report):
    """robust-accuracy's sections (minimal perturbations included), then one optimality table
    per model and norm."""
    blocks = robust_sections(report)
    entries = report.get("optimality") or []
    blocks[-1:-1] = [_table(entry) for entry in entries]  # before the footnote
    if entries:
        blocks.insert(-1, NOTE)
    return blocks


NOTE = ("Optimality (AttackBench, Cinà et al. 2025): 1 - (A - A*) / (a0 d_max - A*), with A "
        "the area under an attack's security curve (robust accuracy against distance) up to "
        "d_max, the largest per-sample best distance, A* that of the per-sample best over the "
        "attacks and a0 the clean accuracy: 1 when an attack found every sample's best. "
        "Propagations are forward + backward passes per correctly classified sample counted "
        "by the core (\"of B\": the entry's budget); \"worse\" counts samples the attack "
        "returned a worse point for than an adversarial it had queried. Security curves: "
        "pictures/security-<model>-<norm>.png.")


def _table(entry):
    searched = set(entry.get("searched") or ())
    lines = [f"## Optimality of the attacks on {entry['model']}, {entry['norm']}", "",
             "| attack | optimality | success | median distance | best found | propagations "
             "| seconds | worse |", "|---|---|---|---|---|---|---|---|"]
    for row in entry["attacks"]:
        name = row["attack"] + (" (eps search)" if row["attack"] in searched else "")
        lines.append(f"| {name} | {_fixed(row['optimality'])} | {pct(row['success_rate'])} "
                     f"| {_fixed(row['median_distance'], 4)} | {row['best_found']} "
                     f"| {propagations_cell(row)} | {row['seconds']:.1f} "
                     f"| {'n/a' if row['returned_worse'] is None else row['returned_worse']} |")
    return "\n".join(lines)


def _fixed(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}g}"

