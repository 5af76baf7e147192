"""Robust accuracy per attack and eps, with the per-sample worst case over attacks."""

import advx
import attrs

from .sanity import NAIVE_SUFFIX, sanity_flags
from .sections import robust_sections

BOTH_SUFFIX = " (adaptive or not)"  # worst-case rows over a model's two views


@attrs.frozen(kw_only=True)
class RobustAccuracy(advx.Protocol):
    """Clean and robust accuracy per model, attack and eps, with the per-sample worst case.

    A sample counts as robust under an attack when the model classifies both the clean input and
    the adversarial correctly (or a detector rejects the adversarial); the worst case at an eps
    counts a sample as robust only if it survives every attack of the run with that norm and
    eps.  Sanity checks for gradient masking (:mod:`advx.plugins.protocols.sanity`) run over
    the results and are printed with the report.
    """

    name = "robust-accuracy"

    def evaluate(self, context):
        clean, results, worst, masks = {}, [], [], {}
        for model in context.models:
            correct = context.clean_correct(model)
            clean[model.id] = float(correct.float().mean())
            rejected = advx.reject_index(context.module(model))
            survivors = {}  # (norm, eps) -> (robust mask, attack ids)
            for attack in context.attacks:
                if not attack.runs_on(model):
                    continue
                for eps in attack.eps:
                    outcome = context.outcome(model, attack, eps)
                    robust = context.robust_correct(model, outcome)
                    results.append(result_row(model, attack, eps, outcome, robust, rejected))
                    mask, ids = survivors.get((attack.norm, eps), (correct, []))
                    survivors[(attack.norm, eps)] = (mask & robust, ids + [attack.id])
            worst += [{"model": model.id, "norm": norm, "eps": eps,
                       "robust_accuracy": float(mask.float().mean()), "attacks": ids}
                      for (norm, eps), (mask, ids) in survivors.items()]
            masks[model.id] = survivors
        worst += both_views(masks)
        detection = detection_rows(context)
        return {"clean_accuracy": clean, "results": results, "worst_case": worst,
                **({"detection": detection, "strongest_eps": strongest_eps(results)}
                   if detection else {}),
                "sanity": sanity_flags(context, results, detection)}

    def requests(self, context):
        """Every set :meth:`evaluate` reads: each attack entry at each eps on each model it
        runs on (an executor that computes concurrently gets them all at once)."""
        return [advx.SetRequest(model, attack, eps) for model in context.models
                for attack in context.attacks if attack.runs_on(model) for eps in attack.eps]

    def sections(self, report):
        return robust_sections(report)


def both_views(masks):
    """Per model entry shown adaptive and non-adaptive (``show_non_adaptive``), the worst case
    over both views' attacks per sample: the two entries are one model (only the gradient an
    attack sees differs), and an attacker picks whichever view fools a sample.  Where the
    adaptive gradient misses part of the defense (PuVAE's discrete choice of class), the
    non-adaptive attack is the stronger one."""
    rows = []
    for naive_id, naive in masks.items():
        base = naive_id.removesuffix(NAIVE_SUFFIX)
        if base == naive_id or base not in masks:
            continue
        for key, (mask, ids) in masks[base].items():
            if key in naive:
                both = mask & naive[key][0]
                rows.append({"model": f"{base}{BOTH_SUFFIX}", "norm": key[0], "eps": key[1],
                             "robust_accuracy": float(both.float().mean()),
                             "attacks": ids + [f"{i}{NAIVE_SUFFIX}" for i in naive[key][1]]})
    return rows


def result_row(model, attack, eps, outcome, robust, rejected=None):
    """The report row of one attack entry at one eps on one model; behind a detector
    (``rejected``: its reject output) with the fraction of adversarials it rejected."""
    succeeded = outcome.success & outcome.eligible
    distances = outcome.distance[succeeded]
    extra = {} if rejected is None else {
        "rejection_rate": float((outcome.pred == rejected).float().mean())}
    return {**extra,
        "model": model.id,
        "attack": attack.id,
        "attack_plugin": attack.name,
        "norm": attack.norm,
        "eps": eps,
        "targeted": attack.targeted,
        "n": len(robust),
        "robust_accuracy": float(robust.float().mean()),
        "attack_success_rate": outcome.success_rate(),
        "median_distance": float(distances.median()) if len(distances) else None,
        "mean_queries": float(outcome.queries.double().mean()),
        **accounting_fields(attack, outcome),
        "seconds": round(outcome.seconds, 3),
        "set_key": outcome.key,
        "cache": outcome.origin,
    }


def accounting_fields(attack, outcome):
    """What the core counted for the set: mean propagations per eligible sample, samples
    whose budget ran out (when the entry had one), and samples the attack returned a worse
    point for than one it had queried (None where the set predates the counts)."""
    fields = {"mean_propagations": outcome.propagations(),
              "returned_worse": outcome.returned_worse(attack.attack.kind)}
    if attack.budget is not None:
        fields["propagations_budget"] = attack.budget
        fields["out_of_budget"] = int((outcome.out_of_budget & outcome.eligible).sum())
    return fields


def detection_rows(context):
    """Per model behind a detector: the requested false-positive rates and the clean one
    measured on the test samples (a rejected clean input, counted as an error by clean
    accuracy)."""
    rows = []
    for model in context.models:
        rejected = advx.reject_index(context.module(model))
        if rejected is None:
            continue
        pred = context.clean_logits(model).argmax(1)
        flagged = pred == rejected
        rows.append({"model": model.id, "requested_fpr": [
            d.fpr for d in model.defenses if isinstance(d, advx.Detector)],
            "clean_fpr": float(flagged.float().mean()), "n": len(pred),
            "clean_accuracy": float((pred == context.y).float().mean())})
    return rows


def strongest_eps(results):
    """Per model behind a detector and attack: the eps at which robust accuracy is lowest
    (often below the largest: larger perturbations are detected more often) and that
    accuracy, beside the one at the largest eps."""
    series = {}
    for row in results:
        if "rejection_rate" in row and row["eps"] is not None:
            series.setdefault((row["model"], row["attack"]), []).append(row)
    out = []
    for (model, attack), rows in series.items():
        weakest = min(rows, key=lambda r: (r["robust_accuracy"], r["eps"]))
        largest = max(rows, key=lambda r: r["eps"])
        out.append({"model": model, "attack": attack, "eps": weakest["eps"],
                    "robust_accuracy": weakest["robust_accuracy"],
                    "largest_eps": largest["eps"],
                    "robust_at_largest_eps": largest["robust_accuracy"],
                    "eps_tried": len(rows)})
    return out
