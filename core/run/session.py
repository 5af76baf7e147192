"""The runner: turns a validated spec into work units, computes them, and hands them to a protocol.

A :class:`Session` owns the test data, the models and the attacks of one run. Protocols ask it for
clean predictions and for attack outcomes of (model, attack, eps). Each outcome's adversarial set
is read from the cache, or computed batch by batch and stored there (:mod:`advx.sets`), with
seeds derived from the set's identity (:mod:`advx.units`) so that a rerun reproduces it exactly
on the same device. A transfer attack replays its source set, obtained the same way.
"""

import time

import attrs
import torch

from ..kernel.attack import Replay, TransferAttack
from ..kernel.errors import UsageError
from ..store.format import identity_digest, set_key
from ..store.identity import provenance, result_arrays, result_layout, set_identity, unit_seed
from ..store.obtain import obtain_set
from ..store.paths import cache_root
from ..store.weights import weights_digest
from ..train import zoo
from ..train.progress import progress_bar
from . import stack as defense_stack
from .spec import transfer_source
from .specdict import attack_spec_dict, model_spec_dict


@attrs.frozen
class Outcome:
    """Per-sample results of one attack at one eps on one model (tensors on the CPU)."""

    pred: torch.Tensor
    success: torch.Tensor
    distance: torch.Tensor
    queries: torch.Tensor
    eligible: torch.Tensor  # samples the attack is scored on (correct, and y != target)
    seconds: float  # compute time of the set, summed over its batches (also when read back)
    key: str = ""  # the set's cache key
    origin: str = "computed"  # computed, cache or resumed
    reused_batches: int = 0


