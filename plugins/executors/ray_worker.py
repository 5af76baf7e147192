"""The workers' side of the ``ray`` executor: a long-lived actor that computes units.

It receives a set's job by reference (the object store holds the model and the samples) and
keeps the last :data:`KEEP` models it loaded, by weights digest, the samples, and the last
:data:`KEEP` sets' jobs, so consecutive units of a set or a model cost no unpickling.
"""

import collections
import os

import advx
import attrs

KEEP = 4  # models and sets an actor keeps loaded


class ShardWorker:
    """Computes units: ``compute(key, [set_ref], start, stop) -> (arrays, seconds, where)``."""

    def __init__(self):
        self.models, self.data = collections.OrderedDict(), {}
        self.sets = collections.OrderedDict()

    def compute(self, key, holder, start, stop):
        work = self._work(key, holder[0])
        arrays, seconds = advx.Unit(work, start, stop).compute()
        return arrays, seconds, {"worker": _worker_name(), "device": str(work.job.device)}

    def _work(self, key, ref):
        if key not in self.sets:
            import ray

            payload = ray.get(ref)
            digest, [model_ref] = payload["model"]
            token, [x_ref] = payload["x"]
            model = _cached(self.models, digest, model_ref, KEEP)
            x = _cached(self.data, token, x_ref, None)
            job = attrs.evolve(payload["job"], model=model, x=x)
            self.sets[key] = advx.SetWork(key, job, payload["method"], payload["state"], digest)
        self.sets.move_to_end(key)
        while len(self.sets) > KEEP:
            self.sets.popitem(last=False)
        return self.sets[key]


def _cached(cache, name, ref, keep):
    """The value of ``ref`` kept in ``cache`` under ``name`` (at most ``keep`` values)."""
    if name not in cache:
        import ray

        cache[name] = ray.get(ref)
    if keep is not None:
        cache.move_to_end(name)
        while len(cache) > keep:
            cache.popitem(last=False)
    return cache[name]


def _worker_name():
    """Node id (its first 8 hex digits) and process id of this worker."""
    import ray

    return f"{ray.get_runtime_context().get_node_id()[:8]}/{os.getpid()}"
