"""The curve protocol: robust accuracy against eps, without one full attack per eps."""

import advx
import attrs

from . import curves
from .robust import RobustAccuracy, result_row
from .sanity import sanity_flags


@attrs.frozen(kw_only=True)
class Curve(RobustAccuracy):
    """Robust accuracy against eps over each attack's eps grid, with the per-sample worst case.

    Each attack entry's eps list (or range table) is its grid.  Without one attack per eps
    (:mod:`advx.plugins.protocols.curves`): a minimisation attack runs once, unbounded, and a
    sample is robust at an eps unless its minimal adversarial lies within it; a fixed-eps
    attack is probed per sample over the grid (a bisection guided by the clean margin), which
    *assumes monotonicity*: a sample fooled at an eps is fooled at every larger one (fewer
    than log2(K + 1) attack runs per sample for K eps, merged into one call per round when the
    attack takes a per-sample eps; each sweep cached like an adversarial set); a transfer
    attack is read at every eps.  A minimisation entry without eps uses the eps of the run's
    other attacks of its norm.  The worst case per model and norm counts a sample as robust
    at an eps only if it survives every attack of that norm whose grid holds that eps.
    ``results`` has a row per outcome computed on the way (minimisation attacks at eps None,
    transfer attacks per eps), not one per fixed-eps attack and eps.
    """

    name = "curve"

    def evaluate(self, context):
        return curve_report(context, curves.measure)

    def requests(self, context):
        """The sets :meth:`evaluate` reads, which an executor that computes concurrently
        obtains together (not robust-accuracy's sets: a curve reads none per grid eps but a
        transfer entry's)."""
        return curve_requests(context)


def curve_requests(context):
    """Per model and attack entry it runs on, the sets :func:`.curves.measure` reads: a
    minimisation attack's unbounded set (eps None), a transfer entry's set at each grid eps,
    and a fixed-eps attack's guided sweep over its grid."""
    requests = []
    for model in context.models:
        for attack in (a for a in context.attacks if a.runs_on(model)):
            grid = curves.grid_of(attack, context.attacks)
            if not grid or attack.attack.kind == "minimization":
                requests.append(advx.SetRequest(model, attack, None))
            elif attack.attack.access == "transfer":
                requests += [advx.SetRequest(model, attack, eps) for eps in grid]
            else:
                method = curves.GuidedSweep(grid, advx.reject_index(context.module(model)))
                requests.append(advx.SetRequest(model, attack, None, method))
    return requests


def curve_report(context, measure):
    """The curve protocol's results, each entry's :class:`~.curves.AttackCurve` coming from
    ``measure(context, model, attack_spec, grid)`` (:func:`.curves.measure` or one that
    chooses otherwise for some entries)."""
    clean, results, entries = {}, [], []
    for model in context.models:
        correct = context.clean_correct(model)
        clean[model.id] = float(correct.float().mean())
        measured = []
        for attack in context.attacks:
            if not attack.runs_on(model):
                continue
            grid = curves.grid_of(attack, context.attacks)
            if not grid:  # a minimisation attack alone in its norm, without eps
                outcome = context.outcome(model, attack, None)
                results.append(result_row(model, attack, None, outcome,
                                          context.robust_correct(model, outcome)))
                continue
            curve = measure(context, model, attack, grid)
            results += [result_row(model, attack, eps, o, context.robust_correct(model, o))
                        for eps, o in curve.outcomes]
            measured.append(curve)
        entries += [c.entry(model.id) for c in measured]
        entries += curves.worst_cases(model.id, measured, correct)
    return {"clean_accuracy": clean, "curves": entries, "results": results,
            "sanity": sanity_flags(context, results)}
