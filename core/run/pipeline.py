"""One pipeline for every adversarial set a run asks for: identity, targets, seeds, computation.

A :class:`advx.SetRequest` names a model entry, an attack entry and an eps, and optionally a
:class:`advx.SetMethod` (how the rows are computed when it is not one attack call at that eps;
the curve protocol's search over an eps grid is one).  A transfer entry's set replays its
source set, which the pipeline obtains first.  The set is read from the cache or computed part
by part (:func:`advx.store.obtain.obtain_set`); every sample draws from a random stream seeded
by the set's identity and its test-set index, so the parts' sizes do not matter.
"""

import time

import torch

from ..kernel.attack import Replay, TransferAttack
from ..kernel.errors import UsageError
from ..kernel.protocol import SetJob, SetMethod, SetRequest
from ..store.format import canonical_json, identity_digest, set_key
from ..store.identity import provenance, result_arrays, result_layout, sample_seeds, unit_seed
from ..store.obtain import obtain_set


class AttackOnce(SetMethod):
    """The plain set: the attack called once per part, at the request's eps."""

    def identity(self):
        return None

    def compute(self, job, start, stop, state):
        x, y, targets, seeds = job.rows(start, stop)
        return job.attack(job.model, x, y, job.threat, targets=targets, seed=seeds)


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


def obtain(session, request):
    """The :class:`~advx.store.obtain.Obtained` set of ``request`` in ``session``."""
    model, entry = request.model, request.attack
    threat = entry.threat(request.eps, session.bounds)
    method, source = request.method, None
    if isinstance(entry.attack, TransferAttack) and method is not None:
        raise UsageError(f"attack {entry.id!r} is a transfer attack: its set replays the source "
                         "set at each eps, and a set method cannot compute it")
    if isinstance(entry.attack, TransferAttack):
        source = session.obtain(SetRequest(entry.source, entry.source_entry(), request.eps))
        source = source.stored
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
                 clean_logits=session.clean_logits(model), device=session.device)
    return _obtain(session, request, identity, job, method)


def _obtain(session, request, identity, job, method):
    label = f"{request.attack.id} {job.threat} on {request.model.id}"
    started = time.perf_counter()  # the attack phase: not training, not a source's set
    with session.progress(label, session.n) as advance:
        obtained = obtain_set(
            session.cache_root, set_key(identity),
            inputs={"y": session.y.numpy(), "indices": session.indices.numpy(),
                    "targets": job.targets.numpy()},
            layout=result_layout(session.x, job.threat), batch_size=session.protocol.batch_size,
            provenance=provenance(identity, device=session.device, spec_fragment=session.
                                  spec_fragment(request.model, request.attack)),
            compute_rows=lambda start, stop, state: result_arrays(
                method.compute(job, start, stop, state)),
            prepare=lambda: method.prepare(job), advance=advance)
    session.set_seconds += time.perf_counter() - started
    return obtained
