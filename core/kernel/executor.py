"""Executors: where the shards of adversarial sets are computed.

A run's driver (the process running ``advx run``) decides what to compute.  It reads what the
store holds, takes the lock of every set it computes, and is the only process that writes
HDF5.  The rows no stored shard covers become :class:`Unit` s (a set x a row range); an
:class:`Executor` computes them where it likes and yields each one's result arrays back, in
any order, and the driver writes them through the set's writer (:mod:`advx.store.obtain`).
Every sample draws from a random stream of its own, so a unit's rows are the same bits on
any worker of one device type, however the rows were split.

``local`` (:class:`LocalExecutor`, the default) computes the units one after the other in the
driver, in order: exactly what a run did before executors existed.  An executor whose
:attr:`Executor.prefetch` is true computes units concurrently: the run then obtains the sets
its protocol declares (:meth:`advx.Protocol.requests`) together, before the protocol reads
them, so that independent sets run side by side (the built-in ``ray`` executor).
"""

import time
from typing import ClassVar

import attrs

from .budget import COUNTS, uncounted
from .protocol import SetJob, SetMethod

RESULT_NAMES = ("x_adv", "success", "distance", "pred", "queries")


def result_arrays(result):
    """An :class:`advx.AttackResult` (or a dict of tensors with its fields) as numpy arrays
    named like the set's results; propagation counts it lacks (a result not made by
    :meth:`advx.Attack.__call__`) are filled with their "not counted" value."""
    get = (result.get if isinstance(result, dict)
           else lambda name: getattr(result, name, None))
    arrays = {name: get(name).detach().cpu().numpy() for name in RESULT_NAMES}
    for name in COUNTS:
        value = get(name)
        arrays[name] = (uncounted(name, len(arrays["success"]), arrays["distance"].dtype)
                        if value is None else value.detach().cpu().numpy())
    return arrays


@attrs.frozen(eq=False)
class SetWork:
    """One set to compute: its key, job and method, the method's prepared state, and the
    digest of the job's model (workers cache loaded models by it)."""

    key: str
    job: SetJob
    method: SetMethod
    state: object = None
    model_digest: str = ""


@attrs.frozen(eq=False)
class Unit:
    """A unit of work: the rows ``start:stop`` of a set."""

    work: SetWork
    start: int
    stop: int

    def compute(self):
        """``(arrays, seconds)``: the rows' results as numpy arrays and the time they took."""
        began = time.perf_counter()
        work = self.work
        result = work.method.compute(work.job, self.start, self.stop, work.state)
        return result_arrays(result), time.perf_counter() - began


@attrs.frozen(eq=False)
class UnitResult:
    """What an executor yields for a unit: its arrays, compute seconds and where it ran (a
    JSON-ready dict: ``worker`` and ``device``, kept in the set's provenance)."""

    unit: Unit
    arrays: dict
    seconds: float
    where: dict = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Executor:
    """Base class of executors (``advx_register_executors``).

    :meth:`run` gets the units a run needs and yields a :class:`UnitResult` for each, in any
    order; it must raise a unit's own exception (an :class:`advx.UsageError` stays one) rather
    than retry it, and may retry a unit whose worker died (units are deterministic).
    :meth:`train` trains models (a prefetching executor gets every classifier a run must
    train at once, before any set).  :meth:`close` frees what the executor started; a run
    calls it once at its end.
    """

    name: ClassVar[str]
    prefetch: ClassVar[bool] = False  # computes units concurrently: obtain sets together

    def run(self, units):
        raise NotImplementedError

    def train(self, units):
        """Yield a ``TrainResult`` per model training unit (:class:`advx.TrainUnit`), in any
        order, with the same errors as :meth:`run`.  Default: ``unit.train()`` for each, in
        this process, in order."""
        for unit in units:
            yield unit.train()

    def close(self):
        """Free workers and connections (nothing to do for an executor that starts none)."""


@attrs.frozen(kw_only=True)
class LocalExecutor(Executor):
    """Computes every unit in the running process, one after the other, in order."""

    name = "local"

    def run(self, units):
        for unit in units:
            arrays, seconds = unit.compute()
            yield UnitResult(unit, arrays, seconds,
                             {"worker": "local", "device": str(unit.work.job.device)})
