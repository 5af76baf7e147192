"""Sanity checks for gradient masking, computed from a run's robust-accuracy results.

After Carlini et al. (2019, "On evaluating adversarial robustness") and Athalye et al. (2018):
a defense that only hides its gradients shows symptoms that an evaluation can see without
knowing how the defense works.  Each check below flags a symptom; a flag is a reason to look
closer (a stronger or adaptive attack), not a proof of masking.
"""

import math

import advx
import attrs

from . import inference_loops

TOLERANCE = 0.01  # robust accuracies closer than 1 point count as equal
FEW_POINTS = 0.03  # "more than a few points" for the steps/restarts check
FAR_BELOW = 0.10  # adaptive vs non-adaptive gap that flags a detector
NAIVE_SUFFIX = advx.NAIVE_SUFFIX  # the id suffix of a model entry's non-adaptive twin
BUDGET_KEYS = frozenset({"steps", "restarts", "step_size", "random_start"})
CHECKS = {
    "gradient-weaker-than-black-box":
        "a gradient attack leaves more samples robust than a black-box or transfer attack on "
        "the same model, norm and eps",
    "robust-accuracy-rises-with-eps":
        "an attack leaves more samples robust at a larger eps",
    "unbounded-attack-short-of-zero":
        "an attack without an effective bound (no eps, or a ball holding the whole input box) "
        "leaves more than 1% of the samples robust",
    "detector-adaptive-far-below":
        "behind a detector, the adaptive attack leaves more than 10 points fewer samples "
        "robust than the same attack ignoring the detector (the non-adaptive entry): the "
        "detector's own number is not its robustness",
    "non-adaptive-stronger":
        "the same attack ignoring a defense (the non-adaptive entry) leaves more than 3 points "
        "fewer samples robust than the adaptive one: the adaptive gradient misses part of the "
        "defense (a discrete choice, a masked gradient); read the worst case over both views",
    "clean-fpr-above-requested":
        "a detector rejects more clean test inputs than its requested false-positive rate "
        "allows (beyond three binomial standard errors)",
    inference_loops.CHECK: inference_loops.DESCRIPTION,
    "returned-worse-than-queried":
        "an attack returned, for some samples, a worse point than an adversarial it had "
        "already queried within the threat model (counted by the core): its result "
        "understates it",
    "more-budget-much-stronger":
        "more steps or restarts of the same attack lower robust accuracy by more than 3 points "
        "(the smaller budget had not converged)",
}


@attrs.frozen
class _Row:
    result: dict
    attack: object  # the attack instance (access, parameters)

    @property
    def robust(self):
        return self.result["robust_accuracy"]

    @property
    def id(self):
        return self.result["attack"]


def sanity_flags(context, results, detection=()):
    """The flags raised by :data:`CHECKS` over ``results`` (robust-accuracy result rows) and
    ``detection`` (the detection rows of models behind a detector)."""
    attacks = {a.id: a.attack for a in context.attacks}
    rows = [_Row(r, attacks[r["attack"]]) for r in results if not r["targeted"]]
    groups = {}
    for row in rows:
        key = (row.result["model"], row.result["norm"], row.result["eps"])
        groups.setdefault(key, []).append(row)
    box = _box_sizes(context)
    flags = []
    for (model, norm, eps), group in groups.items():
        where = {"model": model, "norm": norm, "eps": eps}
        flags += [{**where, **f} for f in _gradient_vs_black_box(group)]
        flags += [{**where, **f} for f in _more_budget(group)]
        if eps is None or eps >= box[norm]:
            flags += [{**where, **f} for f in _unbounded(group)]
    flags += _rising_with_eps(rows) + _returned_worse(rows)
    return (flags + _adaptive_far_below(rows) + _naive_stronger(rows)
            + _fpr_above_requested(detection) + inference_loops.inference_loop_flags(context))


def _returned_worse(rows):
    return [{"model": r.result["model"], "norm": r.result["norm"], "eps": r.result["eps"],
             **_flag("returned-worse-than-queried", [r.id],
                     f"{r.id}: {r.result['returned_worse']} of {r.result['n']} samples")}
            for r in rows if r.result.get("returned_worse")]


def _twins(rows):
    """``(adaptive, naive)`` row pairs: one attack at one eps on a model entry and on its
    ``(non-adaptive)`` twin."""
    by_key = {(r.result["model"], r.id, r.result["eps"]): r for r in rows}
    for (model, attack, eps), naive in by_key.items():
        if model.endswith(NAIVE_SUFFIX):
            adaptive = by_key.get((model[:-len(NAIVE_SUFFIX)], attack, eps))
            if adaptive is not None:
                yield adaptive, naive


