"""Robust accuracy against eps over a grid, without paying one full attack per eps.

Each attack entry of a run gives, per sample, a *threshold*: the index of the smallest eps of
the grid ``e_0 < ... < e_{K-1}`` at which the sample is not robust (K: robust at every eps;
0 for a sample the model misclassifies clean).  Robust accuracy at ``e_j`` is the fraction of
samples whose threshold exceeds ``j``, so every curve is non-increasing.  How thresholds are
found depends on the attack:

- A minimisation attack runs once, unbounded (its set at eps None, shared with every protocol
  that asks for it).  A sample is robust at ``e_j`` unless the model classifies it correctly
  and the attack's example is misclassified within ``e_j``.  Exact; no assumption.
- A fixed-eps attack is probed per sample over the grid (:mod:`advx.curve_search`),
  *assuming monotonicity*: a sample fooled at some eps is fooled at every larger one.  Each
  round probes every open sample at one index of its interval ``(lo, hi)`` (largest index
  known robust, smallest known fooled): one attack call per round when the attack takes a
  per-sample eps, else one per distinct index, seeded from the sweep's identity, the batch,
  the round and the index.  A pilot of samples is
  bisected; the others start from a guess fitted on the pilot's thresholds against the clean
  margin, then bisect.  A misclassified example at distance ``d`` also certifies, exactly,
  that the sample falls at every grid eps whose ball holds ``d``.  One host sync per round.
  Where the attack is not monotone (random starts, a weak attack at a larger eps) the search
  can miss a non-monotone sample, and the curve is that of the monotone envelope the probes
  saw.
- A transfer attack replays its source set, which exists per eps: its robust accuracy is read
  at every grid eps (method "per eps").

"Fooled" and "robust" have robust accuracy's sense throughout: the prediction differs from the
label (also for targeted attacks).  A grid eps "holds" a distance when the core would accept an
example at that distance inside its ball (:meth:`advx.ThreatModel.contains`, same tolerance).

A sweep is stored like an adversarial set (:func:`advx.sets.obtain_set`: cached, resumable,
seeded from its identity: the attack's set identity at eps None plus ``{"curve": {"eps":
grid, "method": "guided bisection"}}``).  Its rows are per sample the smallest misclassified example
found over the probes (the clean input where none): ``x_adv``, ``success``, ``distance`` and
``pred`` as in any set, and ``queries`` holding the number of probes (attack calls) the sample
took.  The thresholds are derived from those rows, the same way after computing and after
reading the cache.
"""

import time

import attrs
import numpy as np
import torch

from ..store.format import identity_digest, set_key
from ..store.identity import provenance, result_layout, unit_seed
from ..store.obtain import obtain_set
from ..train.progress import progress_bar
from .curve_search import allowances, certified, find_thresholds


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


def grid_of(attack_spec, attacks):
    """The sorted eps grid of an entry: its own eps, or (a minimisation attack without eps)
    every eps of the run's attacks of its norm; empty when there is none."""
    own = {e for e in attack_spec.eps if e is not None}
    if not own:
        own = {e for a in attacks if a.norm == attack_spec.norm for e in a.eps if e is not None}
    return tuple(sorted(own))


def measure(session, model_spec, attack_spec, grid):
    """The :class:`AttackCurve` of one entry on one model over ``grid`` (see module doc)."""
    correct = session.clean_correct(model_spec)
    attack = session.registry.create("attacks", attack_spec.plugin.name,
                                     **attack_spec.plugin.params)
    if attack.kind == "minimization":
        outcome = session.outcome(model_spec, attack_spec, None)
        threshold = thresholds(correct, outcome.pred != session.y, outcome.distance,
                               allowances(grid, attack_spec.norm))
        return AttackCurve(attack_spec, grid, robust_table(threshold, len(grid)),
                           "minimal distances",
                           outcomes=((None, outcome),), key=outcome.key, origin=outcome.origin)
    if attack.access == "transfer":
        outcomes = tuple((e, session.outcome(model_spec, attack_spec, e)) for e in grid)
        robust = torch.stack([session.robust_correct(model_spec, o) for _, o in outcomes], 1)
        return AttackCurve(attack_spec, grid, robust, "per eps", outcomes=outcomes)
    return sweep(session, model_spec, attack_spec, attack, grid)


def sweep(session, model_spec, attack_spec, attack, grid):
    """The guided-bisection :class:`AttackCurve` of a fixed-eps attack: read, resumed or
    computed."""
    unbounded = attack_spec.threat(None, session.bounds)
    identity = session.set_identity(model_spec, attack_spec, attack, unbounded)
    identity["curve"] = {"eps": list(grid), "method": "guided bisection"}
    base = identity_digest(identity)
    targets = session.targets_for(attack_spec, model_spec, unit_seed(base, "targets"))
    targets = torch.full_like(session.y, -1) if targets is None else targets
    threats = [attack_spec.threat(e, session.bounds) for e in grid]
    model, device = session.model(model_spec), session.device
    clean_logits = session.clean_logits(model_spec)

    def compute_batch(start, stop):
        x, y = session.x[start:stop].to(device), session.y[start:stop].to(device)
        t = targets[start:stop].to(device) if unbounded.targeted else None
        found = find_thresholds(attack, model, x, y, threats, targets=t,
                                clean_logits=clean_logits[start:stop].to(device),
                                seed=lambda round_, index: unit_seed(base, start, round_, index))
        return {name: value.cpu().numpy() for name, value in found.items()}

    label = f"{attack_spec.id} {attack_spec.norm} sweep over {len(grid)} eps on {model_spec.id}"
    started = time.perf_counter()
    with progress_bar(label, session.n, enabled=session.progress) as advance:
        obtained = obtain_set(
            session.cache_root, set_key(identity),
            inputs={"y": session.y.numpy(), "indices": np.arange(session.n, dtype=np.int64),
                    "targets": targets.numpy()},
            layout=result_layout(session.x, unbounded), batch_size=session.protocol.batch_size,
            provenance=provenance(identity, device=session.device,
                                  spec_fragment=session.spec_fragment(model_spec, attack_spec)),
            compute_batch=compute_batch, advance=advance)
    session.set_seconds += time.perf_counter() - started
    arrays = {k: torch.from_numpy(v) for k, v in obtained.stored.arrays.items()}
    threshold = thresholds(session.clean_correct(model_spec), arrays["pred"] != session.y,
                           arrays["distance"], allowances(grid, attack_spec.norm))
    return AttackCurve(attack_spec, grid, robust_table(threshold, len(grid)), "guided bisection",
                       probes=arrays["queries"], key=obtained.stored.key, origin=obtained.origin)


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


WORST_CASE = "worst case"  # the attack name of worst-case curves (as advx.pictures draws them)
