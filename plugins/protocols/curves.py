"""Robust accuracy against eps over a grid, without paying one full attack per eps.

Each attack entry of a run gives, per sample, a *threshold*: the index of the smallest eps of
the grid ``e_0 < ... < e_{K-1}`` at which the sample is not robust (K: robust at every eps;
0 for a sample the model misclassifies clean).  Robust accuracy at ``e_j`` is the fraction of
samples whose threshold exceeds ``j``, so every curve is non-increasing.  How thresholds are
found depends on the attack:

- A minimisation attack runs once, unbounded (its set at eps None, shared with every protocol
  that asks for it).  A sample is robust at ``e_j`` unless the model classifies it correctly
  and the attack's example is misclassified within ``e_j``.  Exact; no assumption.
- A fixed-eps attack is probed per sample over the grid (:mod:`.curve_search`),
  *assuming monotonicity*: a sample fooled at some eps is fooled at every larger one.  Each
  round probes every open sample at one index of its interval ``(lo, hi)`` (largest index
  known robust, smallest known fooled): one attack call per round when the attack takes a
  per-sample eps, else one per distinct index, each sample seeded from its own stream, its
  probe count and the index.  A pilot of samples is
  bisected; the others start from a guess fitted on the pilot's thresholds against the clean
  margin, then bisect.  A misclassified example at distance ``d`` also certifies, exactly,
  that the sample falls at every grid eps whose ball holds ``d``.  One host sync per round.
  Where the attack is not monotone (random starts, a weak attack at a larger eps) the search
  can miss a non-monotone sample, and the curve is that of the monotone envelope the probes
  saw.
- Behind a detector, monotonicity fails: a larger eps is more often detected, so a sample
  fooled at a small eps may be robust at a larger one.  There every sample *walks* up the grid
  from the smallest eps until a probe fools it (:func:`.curve_search.walk_up`, method
  "eps-walk"): robust at ``e_j`` means no probe at any eps up to ``e_j`` fooled it, the
  attacker's worst case over the eps of the ball.  Up to K probes per sample.
- A transfer attack replays its source set, which exists per eps: its robust accuracy is read
  at every grid eps (method "per eps").

"Fooled" and "robust" have robust accuracy's sense throughout: the prediction differs from the
label (also for targeted attacks) and is not a detector's rejection.  A grid eps "holds" a
distance when the core would accept an example at that distance inside its ball
(:meth:`advx.ThreatModel.contains`, same tolerance).

A sweep is an adversarial set like any other (``context.obtain`` with the :class:`GuidedSweep`
method: cached, resumable, seeded from its identity: the attack's set identity at eps None plus
``{"method": {"name": "guided-bisection", "eps": grid}}``).  Its rows are per sample the
smallest misclassified example found over the probes (the clean input where none): ``x_adv``,
``success``, ``distance`` and ``pred`` as in any set, and ``queries`` holding the number of
probes (attack calls) the sample took.  The thresholds are derived from those rows, the same
way after computing and after reading the cache.
"""


import advx
import attrs
import torch

from . import curve_search
from .curve_search import allowances, certified, find_thresholds, fit_guide

METHOD = "guided-bisection"
WALK = "eps-walk"  # behind a detector: each sample climbs the grid (curve_search.walk_up)
REVISION = 1  # bumped when the search changes its results (its constants join the identity)
WORST_CASE = "worst case"  # the attack name of worst-case curves (as the pictures draw them)


@attrs.frozen(eq=False)
class AttackCurve:
    """One attack entry's thresholds over its grid, and where they came from."""

    attack: object  # the AttackSpec
    grid: tuple  # sorted eps
    robust: torch.Tensor  # (N, K) booleans: robust at each grid eps
    method: str  # "minimal distances", "guided bisection" or "per eps"
    probes: torch.Tensor | None = None  # int64 per sample (guided bisection)
    outcomes: tuple = ()  # (eps, Outcome) pairs read on the way (result rows)
    key: str = ""
    origin: str = ""

    def entry(self, model_id):
        """The report's curve entry."""
        entry = {"model": model_id, "attack": self.attack.id, "norm": self.attack.norm,
                 "eps": list(self.grid), "robust_accuracy": accuracies(self.robust),
                 "method": self.method}
        if self.probes is not None:
            entry["probes_per_sample"] = float(self.probes.double().mean())
        if self.key:
            entry.update(set_key=self.key, cache=self.origin)
        return entry


class GuidedSweep(advx.SetMethod):
    """The rows of a sweep of a fixed-eps attack over ``grid``: per sample the smallest
    misclassified example the guided search found, and its probe count as ``queries``."""

    def __init__(self, grid, rejected=None):
        self.grid, self.rejected = tuple(grid), rejected
        self.walk = rejected is not None  # behind a detector: no monotonicity (walk_up)

    def identity(self):
        if self.walk:
            return {"name": WALK, "eps": list(self.grid), "revision": REVISION}
        return {"name": METHOD, "eps": list(self.grid), "revision": REVISION,
                "search": {"pilot": curve_search.PILOT, "guided_probes": curve_search.
                           GUIDED_PROBES, "bandwidth": curve_search.BANDWIDTH,
                           "floor": curve_search.FLOOR}}

    def threats(self, job):
        return [job.threat.with_eps(e) for e in self.grid]

    def prepare(self, job):
        """The pilot of the whole set, bisected, and the guide fitted on it (none for a walk)."""
        if self.walk:
            return None
        return fit_guide(job.attack, job.model, job.x, job.y, self.threats(job),
                         seeds=job.seeds, targets=job.targets if job.threat.targeted else None,
                         clean_logits=job.clean_logits, device=job.device,
                         rejected=self.rejected, budget=job.budget)

    def compute(self, job, start, stop, state):
        x, y, targets, seeds = job.rows(start, stop)
        pilot, found, guide = state if state is not None else (None, None, None)
        skip = torch.zeros(stop - start, dtype=torch.bool)
        if pilot is not None:
            inside = (pilot >= start) & (pilot < stop)
            skip[pilot[inside] - start] = True
        rows = find_thresholds(job.attack, job.model, x, y, self.threats(job), seeds=seeds,
                               targets=targets, guide=guide, skip=skip.to(job.device),
                               clean_logits=job.clean_logits[start:stop].to(job.device),
                               rejected=self.rejected, walk=self.walk, budget=job.budget)
        if pilot is not None:  # the pilot's rows: as the pilot found them
            at = (pilot[inside] - start).to(job.device)
            for name, value in rows.items():
                value[at] = found[name][inside.to(found[name].device)].to(value.dtype)
        return rows


