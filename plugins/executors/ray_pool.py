"""The driver's side of the ``ray`` executor: the actors, the object store, units in flight.

See :mod:`advx.plugins.executors.ray_executor` for the design.  A :class:`Pool` lives from a
run's first unit (a model to train or a shard to compute) to its end (:meth:`Pool.close`).
"""

import collections
import io
import logging
import math

import advx
import attrs
import ray
import torch

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
        try:
            count = actor_count(executor, ray.cluster_resources())
        except advx.UsageError:
            if self.started:
                ray.shutdown()
            raise
        actor = ray.remote(ShardWorker).options(**actor_options(executor))
        # Actors compute with the driver's torch thread count: a CPU result's bits can depend on
        # it (reductions split across threads), and a run's report must equal a local run's.
        threads = torch.get_num_threads()
        self.actors = [actor.remote(executor.gpus_per_worker, threads) for _ in range(count)]
        self.busy = [0] * count  # units in flight per actor
        self.limit = executor.in_flight or 2 * count
        self.refs = {}  # model digest, data token or set key -> object ref
        self.data = {}  # id(tensor) -> (tensor, token): the tensor is kept, so ids stay unique

    def run(self, units):
        """Yield an ``advx.UnitResult`` per shard as each returns."""
        def submit(actor, unit):
            return actor.compute.remote(unit.work.key, [self._set(unit.work)], unit.start,
                                        unit.stop)

        for unit, (arrays, seconds, where) in self._flow(units, submit, _rows):
            yield advx.UnitResult(unit, arrays, seconds, where)

    def train(self, units):
        """Yield an ``advx.TrainResult`` per model training unit as each returns."""
        def submit(actor, unit):
            return actor.train.remote(unit)

        for unit, (state, metadata, seconds, where) in self._flow(units, submit, _training):
            yield advx.TrainResult(unit, state, metadata, seconds, where)

    def close(self):
        """Stop the actors (and the Ray instance, if this pool started it)."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started:
            ray.shutdown()

    def _flow(self, items, submit, describe):
        """``(item, value)`` as each item's call returns, at most ``limit`` in flight, each
        submitted to the actor with the fewest in flight."""
        queue, flight = collections.deque(items), {}
        while queue or flight:
            while queue and len(flight) < self.limit:
                item = queue.popleft()
                index = min(range(len(self.actors)), key=self.busy.__getitem__)
                flight[submit(self.actors[index], item)] = (item, index)
                self.busy[index] += 1
            [ref], _ = ray.wait(list(flight), num_returns=1)
            item, index = flight.pop(ref)
            self.busy[index] -= 1
            yield item, _result(ref, describe(item))

    def _set(self, work):
        """The object ref of a set's job (model and samples by reference), put once."""
        if work.key not in self.refs:
            job = work.job
            token = self._token(job.x)
            light = attrs.evolve(job, model=None, x=None)
            self.refs[work.key] = ray.put({
                "device": str(job.device),
                "job": serialized({"job": light, "method": work.method, "state": work.state}),
                "model": (work.model_digest,
                          [self._put(work.model_digest, lambda: serialized(job.model))]),
                "x": (token, [self._put(token, lambda: job.x)])})
        return self.refs[work.key]

    def _token(self, tensor):
        held = self.data.setdefault(id(tensor), (tensor, f"data-{len(self.data)}"))
        return held[1]

    def _put(self, name, value):
        if name not in self.refs:
            self.refs[name] = ray.put(value())
        return self.refs[name]


def actor_options(executor):
    """Ray's options of each actor: the CPUs and GPUs it reserves, its restarts and retries."""
    return {"num_cpus": executor.cpus_per_worker, "num_gpus": executor.gpus_per_worker,
            "max_restarts": RESTARTS, "max_task_retries": RETRIES}


def actor_count(executor, resources):
    """How many actors to start on a cluster of ``resources`` (``ray.cluster_resources()``):
    ``workers``, else as many as its GPUs (with ``gpus_per_worker``) or CPUs hold.  Refuses
    actors the cluster cannot hold (they would wait for ever, and their units with them)."""
    gpus, per = resources.get("GPU", 0.0), executor.gpus_per_worker
    cpus, cpus_per = resources.get("CPU", 0.0), executor.cpus_per_worker
    if per and gpus < per:
        raise advx.UsageError(f"[executor] gpus_per_worker = {per:g}, but the Ray cluster has "
                              f"{gpus:g} GPU(s): no worker fits; lower it, or add GPU nodes")
    count = executor.workers or max(1, _fits(gpus, per) if per else _fits(cpus, cpus_per))
    for have, each, what in ((gpus, per, "GPU"), (cpus, cpus_per, "CPU")):
        if each and _fits(have, each) < count:
            raise advx.UsageError(
                f"[executor] workers = {count} x {what.lower()}s_per_worker = {each:g}: "
                f"{count * each:g} {what}s, but the Ray cluster has {have:g}; allowed: at most "
                f"{_fits(have, each)} workers, or fewer {what}s each")
    return count


def _fits(have, each):
    """How many shares of ``each`` fit in ``have`` (floats: 1 / 3 thirds make 3)."""
    return math.floor(have / each + 1e-9)


def serialized(value):
    """``value`` as bytes torch can load on a worker with its tensors placed there (models and
    a set's prepared state: their CUDA tensors move to the worker's own GPU)."""
    buffer = io.BytesIO()
    torch.save(value, buffer, pickle_module=ray.cloudpickle,
               pickle_protocol=ray.cloudpickle.DEFAULT_PROTOCOL)
    return buffer.getvalue()


def _rows(unit):
    return f"the worker computing rows {unit.start}:{unit.stop} of set {unit.work.key[:12]}"


def _training(unit):
    return f"the worker training {unit.label}"


def _result(ref, describe):
    """The value of a returned call; the unit's own exception if it raised one."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise advx.AdvxError(f"ray: {exc}") from None
    except ray.exceptions.RayActorError as exc:
        raise advx.AdvxError(f"ray: {describe} died {RETRIES + 1} times: {exc}") from None
