"""The minimal-perturbation protocol: per sample and norm the smallest adversarial of a run,
the accuracy-distortion curve and the accuracy at fixed distances (Schott et al., 2019)."""

import math

import advx
import attrs
import torch

from . import curves
from .curve import curve_report
from .curve_search import allowances
from .robust import RobustAccuracy

# The distances Schott et al. (2019) report accuracy at on MNIST: L0 12 pixels, L2 1.5, Linf 0.3
ACCURACY_AT = {"l0": 12, "l2": 1.5, "linf": 0.3}
CURVE_POINTS = 9  # evenly spaced points of each accuracy-distortion curve in report.json


def _merged(value):
    """The given table over the defaults (a norm left out keeps its default distance)."""
    return {**ACCURACY_AT, **value} if isinstance(value, dict) else value


def _check_accuracy_at(instance, attribute, value):
    if not isinstance(value, dict):
        raise ValueError(f"accuracy_at must be a table norm -> distance, e.g. "
                         f"{{ linf = 0.3 }}, got {value!r}")
    for norm, distance in value.items():
        if norm not in advx.NORMS:
            raise ValueError(f"accuracy_at: unknown norm {norm!r}; allowed: "
                             f"{', '.join(advx.NORMS)}")
        if not advx.is_finite_number(distance) or distance < 0:
            raise ValueError(f"accuracy_at.{norm} must be a finite number >= 0, got "
                             f"{distance!r}")
        if norm == "l0" and distance != int(distance):
            raise ValueError(f"accuracy_at.l0 must be a whole number of pixels, got {distance!r}")


@attrs.frozen(kw_only=True)
class MinimalPerturbation(RobustAccuracy):
    """Robust accuracy, plus per sample and norm the smallest adversarial any attack found.

    The evaluation of Schott et al. (2019, the ABS paper): for each model and norm, every
    untargeted attack of the run with that norm contributes the distances of its successful
    examples, and each sample keeps the smallest. A clean sample the model already
    misclassifies counts as distance 0; a sample no attack fooled counts as infinitely far (so
    the median is infinite once half the samples survive every attack). Reported per model and
    norm: the median, the fraction fooled, which attack found each sample's smallest
    adversarial, every sample's distance (null for infinite), the accuracy-distortion curve
    (robust accuracy against distance d: the fraction of samples whose smallest adversarial
    lies farther than d) and the robust accuracy at the norm's ``accuracy_at`` distance.  "Within
    d" has the core's sense (:meth:`advx.ThreatModel.contains`, same tolerance): an example the
    core accepts inside the ball of radius d lies within d.

    Without ``eps_search`` an attack contributes its set at every eps of its entry (a
    minimisation attack without eps: its unbounded set), and the robust-accuracy tables are
    those of ``robust-accuracy``.  With ``eps_search`` no fixed-eps attack runs once per eps:
    an untargeted fixed-eps entry with two or more eps contributes, per sample, the smallest
    misclassified example the curve protocol's guided per-sample search over its eps list
    found (:func:`.curves.swept`: fewer than log2(K + 1) attack runs per sample for K eps, a
    cached set like any other), and a minimisation attack its unbounded set; the robust
    accuracy per eps then comes as the curve protocol's ``curves`` (with the worst case per
    norm) instead of one row per attack and eps.  The search *assumes monotonicity*: a sample
    the attack fools at an eps it fools at every larger one.  Under it the search finds each
    sample's smallest fooling eps of the list, as one run per eps would, and the sample's
    minimum lies within that eps; where the attack is not monotone (random starts, a weak
    attack at a larger eps) the search can skip an eps that would have fooled the sample, and
    the minimum is then larger than one run per eps could give.  Either way every minimum is
    the distance of a real example the model misclassifies: an upper bound on the sample's
    true minimal adversarial distance, never below it.
    """

    name = "minimal-perturbation"
    accuracy_at: dict = attrs.field(
        factory=lambda: dict(ACCURACY_AT), converter=_merged, validator=_check_accuracy_at,
        hash=False,
        metadata={"help": "per norm, the distance at which to report robust accuracy "
                          "(norms left out keep their default)"})
    eps_search: bool = attrs.field(
        default=False, validator=advx.boolean,
        metadata={"help": "fixed-eps attacks with two or more eps contribute a per-sample "
                          "search over their eps instead of one run per eps"})

    def evaluate(self, context):
        if self.eps_search:
            measured = curve_report(context, _measure)
        else:
            measured = super().evaluate(context)
        norms = sorted({a.norm for a in context.attacks if not a.targeted})
        measured["minimal_perturbation"] = [
            _minimal(context, model, norm, self.accuracy_at.get(norm), self.eps_search)
            for model in context.models for norm in norms]
        return measured

    def requests(self, context):
        """Without ``eps_search``, robust-accuracy's sets (the distances come from them);
        with it none up front (the sweeps are asked for as the search needs them)."""
        return () if self.eps_search else super().requests(context)