def grid_of(attack_spec, attacks):
    """The sorted eps grid of an entry: its own eps, or (a minimisation attack without eps)
    every eps of the run's attacks of its norm; empty when there is none."""
    own = {e for e in attack_spec.eps if e is not None}
    if not own:
        own = {e for a in attacks if a.norm == attack_spec.norm for e in a.eps if e is not None}
    return tuple(sorted(own))


def fooled(context, model, pred):
    """Per sample: the prediction is neither the label nor a detector's rejection."""
    rejected = advx.reject_index(context.module(model))
    out = pred != context.y
    return out if rejected is None else out & (pred != rejected)


def measure(context, model, attack_spec, grid):
    """The :class:`AttackCurve` of one entry on one model over ``grid`` (see module doc)."""
    correct = context.clean_correct(model)
    attack = attack_spec.attack
    if attack.kind == "minimization":
        outcome = context.outcome(model, attack_spec, None)
        threshold = thresholds(correct, fooled(context, model, outcome.pred), outcome.distance,
                               allowances(grid, attack_spec.norm))
        return AttackCurve(attack_spec, grid, robust_table(threshold, len(grid)),
                           "minimal distances",
                           outcomes=((None, outcome),), key=outcome.key, origin=outcome.origin)
    if attack.access == "transfer":
        return per_eps(context, model, attack_spec, grid)
    return sweep(context, model, attack_spec, grid)


def per_eps(context, model, attack_spec, grid):
    """The :class:`AttackCurve` of one set per grid eps (method "per eps")."""
    outcomes = tuple((e, context.outcome(model, attack_spec, e)) for e in grid)
    robust = torch.stack([context.robust_correct(model, o) for _, o in outcomes], 1)
    return AttackCurve(attack_spec, grid, robust, "per eps", outcomes=outcomes)


def sweep(context, model, attack_spec, grid):
    """The guided-bisection :class:`AttackCurve` of a fixed-eps attack: read, resumed or
    computed."""
    method, obtained = swept(context, model, attack_spec, grid)
    name = "eps walk" if method.walk else "guided bisection"
    arrays = {k: torch.from_numpy(v) for k, v in obtained.stored.arrays.items()}
    threshold = thresholds(context.clean_correct(model), fooled(context, model, arrays["pred"]),
                           arrays["distance"], allowances(grid, attack_spec.norm))
    return AttackCurve(attack_spec, grid, robust_table(threshold, len(grid)), name,
                       probes=arrays["queries"], key=obtained.stored.key, origin=obtained.origin)


def swept(context, model, attack_spec, grid):
    """``(method, obtained)``: the :class:`GuidedSweep` of a fixed-eps attack entry over
    ``grid`` on a model and its set (``context.obtain`` memoises it: a second call reads
    nothing)."""
    method = GuidedSweep(grid, advx.reject_index(context.module(model)))
    return method, context.obtain(advx.SetRequest(model, attack_spec, None, method))


def thresholds(correct, misclassified, distance, allow):
    """Per sample the threshold index: 0 if misclassified clean, else the first grid eps that
    holds its misclassified example, else K."""
    k = len(allow)
    fallen = torch.where(misclassified, certified(allow, distance), k)
    return torch.where(correct, fallen, 0).long()


def robust_table(threshold, k):
    """(N, K) booleans: robust at grid index j when j < threshold."""
    return torch.arange(k, device=threshold.device) < threshold.unsqueeze(1)


def accuracies(robust):
    """Robust accuracy per grid eps, as floats."""
    return robust.double().mean(0).tolist() if len(robust) else [None] * robust.shape[1]


def worst_cases(model_id, curves, correct):
    """Per norm, the per-sample worst case over ``curves``: robust at an eps of the union of
    their grids only if robust under every curve whose grid holds that eps."""
    entries = []
    for norm in sorted({c.attack.norm for c in curves}):
        group = [c for c in curves if c.attack.norm == norm]
        union = sorted({e for c in group for e in c.grid})
        robust = correct.unsqueeze(1).expand(-1, len(union)).clone()
        for curve in group:
            columns = torch.tensor([union.index(e) for e in curve.grid], dtype=torch.long)
            robust[:, columns] &= curve.robust
        entries.append({"model": model_id, "attack": WORST_CASE, "norm": norm, "eps": union,
                        "robust_accuracy": accuracies(robust), "method": "worst case",
                        "attacks": [c.attack.id for c in group]})
    return entries
