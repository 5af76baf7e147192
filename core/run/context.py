"""The run context: data, models and adversarial sets of one run, as protocols see them.

:class:`Session` implements :class:`advx.RunContext`.  It selects the test samples, builds each
model entry with its defenses (trained and cached on first use), and obtains every set through
one pipeline (:mod:`advx.run.pipeline`), memoising clean logits, sets and outcomes.  The
session's executor computes the sets' shards; one that runs them concurrently gets the sets
the protocol declares all at once (:meth:`Session.prefetch`).
"""

import torch

from ..kernel.budget import COUNTS
from ..kernel.errors import UsageError
from ..kernel.executor import LocalExecutor
from ..kernel.model import reject_index
from ..kernel.progress import no_progress
from ..kernel.protocol import Outcome, SetRequest
from ..store.identity import set_identity
from ..store.paths import cache_root
from ..train import stack
from ..train.builder import Builder
from ..train.loop import resolve_device
from . import pipeline
from .spec_write import attack_spec_dict, dataset_table, model_spec_dict

PREFETCH_SETS = 64  # sets opened (locked, partial files open) at once by a prefetch


class Session:
    """Implements :class:`advx.RunContext` for a :class:`advx.RunSpec`."""

    def __init__(self, spec, registry, *, device="cpu", cache=None, progress=no_progress,
                 executor=None):
        self.spec, self.registry, self.protocol = spec, registry, spec.protocol
        self.executor = executor or spec.executor or LocalExecutor()
        self.device, self.cache_root = resolve_device(device), cache_root(cache)
        self.progress = progress
        self.dataset, self.tables = spec.dataset, spec.tables
        x, y = self.dataset.load("test")
        self.indices = selection(y, self.protocol)  # test-set indices of the samples
        if not len(self.indices):
            raise UsageError(f"{spec.source}: [protocol] selects no test sample (classes "
                             f"{list(self.protocol.classes or [])}, limit "
                             f"{self.protocol.limit}); the test split has {len(y)}")
        self.x, self.y = x[self.indices], y[self.indices]
        self.bounds = tuple(self.dataset.info.bounds)
        self.builder = Builder(self.dataset, registry, self.device, self.cache_root, progress)
        self._built, self._clean, self._sets, self._outcomes = {}, {}, {}, {}
        # wall time spent computing, resuming or reading adversarial sets (the attack phase;
        # model training and loading excluded)
        self.set_seconds = 0.0
        self.observers = []

    @property
    def models(self):
        return self.spec.models

    @property
    def attacks(self):
        return self.spec.attacks

    @property
    def n(self):
        return len(self.x)

    # -- models ----------------------------------------------------------------------------

    def built(self, model):
        """The :class:`~advx.train.stack.BuiltModel` of a model entry (memoised)."""
        if model.id not in self._built:
            self._built[model.id] = stack.build(model, self.builder)
        return self._built[model.id]

    def module(self, model):
        return self.built(model).module

    def model_source(self, model):
        """Where the classifier's weights came from: trained, cache, checkpoint, untrained."""
        return self.built(model).source

    def weights_digest(self, model):
        """sha256 of the classifier's trained weights (without the defenses around it)."""
        return self.built(model).classifier_digest()

    def clean_logits(self, model):
        if model.id not in self._clean:
            module, parts = self.module(model), []
            with torch.inference_mode():
                for start in range(0, self.n, self.protocol.batch_size):
                    x = self.x[start:start + self.protocol.batch_size].to(self.device)
                    parts.append(module(x).float().cpu())
            self._clean[model.id] = torch.cat(parts)
        return self._clean[model.id]

    def clean_correct(self, model):
        return self.clean_logits(model).argmax(1) == self.y

    def robust_correct(self, model, outcome):
        rejected = reject_index(self.module(model))
        survived = outcome.pred == self.y
        if rejected is not None:
            survived |= outcome.pred == rejected
        return self.clean_correct(model) & survived

    def targets_for(self, attack, model, seed):
        """Target labels of a targeted attack entry (None when untargeted)."""
        if not attack.targeted:
            return None
        classes = self.dataset.info.num_classes
        target = attack.target
        if target == "next":
            return (self.y + 1) % classes
        if target == "least-likely":
            return self.clean_logits(model)[:, :classes].argmin(1)
        if target == "random":
            generator = torch.Generator().manual_seed(seed)
            offset = torch.randint(1, classes, self.y.shape, generator=generator)
            return (self.y + offset) % classes
        if target >= classes:
            raise UsageError(f"attack {attack.id!r}: target {target} is not a class "
                             f"(the dataset has {classes})")
        return torch.full_like(self.y, target)

    # -- sets ------------------------------------------------------------------------------

    def obtain(self, request):
        memo = _memo(request)
        if memo not in self._sets:
            self._sets[memo] = pipeline.obtain(self, request)
        return self._sets[memo]

    def prefetch(self, requests):
        """Obtain the sets of ``requests`` together, so that an executor that computes units
        concurrently runs independent sets side by side; the protocol then reads them from
        the memo.  Transfer entries' source sets come first (their sets replay them)."""
        sources = [s for s in map(pipeline.source_request, requests) if s is not None]
        for batch in (sources, list(requests)):
            fresh = list({_memo(r): r for r in batch if _memo(r) not in self._sets}.values())
            for start in range(0, len(fresh), PREFETCH_SETS):
                chunk = fresh[start:start + PREFETCH_SETS]
                for request, obtained in zip(chunk, pipeline.obtain_many(self, chunk)):
                    self._sets[_memo(request)] = obtained

    def outcome(self, model, attack, eps):
        if not attack.runs_on(model):
            raise UsageError(f"attack entry {attack.id!r} does not run on model {model.id!r} "
                             f"(its models = {list(attack.models)})")
        key = (model.id, attack.id, eps)
        if key not in self._outcomes:
            obtained = self.obtain(SetRequest(model, attack, eps))
            self._outcomes[key] = self._outcome(model, attack, obtained)
            self._notify(model, attack, eps, self._outcomes[key])
        return self._outcomes[key]

    def _outcome(self, model, attack, obtained):
        arrays = obtained.stored.arrays
        eligible = self.clean_correct(model)
        if attack.targeted:
            eligible = eligible & (torch.from_numpy(arrays["targets"]) != self.y)
        return Outcome(pred=torch.from_numpy(arrays["pred"]),
                       success=torch.from_numpy(arrays["success"]),
                       distance=torch.from_numpy(arrays["distance"]),
                       queries=torch.from_numpy(arrays["queries"]),
                       **{name: torch.from_numpy(arrays[name]) for name in COUNTS},
                       eligible=eligible, seconds=obtained.stored.seconds,
                       key=obtained.stored.key, origin=obtained.origin,
                       reused_batches=obtained.reused_batches)

    def set_identity(self, model, attack, threat, method=None, source_key=None):
        """The identity of ``attack`` (an entry) under ``threat`` on ``model`` (an entry):
        what names its adversarial set (:func:`advx.store.identity.set_identity`)."""
        return set_identity(
            model_name=model.name, weights_sha256=self.built(model).digest,
            defenses=stack.defense_identity(model), dataset_identity=self.dataset.identity(),
            indices=self.indices, attack=attack.attack, threat=threat, target=attack.target,
            seed=self.protocol.seed, method=method, source_key=source_key,
            budget=attack.budget)

    def spec_fragment(self, model, attack):
        """The spec entries a set's provenance records."""
        return {"model": model_spec_dict(model), "attack": attack_spec_dict(attack),
                "dataset": dataset_table(self.spec),
                "protocol": {"name": self.protocol.name, "seed": self.protocol.seed}}

    def _notify(self, model, attack, eps, outcome):
        unit = {"model": model.id, "attack": attack.id, "norm": attack.norm, "eps": eps,
                "n": self.n}
        result = {"seconds": outcome.seconds, "cache": outcome.origin, "key": outcome.key,
                  "robust_accuracy": float(self.robust_correct(model, outcome).float().mean()),
                  "attack_success_rate": outcome.success_rate()}
        for observer in self.observers:
            observer(unit, result)


def _memo(request):
    """What tells two sets of a run apart in the memo."""
    return (request.model.id, request.attack.id, request.eps, pipeline.method_key(request))


def selection(y, protocol):
    """Indices of the test samples a protocol evaluates: those of its ``classes`` (all when
    None), in dataset order, at most ``limit``."""
    index = torch.arange(len(y))
    if protocol.classes is not None:
        index = index[torch.isin(y, torch.tensor(list(protocol.classes)))]
    return index[:protocol.limit] if protocol.limit else index