def _twin_flag(check, adaptive, naive):
    return {"model": adaptive.result["model"], "norm": naive.result["norm"],
            "eps": naive.result["eps"], **_flag(check, [naive.id],
                                               f"{naive.id}: {adaptive.robust:.1%} robust "
                                               f"adaptive, {naive.robust:.1%} non-adaptive")}


def _adaptive_far_below(rows):
    return [_twin_flag("detector-adaptive-far-below", adaptive, naive)
            for adaptive, naive in _twins(rows)
            if "rejection_rate" in naive.result and naive.robust - adaptive.robust > FAR_BELOW]


def _naive_stronger(rows):
    return [_twin_flag("non-adaptive-stronger", adaptive, naive)
            for adaptive, naive in _twins(rows) if adaptive.robust - naive.robust > FEW_POINTS]


def _fpr_above_requested(detection):
    flags = []
    for row in detection:
        allowed = max(row["requested_fpr"], default=0.0)
        error = math.sqrt(max(allowed * (1 - allowed), 1e-12) / max(row["n"], 1))
        if row["clean_fpr"] > allowed + 3 * error + 1 / max(row["n"], 1):
            flags.append({"model": row["model"], "norm": None, "eps": None,
                          **_flag("clean-fpr-above-requested", [],
                                  f"{row['clean_fpr']:.2%} of {row['n']} clean test inputs "
                                  f"rejected, {allowed:.2%} requested")})
    return flags


def _box_sizes(context):
    """Per norm, the radius of a ball around any input that holds the whole input box."""
    lower, upper = context.bounds
    width, x = upper - lower, context.x
    pixels = x[0, 0].numel() if x.dim() == 4 else x[0].numel()
    elements = x[0].numel()
    return {"linf": width, "l2": width * math.sqrt(elements), "l1": width * elements,
            "l0": pixels}


def _flag(check, attacks, detail):
    return {"check": check, "attacks": attacks, "detail": detail}


def _gradient_vs_black_box(group):
    others = [r for r in group if r.attack.access in ("score", "decision", "transfer")]
    if not others:
        return []
    best = min(others, key=lambda r: r.robust)
    return [_flag("gradient-weaker-than-black-box", [r.id, best.id],
                  f"{r.id} leaves {r.robust:.1%} robust, {best.id} ({best.attack.access}) "
                  f"{best.robust:.1%}")
            for r in group
            if r.attack.access == "gradient" and r.robust > best.robust + TOLERANCE]


def _more_budget(group):
    flags = []
    for small in group:
        for large in group:
            if small is large or not _same_attack_more_budget(small.attack, large.attack):
                continue
            if small.robust - large.robust > FEW_POINTS:
                flags.append(_flag("more-budget-much-stronger", [small.id, large.id],
                                   f"{small.id} leaves {small.robust:.1%} robust, {large.id} "
                                   f"{large.robust:.1%}"))
    return flags


def _same_attack_more_budget(small, large):
    """``large`` is ``small`` with at least as many steps and restarts, and more of one."""
    if type(small) is not type(large):
        return False
    a, b = advx.plugin_params(small), advx.plugin_params(large)
    if any(a[k] != b[k] for k in a if k not in BUDGET_KEYS):
        return False
    more = [b.get(k, 1) - a.get(k, 1) for k in ("steps", "restarts")]
    return all(d >= 0 for d in more) and any(d > 0 for d in more)


def _unbounded(group):
    return [_flag("unbounded-attack-short-of-zero", [r.id],
                  f"{r.id} leaves {r.robust:.1%} robust")
            for r in group if r.attack.access != "transfer" and r.robust > TOLERANCE]


def _rising_with_eps(rows):
    by_attack = {}
    for row in rows:
        if row.result["eps"] is not None:
            by_attack.setdefault((row.result["model"], row.id), []).append(row)
    flags = []
    for (model, attack), series in by_attack.items():
        series.sort(key=lambda r: r.result["eps"])
        for lower, higher in zip(series, series[1:]):
            if higher.robust > lower.robust + TOLERANCE:
                flags.append({"model": model, "norm": lower.result["norm"],
                              "eps": higher.result["eps"], **_flag(
                                  "robust-accuracy-rises-with-eps", [attack],
                                  f"{attack}: {lower.robust:.1%} at eps "
                                  f"{lower.result['eps']:g}, {higher.robust:.1%} at "
                                  f"{higher.result['eps']:g}")})
    return flags
