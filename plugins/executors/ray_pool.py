"""The driver's side of the ``ray`` executor: the actors, the object store, units in flight.

See :mod:`advx.plugins.executors.ray_executor` for the design.  A :class:`Pool` lives from a
run's first computed shard to its end (:meth:`Pool.close`).
"""

import collections
import logging

import advx
import attrs
import ray

from .ray_worker import ShardWorker

RESTARTS = 4  # times Ray restarts a killed actor
RETRIES = 3  # times Ray retries a unit whose actor died (never one that raised)


class Pool:
    """The actors of one run, and what it put in the object store."""

    def __init__(self, executor):
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=executor.address, include_dashboard=False,
                     logging_level=logging.WARNING)
        cpus = executor.cpus_per_worker
        count = executor.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        actor = ray.remote(ShardWorker).options(num_cpus=cpus, max_restarts=RESTARTS,
                                                max_task_retries=RETRIES)
        self.actors = [actor.remote() for _ in range(count)]
        self.busy = [0] * count  # units in flight per actor
        self.limit = executor.in_flight or 2 * count
        self.refs = {}  # model digest, data token or set key -> object ref
        self.data = {}  # id(tensor) -> (tensor, token): the tensor is kept, so ids stay unique

    def run(self, units):
        """Yield an ``advx.UnitResult`` per unit as each returns, at most ``limit`` in flight."""
        queue, flight = collections.deque(units), {}
        while queue or flight:
            while queue and len(flight) < self.limit:
                unit = queue.popleft()
                index = min(range(len(self.actors)), key=self.busy.__getitem__)
                ref = self.actors[index].compute.remote(
                    unit.work.key, [self._set(unit.work)], unit.start, unit.stop)
                flight[ref] = (unit, index)
                self.busy[index] += 1
            [ref], _ = ray.wait(list(flight), num_returns=1)
            unit, index = flight.pop(ref)
            self.busy[index] -= 1
            arrays, seconds, where = _result(ref, unit)
            yield advx.UnitResult(unit, arrays, seconds, where)

    def close(self):
        """Stop the actors (and the Ray instance, if this pool started it)."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started:
            ray.shutdown()

    def _set(self, work):
        """The object ref of a set's job (model and samples by reference), put once."""
        if work.key not in self.refs:
            job = work.job
            token = self._token(job.x)
            light = attrs.evolve(job, model=None, x=None)
            self.refs[work.key] = ray.put({
                "job": light, "method": work.method, "state": work.state,
                "model": (work.model_digest, [self._put(work.model_digest, job.model)]),
                "x": (token, [self._put(token, job.x)])})
        return self.refs[work.key]

    def _token(self, tensor):
        held = self.data.setdefault(id(tensor), (tensor, f"data-{len(self.data)}"))
        return held[1]

    def _put(self, name, value):
        if name not in self.refs:
            self.refs[name] = ray.put(value)
        return self.refs[name]


def _result(ref, unit):
    """``(arrays, seconds, where)`` of a returned unit; its own exception if it raised one."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise advx.AdvxError(f"ray: {exc}") from None
    except ray.exceptions.RayActorError as exc:
        raise advx.AdvxError(
            f"ray: the worker computing rows {unit.start}:{unit.stop} of set "
            f"{unit.work.key[:12]} died {RETRIES + 1} times: {exc}") from None
