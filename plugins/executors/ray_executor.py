"""The ``ray`` executor: the shards of adversarial sets computed by the actors of a Ray cluster.

What runs where.  The driver (``advx run``) parses the spec, loads the models, reads the
store, holds the lock of every set it computes and writes every byte of HDF5, exactly as a
local run does: a worker returns numpy arrays and tensors and never touches the store, so no
HDF5 file is written across nodes and a killed driver leaves the store as resumable as a
killed local run.  A unit of work is a shard of a set (set key x row range, at most the
protocol's ``batch_size`` rows); shards the store already holds (complete sets, verified
shards of partial ones) are never submitted.  Before any set, the classifiers the weights
cache lacks train on the actors, one training unit per model, side by side
(:mod:`advx.train.units`): a worker returns the trained state and the driver stores it as a
local training does.  A worker loads the training split through the dataset plugin on its
own node.

Devices.  A run's device type (``--device``) is its workers' too: with ``gpus_per_worker``
each actor reserves that share of a GPU (or that many GPUs) and computes on the GPU Ray
assigns it (``cuda:0`` under the ``CUDA_VISIBLE_DEVICES`` Ray sets); without it actors compute
on CPUs.  Models and a set's prepared state travel as torch serialisations whose CUDA tensors
land on the worker's own GPU.  A run on cuda needs ``gpus_per_worker``; one on cpu refuses it.

How sets run concurrently.  Protocols ask for sets one at a time, as they need them.  Rather
than guess, the run asks the protocol which sets it will read (``Protocol.requests``; the
robust-accuracy and minimal-perturbation protocols list every attack entry x eps x model, the
curve protocol its sweeps) and, because this executor declares ``prefetch``, obtains them
together before the protocol runs: the shards of every missing set go to the actors at once
and the protocol then reads the sets from the run's memo.  A protocol that lists nothing
(minimal-perturbation with ``eps_search``, whose sweeps depend on earlier results) still
gains from the shards of each set it asks for running side by side on all the actors.

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

MAX_GPUS = 64  # GPUs one worker may reserve, at most


def _gpus(instance, attribute, value):
    """0 (CPU workers), a fraction in (0, 1] (workers share a GPU) or a whole number."""
    if not advx.is_finite_number(value) or not (
            0 <= value <= 1 or (1 < value <= MAX_GPUS and value == int(value))):
        raise ValueError(f"{attribute.name} must be 0 (workers on CPUs), a fraction in (0, 1] "
                         f"(workers sharing a GPU) or a whole number of GPUs up to "
                         f"{MAX_GPUS}, got {value!r}")


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
                          "cpus_per_worker, or with gpus_per_worker its GPUs divided by that)"})
    cpus_per_worker: float = attrs.field(
        default=1.0, converter=advx.to_float, validator=advx.finite(0, 1024, low_open=True),
        metadata={"help": "CPUs Ray reserves for each actor"})
    gpus_per_worker: float = attrs.field(
        default=0.0, converter=advx.to_float, validator=_gpus,
        metadata={"help": "GPUs Ray reserves for each actor: 0 (CPU actors), a fraction in "
                          "(0, 1] (actors sharing a GPU) or a whole number; a run on cuda "
                          "needs it, and each actor computes on the GPU Ray assigns it"})
    in_flight: int | None = attrs.field(
        default=None, validator=advx.whole(1, optional=True),
        metadata={"help": "units submitted and not yet returned, at most (default: two per "
                          "actor)"})
    _state: dict = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def run(self, units):
        if units:
            self.check_device(units[0].work.job.device)
            yield from self._pool().run(units)

    def train(self, units):
        if units:
            self.check_device(units[0].device)
            yield from self._pool().train(units)

    def check_device(self, device):
        """Refuse a run whose device (a ``torch.device``) is not of the workers' type
        (``gpus_per_worker``)."""
        kind = device.type
        if kind == "cuda" and not self.gpus_per_worker:
            raise advx.UsageError(
                "the run computes on cuda (--device): give the ray workers GPUs with [executor] "
                "gpus_per_worker (a fraction in (0, 1] to share a GPU, or a whole number)")
        if kind != "cuda" and self.gpus_per_worker:
            raise advx.UsageError(
                f"[executor] gpus_per_worker = {self.gpus_per_worker:g} puts the ray workers on "
                f"GPUs, but the run computes on {kind} (--device): run on cuda, or leave "
                "gpus_per_worker out")

    def _pool(self):
        if "pool" not in self._state:
            from .ray_pool import Pool  # imports ray: only when there is work to do

            self._state["pool"] = Pool(self)
        return self._state["pool"]

    def close(self):
        pool = self._state.pop("pool", None)
        if pool is not None:
            pool.close()
