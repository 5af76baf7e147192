"""The minimal-perturbation protocol: per sample and norm the smallest adversarial of a run."""

import attrs
import torch

from .robust import RobustAccuracy


@attrs.frozen(kw_only=True)
class MinimalPerturbation(RobustAccuracy):
    """Robust accuracy, plus per sample and norm the smallest adversarial any attack found.

    The measure of Schott et al. (2019, the ABS paper): for each model and norm, every
    untargeted attack of the run with that norm (at every eps it ran) contributes the distances
    of its successful examples, and each sample keeps the smallest. A clean sample the model
    already misclassifies counts as distance 0; a sample no attack fooled counts as infinitely
    far (so the median is infinite once half the samples survive every attack). Reported per
    model and norm: the median, the fraction fooled, which attack found each sample's smallest
    adversarial, and every sample's distance (null for infinite).
    """

    name = "minimal-perturbation"

    def evaluate(self, context):
        measured = super().evaluate(context)
        norms = sorted({a.norm for a in context.attacks if not a.targeted})
        measured["minimal_perturbation"] = [_minimal(context, model, norm)
                                            for model in context.models for norm in norms]
        return measured


def _minimal(context, model, norm):
    correct = context.clean_correct(model)
    best = torch.where(correct, torch.inf, 0.0).double()
    attacks = [a for a in context.attacks if a.norm == norm and not a.targeted]
    found_by = torch.full_like(context.y, -1)  # index into attacks; -1: none (or misclassified)
    for index, attack in enumerate(attacks):
        for eps in attack.eps:
            outcome = context.outcome(model, attack, eps)
            distance = torch.where(outcome.success & outcome.eligible,
                                   outcome.distance.double(), torch.inf)
            better = distance < best
            best = torch.where(better, distance, best)
            found_by = torch.where(better, index, found_by)
    counts = torch.bincount(found_by[found_by >= 0], minlength=len(attacks)).tolist()
    finite = torch.isfinite(best)
    return {"model": model.id, "norm": norm, "attacks": [a.id for a in attacks],
            "median": _median(best), "fooled": float(finite.float().mean()),
            "misclassified": int((~correct).sum()),
            "best_found_by": {a.id: c for a, c in zip(attacks, counts, strict=True) if c},
            "distances": [d if d != float("inf") else None for d in best.tolist()]}


def _median(values):
    """The lower median (as torch.median), or None when it is infinite."""
    median = float(values.median()) if len(values) else float("inf")
    return None if median == float("inf") else median
