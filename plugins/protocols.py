"""Built-in evaluation protocols."""

import advx
import attrs
import torch
from advx.run import curves
from advx.run.session import success_rate

from .sanity import sanity_flags


@attrs.frozen(kw_only=True)
class RobustAccuracy(advx.Protocol):
    """Clean and robust accuracy per model, attack and eps, with the per-sample worst case.

    A sample counts as robust under an attack when the model classifies both the clean input and
    the adversarial correctly; the worst case at an eps counts a sample as robust only if it
    survives every attack of the run with that norm and eps.  Sanity checks for gradient
    masking (:mod:`advx.plugins.sanity`) run over the results and are printed with the report.
    """

    name = "robust-accuracy"

    def evaluate(self, session):
        spec = session.spec
        clean, results, worst = {}, [], []
        for model in spec.models:
            correct = session.clean_correct(model)
            clean[model.id] = float(correct.float().mean())
            survivors = {}  # (norm, eps) -> (robust mask, attack ids)
            for attack in spec.attacks:
                for eps in attack.eps:
                    outcome = session.outcome(model, attack, eps)
                    robust = session.robust_correct(model, outcome)
                    results.append(_row(model, attack, eps, outcome, robust))
                    mask, ids = survivors.get((attack.norm, eps), (correct, []))
                    survivors[(attack.norm, eps)] = (mask & robust, ids + [attack.id])
            worst += [{"model": model.id, "norm": norm, "eps": eps,
                       "robust_accuracy": float(mask.float().mean()), "attacks": ids}
                      for (norm, eps), (mask, ids) in survivors.items()]
        return {"clean_accuracy": clean, "results": results, "worst_case": worst,
                "sanity": sanity_flags(session, results)}


def _row(model, attack, eps, outcome, robust):
    succeeded = outcome.success & outcome.eligible
    distances = outcome.distance[succeeded]
    return {
        "model": model.id,
        "attack": attack.id,
        "attack_plugin": attack.plugin.name,
        "norm": attack.norm,
        "eps": eps,
        "targeted": attack.targeted,
        "n": len(robust),
        "robust_accuracy": float(robust.float().mean()),
        "attack_success_rate": success_rate(outcome),
        "median_distance": float(distances.median()) if len(distances) else None,
        "mean_queries": float(outcome.queries.double().mean()),
        "seconds": round(outcome.seconds, 3),
        "set_key": outcome.key,
        "cache": outcome.origin,
    }


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

    def evaluate(self, session):
        measured = super().evaluate(session)
        measured["minimal_perturbation"] = [
            _minimal(session, model, norm) for model in session.spec.models
            for norm in _norms(session.spec)]
        return measured


def _norms(spec):
    return sorted({a.norm for a in spec.attacks if not a.targeted})


def _minimal(session, model, norm):
    correct = session.clean_correct(model)
    best = torch.where(correct, torch.inf, 0.0).double()
    attacks = [a for a in session.spec.attacks if a.norm == norm and not a.targeted]
    found_by = torch.full_like(session.y, -1)  # index into attacks; -1: none (or misclassified)
    for index, attack in enumerate(attacks):
        for eps in attack.eps:
            outcome = session.outcome(model, attack, eps)
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


@attrs.frozen(kw_only=True)
class Curve(RobustAccuracy):
    """Robust accuracy against eps over each attack's eps grid, with the per-sample worst case.

    Each attack entry's eps list (or range table) is its grid.  Without one attack per eps
    (:mod:`advx.run.curves`): a minimisation attack runs once, unbounded, and a sample is robust at
    an eps unless its minimal adversarial lies within it; a fixed-eps attack is probed per
    sample over the grid (:mod:`advx.run.curve_search`: a bisection guided by the clean margin),
    which *assumes monotonicity*: a sample fooled at an eps is fooled at every larger one (fewer
    than log2(K + 1) attack runs per sample for K eps, merged into one call per round when the
    attack takes a per-sample eps; each sweep cached like an adversarial set); a transfer
    attack is read at every eps.  A
    minimisation entry without eps uses the eps of the run's other attacks of its norm.  The
    worst case per model and norm counts a sample as robust at an eps only if it survives
    every attack of that norm whose grid holds that eps.  ``results`` has a row per outcome
    computed on the way (minimisation attacks at eps None, transfer attacks per eps), not one
    per fixed-eps attack and eps.
    """

    name = "curve"

    def evaluate(self, session):
        spec = session.spec
        clean, results, entries = {}, [], []
        for model in spec.models:
            correct = session.clean_correct(model)
            clean[model.id] = float(correct.float().mean())
            measured = []
            for attack in spec.attacks:
                grid = curves.grid_of(attack, spec.attacks)
                if not grid:  # a minimisation attack alone in its norm, without eps
                    outcome = session.outcome(model, attack, None)
                    results.append(_row(model, attack, None, outcome,
                                        session.robust_correct(model, outcome)))
                    continue
                curve = curves.measure(session, model, attack, grid)
                results += [_row(model, attack, eps, o, session.robust_correct(model, o))
                            for eps, o in curve.outcomes]
                measured.append(curve)
            entries += [c.entry(model.id) for c in measured]
            entries += curves.worst_cases(model.id, measured, correct)
        return {"clean_accuracy": clean, "curves": entries, "results": results,
                "sanity": sanity_flags(session, results)}


@advx.hookimpl
def advx_register_protocols(register):
    register(RobustAccuracy)
    register(MinimalPerturbation)
    register(Curve)

