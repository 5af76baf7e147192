"""The ``ray`` executor: the shards of adversarial sets computed by the actors of a Ray cluster.

What runs where.  The driver (``advx run``) parses the spec, trains or loads the models, reads
the store, holds the lock of every set it computes and writes every byte of HDF5, exactly as
a local run does: a worker returns numpy arrays and never touches the store, so no HDF5 file
is written across nodes and a killed driver leaves the store as resumable as a killed local
run.  A unit of work is a shard of a set (set key x row range, at most the protocol's
``batch_size`` rows); shards the store already holds (complete sets, verified shards of
partial ones) are never submitted.

How sets run concurrently.  Protocols ask for sets one at a time, as they need them.  Rather
than guess, the run asks the protocol which sets it will read (``Protocol.requests``; the
robust-accuracy and minimal-perturbation protocols list every attack entry x eps x model) and,
because this executor declares ``prefetch``, obtains them together before the protocol runs:
the shards of every missing set go to the actors at once and the protocol then reads the
sets from the run's memo.  A protocol that lists nothing (the curve protocol, whose sweeps
depend on earlier results) still gains from the shards of each set it asks for running side
by side on all the actors.

The object store holds the samples and each model's module once per run (the driver puts
them the first time a set needs them, and a set's own small tensors once per set); units
carry only references.  Actors are long-lived: each keeps the last few models it loaded, by
weights digest, and the last few sets' jobs, so a model is unpickled once per actor, not once
per unit.  At most ``in_flight`` units are submitted at a time (default: two per actor), each
to the actor with the fewest in flight.

Faults.  An actor killed mid-unit (SIGKILL, a lost node) is restarted by Ray and the unit
retried (units are deterministic: a retry gives the same bits); an exception a unit raises is
not retried: it ends the run with its own type and message (an ``advx.UsageError`` stays a
usage error, exit 2).
"""

import advx
import attrs


def _address(instance, attribute, value):
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"address must be a Ray address (\"auto\", \"HOST:PORT\", "
                         f"\"ray://HOST:PORT\"), got {value!r}")


@attrs.frozen(kw_only=True)
class RayExecutor(advx.Executor):
    """Computes the shards of adversarial sets on the actors of a Ray cluster (``pip install
    advx[ray]``); the driver alone writes the store."""

    name = "ray"
    prefetch = True

    address: str | None = attrs.field(
        default=None, validator=_address,
        metadata={"help": "Ray cluster to join (\"auto\": the one running here); default: "
                          "start a local Ray instance sized to this machine"})
    workers: int | None = attrs.field(
        default=None, validator=advx.whole(1, optional=True),
        metadata={"help": "actors computing shards (default: the cluster's CPUs divided by "
                          "cpus_per_worker)"})
    cpus_per_worker: float = attrs.field(
        default=1.0, converter=advx.to_float, validator=advx.finite(0, 1024, low_open=True),
        metadata={"help": "CPUs Ray reserves for each actor"})
    in_flight: int | None = attrs.field(
        default=None, validator=advx.whole(1, optional=True),
        metadata={"help": "units submitted and not yet returned, at most (default: two per "
                          "actor)"})
    _state: dict = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def run(self, units):
        if not units:
            return
        if "pool" not in self._state:
            from .ray_pool import Pool  # imports ray: only when a set is to be computed

            self._state["pool"] = Pool(self)
        yield from self._state["pool"].run(units)

    def close(self):
        pool = self._state.pop("pool", None)
        if pool is not None:
            pool.close()