def searched(attack_spec):
    """Whether ``eps_search`` searches an entry: a fixed-eps attack (not a transfer) with two
    or more eps."""
    attack = attack_spec.attack
    return (attack.kind != "minimization" and attack.access != "transfer"
            and len([e for e in attack_spec.eps if e is not None]) > 1)


def _measure(context, model, attack_spec, grid):
    """An entry's curve with ``eps_search``: searched entries swept, minimisation attacks from
    their unbounded set, the others (one eps, transfer) read per eps."""
    if searched(attack_spec) or attack_spec.attack.kind == "minimization":
        return curves.measure(context, model, attack_spec, grid)
    return curves.per_eps(context, model, attack_spec, grid)


def found_distances(context, model, attack_spec, search):
    """Per set the entry contributes, per sample the distance of its misclassified example
    (inf where it found none, and for samples misclassified clean)."""
    correct = context.clean_correct(model)
    if search and searched(attack_spec):
        grid = curves.grid_of(attack_spec, context.attacks)
        arrays = curves.swept(context, model, attack_spec, grid)[1].stored.arrays
        success = torch.from_numpy(arrays["success"]) & correct
        return [torch.where(success, torch.from_numpy(arrays["distance"]).double(), torch.inf)]
    minimisation = attack_spec.attack.kind == "minimization"
    eps_list = (None,) if search and minimisation else attack_spec.eps
    outcomes = [context.outcome(model, attack_spec, eps) for eps in eps_list]
    return [torch.where(o.success & o.eligible, o.distance.double(), torch.inf)
            for o in outcomes]


def _minimal(context, model, norm, at, search=False):
    correct = context.clean_correct(model)
    best = torch.where(correct, torch.inf, 0.0).double()
    attacks = [a for a in context.attacks
               if a.norm == norm and not a.targeted and a.runs_on(model)]
    found_by = torch.full_like(context.y, -1)  # index into attacks; -1: none (or misclassified)
    for index, attack in enumerate(attacks):
        for distance in found_distances(context, model, attack, search):
            better = distance < best
            best = torch.where(better, distance, best)
            found_by = torch.where(better, index, found_by)
    counts = torch.bincount(found_by[found_by >= 0], minlength=len(attacks)).tolist()
    finite = torch.isfinite(best)
    entry = {"model": model.id, "norm": norm, "attacks": [a.id for a in attacks],
             "clean_accuracy": float(correct.float().mean()),
             "median": _median(best), "fooled": float(finite.float().mean()),
             "misclassified": int((~correct).sum()),
             "best_found_by": {a.id: c for a, c in zip(attacks, counts, strict=True) if c},
             "accuracy_at": None if at is None else {
                 "distance": at, "robust_accuracy": robust_accuracy_at(best, norm, at)},
             "curve": distortion_curve(best, norm),
             "distances": [d if d != float("inf") else None for d in best.tolist()]}
    if search:
        entry["searched"] = [a.id for a in attacks if searched(a)]
    return entry


def robust_accuracy_at(distances, norm, d):
    """The fraction of samples whose smallest adversarial (inf: none; 0: misclassified clean)
    does not lie within ``d`` (the core's tolerance); None without samples."""
    if not len(distances):
        return None
    allow = allowances([d], norm)[0]
    return float((distances.to(torch.float32) > allow).float().mean())  # as clean accuracy


def distortion_curve(distances, norm, points=CURVE_POINTS):
    """The accuracy-distortion curve of per-sample smallest distances, compactly: ``n``, the
    sorted finite distances (the curve is a step function falling by 1/n at each; robust
    accuracy at d is the fraction of the n samples not within d) and ``points``, the curve at
    evenly spaced distances from 0 to the largest finite one (whole ones for l0)."""
    finite = distances[torch.isfinite(distances)].sort().values
    top = float(finite[-1]) if len(finite) else 0.0
    grid = torch.linspace(0.0, top, points, dtype=torch.float64).tolist() if top > 0 else [0.0]
    grid = sorted({float(math.floor(d)) if norm == "l0" else float(f"{d:.6g}") for d in grid})
    return {"n": len(distances), "distances": finite.tolist(),
            "points": {"distance": grid,
                       "robust_accuracy": [robust_accuracy_at(distances, norm, d)
                                           for d in grid]}}


def _median(values):
    """The lower median (as torch.median), or None when it is infinite."""
    median = float(values.median()) if len(values) else float("inf")
    return None if median == float("inf") else median