class Session:
    """Data, models and attacks of one run, with memoised clean and adversarial outcomes."""

    def __init__(self, spec, registry, protocol, *, device="cpu", cache=None, progress=True):
        self.spec, self.registry, self.protocol = spec, registry, protocol
        self.device, self.cache, self.progress = device, cache, progress
        self.dataset = registry.create("datasets", spec.dataset.name, **spec.dataset.params)
        x, y = self.dataset.load("test")
        self.indices = _selection(y, protocol)  # test-set indices of the evaluated samples
        self.x, self.y = x[self.indices], y[self.indices]
        self.bounds = tuple(self.dataset.info.bounds)
        self.model_sources = {}
        self.cache_root = cache_root(cache)
        self._models, self._trained, self._clean, self._outcomes = {}, {}, {}, {}
        self._sets, self._digests = {}, {}
        # wall time spent computing, resuming or reading adversarial sets (the attack phase;
        # model training and loading excluded)
        self.set_seconds = 0.0
        self.observers = []

    @property
    def n(self):
        return len(self.x)

    def model(self, model_spec):
        """The module of a model entry: trained (by its training defense, if any) and cached
        on first use, behind its preprocessors."""
        if model_spec.id not in self._models:
            training, preprocessors = defense_stack.instances(self.registry, model_spec)
            trained = zoo.load_model(
                model_spec.plugin.name, self.dataset, params=model_spec.plugin.params,
                recipe=model_spec.train, checkpoint=model_spec.checkpoint, cache=self.cache,
                device=self.device, progress=self.progress, registry=self.registry,
                training=training)
            metadata = getattr(trained, "advx_metadata", {})
            self.model_sources[model_spec.id] = metadata.get("source", "unknown")
            self._trained[model_spec.id] = trained
            self._models[model_spec.id] = defense_stack.wrap(trained, preprocessors,
                                                             model_spec.adaptive)
        return self._models[model_spec.id]

    def _batches(self):
        size = self.protocol.batch_size
        for start in range(0, self.n, size):
            x = self.x[start:start + size].to(self.device)
            yield start, x, self.y[start:start + size].to(self.device)

    def clean_logits(self, model_spec):
        """Logits of the clean test inputs (CPU tensor, memoised)."""
        if model_spec.id not in self._clean:
            model, parts = self.model(model_spec), []
            with torch.inference_mode():
                for _, x, _ in self._batches():
                    parts.append(model(x).float().cpu())
            self._clean[model_spec.id] = torch.cat(parts)
        return self._clean[model_spec.id]

    def clean_correct(self, model_spec):
        return self.clean_logits(model_spec).argmax(1) == self.y

    def targets_for(self, attack_spec, model_spec, seed):
        """Target labels of a targeted attack entry (None when untargeted)."""
        if not attack_spec.targeted:
            return None
        classes = self.dataset.info.num_classes
        target = attack_spec.target
        if target == "next":
            return (self.y + 1) % classes
        if target == "least-likely":
            return self.clean_logits(model_spec).argmin(1)
        if target == "random":
            generator = torch.Generator().manual_seed(seed)
            offset = torch.randint(1, classes, self.y.shape, generator=generator)
            return (self.y + offset) % classes
        if target >= classes:
            raise UsageError(f"attack {attack_spec.id!r}: target {target} is not a class "
                             f"(the dataset has {classes})")
        return torch.full_like(self.y, target)

    def outcome(self, model_spec, attack_spec, eps):
        """The :class:`Outcome` of ``attack_spec`` at ``eps`` on ``model_spec`` (memoised)."""
        key = (model_spec.id, attack_spec.id, eps)
        if key not in self._outcomes:
            obtained = self.adversarial_set(model_spec, attack_spec, eps)
            self._outcomes[key] = self._outcome(model_spec, attack_spec, obtained)
            self._notify(model_spec, attack_spec, eps, self._outcomes[key])
        return self._outcomes[key]

    def adversarial_set(self, model_spec, attack_spec, eps):
        """The :class:`~advx.sets.Obtained` set of one unit: cached, resumed or computed."""
        memo = (model_spec.id, attack_spec.id, eps)
        if memo not in self._sets:
            self._sets[memo] = self._obtain(model_spec, attack_spec, eps)
        return self._sets[memo]

    def _obtain(self, model_spec, attack_spec, eps):
        model = self.model(model_spec)
        plugin = attack_spec.plugin
        attack = self.registry.create("attacks", plugin.name, **plugin.params)
        threat = attack_spec.threat(eps, self.bounds)
        source = None
        if isinstance(attack, TransferAttack):
            source = self.adversarial_set(*transfer_source(attack_spec, attack), eps).stored
        identity = self.set_identity(model_spec, attack_spec, attack, threat,
                                     source_key=source and source.key)
        base = identity_digest(identity)
        if source is not None:
            targets = torch.from_numpy(source.arrays["targets"])
            examples = torch.from_numpy(source.arrays["x_adv"])
        else:
            targets = self.targets_for(attack_spec, model_spec, unit_seed(base, "targets"))
            targets = torch.full_like(self.y, -1) if targets is None else targets

        def compute_batch(start, stop):
            x = self.x[start:stop].to(self.device)
            y = self.y[start:stop].to(self.device)
            t = targets[start:stop].to(self.device) if threat.targeted else None
            runner = attack if source is None else Replay(examples=examples[start:stop])
            return result_arrays(runner(model, x, y, threat, targets=t,
                                        seed=unit_seed(base, start)))

        fragment = self.spec_fragment(model_spec, attack_spec)
        label = f"{attack_spec.id} {threat} on {model_spec.id}"
        started = time.perf_counter()  # the attack phase: not training, not a source's set
        with progress_bar(label, self.n, enabled=self.progress) as advance:
            obtained = obtain_set(
                self.cache_root, set_key(identity),
                inputs={"y": self.y.numpy(), "indices": self.indices.numpy(),
                        "targets": targets.numpy()},
                layout=result_layout(self.x, threat), batch_size=self.protocol.batch_size,
                provenance=provenance(identity, spec_fragment=fragment, device=self.device),
                compute_batch=compute_batch, advance=advance)
        self.set_seconds += time.perf_counter() - started
        return obtained

    def set_identity(self, model_spec, attack_spec, attack, threat, source_key=None):
        """The identity of ``attack`` (built from ``attack_spec``) under ``threat`` on the
        model: what names its adversarial set (:func:`advx.units.set_identity`)."""
        return set_identity(
            model_name=model_spec.plugin.name, weights_sha256=self.weights_digest(model_spec),
            dataset_identity=self.dataset.identity(), n=self.n, attack=attack, threat=threat,
            selection=self.indices,
            target=attack_spec.target, seed=self.protocol.seed,
            batch_size=self.protocol.batch_size, source_key=source_key,
            defenses=defense_stack.identity(self.registry, model_spec))

    def spec_fragment(self, model_spec, attack_spec):
        """The spec entries a set's provenance records."""
        return {"model": model_spec_dict(model_spec), "attack": attack_spec_dict(attack_spec),
                "dataset": self.spec.to_dict()["dataset"],
                "protocol": {"name": self.spec.protocol.name, "seed": self.protocol.seed,
                             "batch_size": self.protocol.batch_size}}

    def _outcome(self, model_spec, attack_spec, obtained):
        arrays = obtained.stored.arrays
        eligible = self.clean_correct(model_spec)
        if attack_spec.targeted:
            eligible = eligible & (torch.from_numpy(arrays["targets"]) != self.y)
        return Outcome(pred=torch.from_numpy(arrays["pred"]),
                       success=torch.from_numpy(arrays["success"]),
                       distance=torch.from_numpy(arrays["distance"]),
                       queries=torch.from_numpy(arrays["queries"]),
                       eligible=eligible, seconds=obtained.stored.seconds,
                       key=obtained.stored.key, origin=obtained.origin,
                       reused_batches=obtained.reused_batches)

    def weights_digest(self, model_spec):
        """sha256 of the model's trained weights, without its preprocessors (memoised)."""
        if model_spec.id not in self._digests:
            self.model(model_spec)
            self._digests[model_spec.id] = weights_digest(self._trained[model_spec.id])
        return self._digests[model_spec.id]

    def _notify(self, model_spec, attack_spec, eps, outcome):
        unit = {"model": model_spec.id, "attack": attack_spec.id, "norm": attack_spec.norm,
                "eps": eps, "n": self.n}
        result = {"seconds": outcome.seconds, "cache": outcome.origin, "key": outcome.key,
                  "robust_accuracy": float(self.robust_correct(model_spec, outcome).float().mean()),
                  "attack_success_rate": success_rate(outcome)}
        for observer in self.observers:
            observer(unit, result)

    def robust_correct(self, model_spec, outcome):
        """Per sample: correct on the clean input and on the adversarial one."""
        return self.clean_correct(model_spec) & (outcome.pred == self.y)


def _selection(y, protocol):
    """Indices of the test samples a protocol evaluates: those of its ``classes`` (all when
    None), in dataset order, at most ``limit``."""
    index = torch.arange(len(y))
    if protocol.classes is not None:
        index = index[torch.isin(y, torch.tensor(list(protocol.classes)))]
    return index[:protocol.limit] if protocol.limit else index


def success_rate(outcome):
    """Fraction of eligible samples on which the attack succeeded (None if none are eligible)."""
    n = int(outcome.eligible.sum())
    return float((outcome.success & outcome.eligible).sum()) / n if n else None
