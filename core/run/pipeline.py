"""One pipeline for every adversarial set a run asks for: identity, targets, seeds, computation.

A :class:`advx.SetRequest` names a model entry, an attack entry and an eps, and optionally a
:class:`advx.SetMethod` (how the rows are computed when it is not one attack call at that eps;
the curve protocol's search over an eps grid is one).  A transfer entry's set replays its
source set, which the pipeline obtains first.  The set is read from the cache or computed part
by part: :func:`obtain_many` opens the sets (:func:`advx.store.obtain.open_set`), hands the
parts they miss to the session's executor (:mod:`advx.kernel.executor`: in this process by
default, on Ray workers with the ``ray`` executor) and writes each result as it returns, in
this process alone.  Every sample draws from a random stream seeded by the set's identity and
its test-set index, so the parts' sizes, order and workers do not matter.
"""

import time

import attrs
import torch

from ..kernel.attack import Replay, TransferAttack
from ..kernel.errors import UsageError
from ..kernel.executor import SetWork, Unit
from ..kernel.protocol import SetJob, SetMethod, SetRequest
from ..store.format import canonical_json, identity_digest, set_key
from ..store.identity import provenance, result_layout, sample_seeds, unit_seed
from ..store.obtain import PendingSet, open_set


class AttackOnce(SetMethod):
    """The plain set: the attack called once per part, at the request's eps."""

    def identity(self):
        return None

    def compute(self, job, start, stop, state):
        x, y, targets, seeds = job.rows(start, stop)
        return job.attack(job.model, x, y, job.threat, targets=targets, seed=seeds,
                          budget=job.budget)


class ReplaySource(SetMethod):
    """A transfer set: the examples of the source set, evaluated on the target."""

    def __init__(self, source):
        self.source = source  # the StoredSet of the source attack on the source model

    def identity(self):
        return None

    def compute(self, job, start, stop, state):
        x, y, targets, seeds = job.rows(start, stop)
        examples = torch.from_numpy(self.source.arrays["x_adv"][start:stop])
        return Replay(examples=examples)(job.model, x, y, job.threat, targets=targets,
                                         seed=seeds)


def method_key(request):
    """What tells two requests of one entry and eps apart: their method's identity."""
    method = request.method
    return canonical_json(None if method is None else method.identity())


def source_request(request):
    """The request of a transfer entry's source set (None for any other entry)."""
    entry = request.attack
    if not isinstance(entry.attack, TransferAttack):
        return None
    return SetRequest(entry.source, entry.source_entry(), request.eps)


def obtain(session, request):
    """The :class:`~advx.store.obtain.Obtained` set of ``request`` in ``session``."""
    return obtain_many(session, [request])[0]


def obtain_many(session, requests):
    """The :class:`~advx.store.obtain.Obtained` sets of ``requests``, in order: those the store
    holds are read; the missing shards of the others go to the session's executor together,
    and this process writes each result as it comes back."""
    plans = {}  # key -> Plan: a set asked for twice is computed (and locked) once
    keys = []
    for request in requests:
        plan = _plan(session, request)
        plans.setdefault(plan.key, plan)
        keys.append(plan.key)
    plans = list(plans.values())
    label = (f"{plans[0].request.attack.id} {plans[0].job.threat} on {plans[0].request.model.id}"
             if len(plans) == 1 else f"{len(plans)} adversarial sets")
    started = time.perf_counter()  # the attack phase: not training, not a source's set
    with session.progress(label, session.n * len(plans)) as advance:
        opened = {}
        try:
            for plan in plans:
                opened[plan.key] = _open(session, plan, advance)
            obtained = _compute(session, plans, opened, advance)
        finally:
            for item in opened.values():
                if isinstance(item, PendingSet):
                    item.release()  # a no-op for the sets that finished
    session.set_seconds += time.perf_counter() - started
    return [obtained[key] for key in keys]


@attrs.frozen(eq=False)
class Plan:
    """What one set needs before its rows can be computed."""

    request: SetRequest
    identity: dict
    key: str
    job: SetJob
    method: SetMethod


def _plan(session, request):
    """The :class:`Plan` of ``request``: identity, targets, seeds (a transfer entry's source set
    is obtained first)."""
    model, entry = request.model, request.attack
    threat = entry.threat(request.eps, session.bounds)
    method, source = request.method, None
    if isinstance(entry.attack, TransferAttack) and method is not None:
        raise UsageError(f"attack {entry.id!r} is a transfer attack: its set replays the source "
                         "set at each eps, and a set method cannot compute it")
    if isinstance(entry.attack, TransferAttack):
        source = session.obtain(source_request(request)).stored
        method = ReplaySource(source)
    method = method or AttackOnce()
    identity = session.set_identity(model, entry, threat, method=method.identity(),
                                    source_key=None if source is None else source.key)
    if source is not None:
        targets = torch.from_numpy(source.arrays["targets"])
    else:
        targets = session.targets_for(entry, model, unit_seed(identity_digest(identity),
                                                              "targets"))
        targets = torch.full_like(session.y, -1) if targets is None else targets
    job = SetJob(model=session.module(model), attack=entry.attack, threat=threat, x=session.x,
                 y=session.y, targets=targets, seeds=sample_seeds(identity, session.indices),
                 clean_logits=session.clean_logits(model), device=session.device,
                 budget=entry.budget)
    return Plan(request, identity, set_key(identity), job, method)


def _open(session, plan, advance):
    request = plan.request
    return open_set(
        session.cache_root, plan.key,
        inputs={"y": session.y.numpy(), "indices": session.indices.numpy(),
                "targets": plan.job.targets.numpy()},
        layout=result_layout(session.x, plan.job.threat),
        provenance=provenance(plan.identity, device=session.device, spec_fragment=session.
                              spec_fragment(request.model, request.attack)),
        advance=advance)


def _compute(session, plans, opened, advance):
    """Key -> Obtained for every plan: the executor computes the missing parts of the pending
    sets (a set's method prepared once, here), and each set is finished once its last part
    is written.  The progress display's status counts the parts (units) done of all, and the
    workers they came from."""
    units, left = [], {}
    for plan in plans:
        pending = opened[plan.key]
        if not isinstance(pending, PendingSet):
            continue
        todo = pending.parts(session.protocol.batch_size)
        left[plan.key] = len(todo)
        if todo:
            work = SetWork(plan.key, plan.job, plan.method, plan.method.prepare(plan.job),
                           session.built(plan.request.model).digest)
            units += [Unit(work, start, stop) for start, stop in todo]
    obtained = {k: v for k, v in opened.items() if not isinstance(v, PendingSet)}
    obtained.update({k: opened[k].finish() for k, n in left.items() if n == 0})
    workers = set()
    if units:
        advance(0, status=f"0/{len(units)} units")
    for done, result in enumerate(session.executor.run(units), 1):
        key, unit = result.unit.work.key, result.unit
        workers.add(result.where.get("worker"))
        opened[key].write(unit.start, unit.stop, result.arrays, result.seconds, result.where)
        advance(0, status=f"{done}/{len(units)} units, {len(workers)} "
                          f"worker{'s' if len(workers) > 1 else ''}")
        left[key] -= 1
        if left[key] == 0:
            obtained[key] = opened[key].finish()
    return obtained
