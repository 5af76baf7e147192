"""The optimality protocol: how close each attack comes to the best any attack of the run
found, per sample, at the propagations it spent (AttackBench; Cinà et al., AAAI 2025).

For one model and norm, every untargeted attack entry of that norm gives each sample a
distance: that of its smallest misclassified example (0 for a sample the model misclassifies
clean, infinite where it found none).  The per-sample best over the attacks defines the best
*security curve* (robust accuracy against distance); an attack's own distances define its
curve.  With ``d_max`` the largest finite best distance, ``a0`` the clean accuracy and areas
taken under the curves from 0 to ``d_max``,

    optimality = 1 - (A - A*) / (a0 * d_max - A*)

where ``A`` is the attack's area and ``A*`` the best one: 1 for an attack that found every
sample's best, 0 for one that found nothing.  Since robust accuracy at ``d`` is the fraction
of samples farther than ``d``, the area is the mean over samples of ``min(distance, d_max)``.

A fixed-eps attack becomes minimal by the curve protocol's per-sample search over its eps
list (``eps_search``, on by default): a sample's distance is that of the smallest example the
search found.  An entry's ``propagations`` budget holds for its whole search.  Each attack's
propagations (forward + backward passes per sample, counted by the core), seconds and the
samples it returned a worse point for than one it had queried come from its sets.
"""

import advx
import attrs
import torch

from . import curves
from .minimal import MinimalPerturbation, distortion_curve, searched
from .optimality_report import optimality_sections


@attrs.frozen(kw_only=True)
class Optimality(MinimalPerturbation):
    """Per model and norm, each attack's optimality, success rate, median distance,
    propagations and seconds; see the module docstring.  Also everything minimal-perturbation
    reports (per-sample minima, accuracy-distortion curves)."""

    name = "optimality"
    eps_search: bool = attrs.field(
        default=True, validator=advx.boolean,
        metadata={"help": "fixed-eps attacks with two or more eps are made minimal by a "
                          "per-sample search over their eps (else one run per eps)"})

    def evaluate(self, context):
        measured = super().evaluate(context)
        norms = sorted({a.norm for a in context.attacks if not a.targeted})
        measured["optimality"] = [
            entry for model in context.models for norm in norms
            if (entry := optimality_entry(context, model, norm, self.eps_search))]
        return measured

    def sections(self, report):
        return optimality_sections(report)


@attrs.frozen(eq=False)
class Found:
    """What one attack entry found on one model: per-sample distance (0: misclassified clean,
    inf: not fooled) and the cost of the sets it took."""

    distance: torch.Tensor  # float64
    propagations: float | None  # mean forwards + backwards per correctly classified sample
    seconds: float
    returned_worse: int | None


def attack_found(context, model, attack_spec, search):
    """The :class:`Found` of ``attack_spec`` on ``model``: from its swept set (a searched
    fixed-eps entry), its unbounded set (a minimisation attack under search) or its sets at
    every eps (the per-sample minimum over them; their costs add up)."""
    correct = context.clean_correct(model)
    if search and searched(attack_spec):
        grid = curves.grid_of(attack_spec, context.attacks)
        stored = curves.swept(context, model, attack_spec, grid)[1].stored
        outcomes = [_outcome_of(stored.arrays, stored.seconds, correct)]
    else:
        minimisation = attack_spec.attack.kind == "minimization"
        eps_list = (None,) if search and minimisation else attack_spec.eps
        outcomes = [context.outcome(model, attack_spec, eps) for eps in eps_list]
    distance = torch.full_like(correct, torch.inf, dtype=torch.float64)
    for outcome in outcomes:
        fooled = outcome.success & correct
        distance = torch.minimum(distance, torch.where(fooled, outcome.distance.double(),
                                                       torch.inf))
    distance = torch.where(correct, distance, 0.0)
    spent = [o.propagations() for o in outcomes]
    worse = [o.returned_worse("minimization" if search and searched(attack_spec)
                              else attack_spec.attack.kind) for o in outcomes]
    return Found(distance=distance,
                 propagations=None if None in spent else sum(spent),
                 seconds=sum(o.seconds for o in outcomes),
                 returned_worse=None if None in worse else sum(worse))


def _outcome_of(arrays, seconds, correct):
    """A swept set's rows as an :class:`advx.Outcome` over the correctly classified samples."""
    columns = {name: torch.from_numpy(arrays[name]) for name in (
        "pred", "success", "distance", "queries", "forwards", "backwards", "best_distance",
        "out_of_budget")}
    return advx.Outcome(**columns, eligible=correct, seconds=seconds)


def area(distance, d_max):
    """The area under a security curve up to ``d_max``: mean of ``min(distance, d_max)``."""
    return float(distance.clamp(max=d_max).mean())


def optimality(distance, best, clean_accuracy):
    """AttackBench's optimality of per-sample ``distance`` against the per-sample ``best``
    (None when no sample was fooled beyond distance 0: the curves are all equal)."""
    finite = best[torch.isfinite(best)]
    d_max = float(finite.max()) if len(finite) else 0.0
    if d_max <= 0:
        return None
    a_best = area(best, d_max)
    scale = clean_accuracy * d_max - a_best
    if scale <= 0:
        return None
    return 1.0 - (area(distance, d_max) - a_best) / scale


def optimality_entry(context, model, norm, search):
    """The report entry of ``model`` and ``norm``: one row per attack (None without any)."""
    attacks = [a for a in context.attacks if a.norm == norm and not a.targeted
               and a.runs_on(model)]
    if not attacks:
        return None
    correct = context.clean_correct(model)
    found = [attack_found(context, model, a, search) for a in attacks]
    best = torch.stack([f.distance for f in found]).amin(0)
    clean = float(correct.float().mean())
    rows = [_row(attack, f, best, correct, clean) for attack, f in zip(attacks, found)]
    finite = best[torch.isfinite(best)]
    return {"model": model.id, "norm": norm, "clean_accuracy": clean,
            "d_max": float(finite.max()) if len(finite) else None,
            "attacks": sorted(rows, key=lambda r: -(r["optimality"] or 0.0)),
            "best_curve": distortion_curve(best, norm),
            "searched": [a.id for a in attacks if search and searched(a)]}


def _row(attack, found, best, correct, clean):
    distance = found.distance
    fooled = torch.isfinite(distance) & correct
    n = int(correct.sum())
    median = float(distance[correct].median()) if n else float("inf")
    return {"attack": attack.id, "attack_plugin": attack.name,
            "optimality": optimality(distance, best, clean),
            "success_rate": float(fooled.sum()) / n if n else None,
            "median_distance": None if median == float("inf") else median,
            "mean_propagations": found.propagations,
            "propagations_budget": attack.budget,
            "seconds": round(found.seconds, 3),
            "returned_worse": found.returned_worse,
            "best_found": int((torch.isfinite(best) & (distance <= best) & correct).sum()),
            "curve": distortion_curve(distance, attack.norm)}
