"""The workers' side of the ``ray`` executor: a long-lived actor that computes units.

It receives a set's job by reference (the object store holds the model and the samples) and
keeps the last :data:`KEEP` models it loaded, by weights digest, the samples, and the last
:data:`KEEP` sets' jobs, so consecutive units of a set or a model cost no unpickling.  It
trains models too (``advx.TrainUnit``), with the plugins installed on its node.

Its device: the CPU for a run on cpu; for a run on cuda, the GPU Ray assigned it
(``gpus_per_worker``): Ray sets ``CUDA_VISIBLE_DEVICES`` to it, so torch sees it as ``cuda:0``.
"""

import collections
import io
import os

import advx
import attrs
import torch

KEEP = 4  # models and sets an actor keeps loaded


class ShardWorker:
    """Computes units (``compute(key, [set_ref], start, stop) -> (arrays, seconds, where)``)
    and trains models (``train(unit) -> (state, metadata, seconds, where)``)."""

    def __init__(self, gpus=0.0, threads=None):
        self.gpus = gpus  # the executor's gpus_per_worker: what Ray reserved for this actor
        if threads is not None:  # the driver's: same bits as a local run of the same spec
            torch.set_num_threads(threads)
        self.models, self.data = collections.OrderedDict(), {}
        self.sets = collections.OrderedDict()
        self.registry = None

    def compute(self, key, holder, start, stop):
        work = self._work(key, holder[0])
        arrays, seconds = advx.Unit(work, start, stop).compute()
        return arrays, seconds, self._where(work.job.device)

    def train(self, unit):
        device = self.device(unit.device)
        if self.registry is None:
            self.registry = advx.get_registry()  # the plugins installed on this node
        result = unit.train(registry=self.registry, device=device)
        return result.state, result.metadata, result.seconds, self._where(device)

    def device(self, run_device):
        """Where this actor computes for a run on ``run_device``: the CPU, or for a run on
        cuda its own GPU (``cuda:0``: the one Ray assigned it)."""
        if torch.device(run_device).type != "cuda":
            return torch.device("cpu")
        if not self.gpus:
            raise advx.UsageError("the run computes on cuda, but this ray worker reserved no "
                                  "GPU: set [executor] gpus_per_worker")
        if not torch.cuda.is_available():
            raise advx.UsageError(
                f"ray worker {_worker_name()}: [executor] gpus_per_worker = {self.gpus:g} "
                f"reserved GPU(s) {_gpu_ids()} for it, but torch sees no CUDA device there "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}, torch "
                f"{torch.__version__}); install a CUDA build of torch on that node, or run on "
                "CPUs: --device cpu and no gpus_per_worker")
        return torch.device("cuda", 0)

    def _where(self, device):
        where = {"worker": _worker_name(), "device": str(device)}
        if device.type == "cuda":
            where["gpus"] = _gpu_ids()
        return where

    def _work(self, key, ref):
        if key not in self.sets:
            import ray

            payload = ray.get(ref)
            device = self.device(payload["device"])
            digest, [model_ref] = payload["model"]
            token, [x_ref] = payload["x"]
            model = _cached(self.models, digest, lambda: placed(ray.get(model_ref), device),
                            KEEP)
            x = _cached(self.data, token, lambda: ray.get(x_ref), None)
            parts = placed(payload["job"], device)
            job = attrs.evolve(parts["job"], model=model, x=x, device=device)
            self.sets[key] = advx.SetWork(key, job, parts["method"], parts["state"], digest)
        self.sets.move_to_end(key)
        while len(self.sets) > KEEP:
            self.sets.popitem(last=False)
        return self.sets[key]


def placed(data, device):
    """The value torch serialised in ``data`` (``ray_pool.serialized``), its CUDA tensors on
    ``device`` (this worker's GPU) and its CPU tensors left on the CPU."""
    def place(storage, location):
        if device.type == "cuda" and location.startswith("cuda"):
            return storage.cuda(device.index or 0)
        return storage

    return torch.load(io.BytesIO(data), map_location=place, weights_only=False)


def _cached(cache, name, load, keep):
    """The value ``load()`` gives, kept in ``cache`` under ``name`` (at most ``keep``)."""
    if name not in cache:
        cache[name] = load()
    if keep is not None:
        cache.move_to_end(name)
        while len(cache) > keep:
            cache.popitem(last=False)
    return cache[name]


def _gpu_ids():
    import ray

    return [str(i) for i in ray.get_gpu_ids()]


def _worker_name():
    """Node id (its first 8 hex digits) and process id of this worker."""
    import ray

    return f"{ray.get_runtime_context().get_node_id()[:8]}/{os.getpid()}"
