"""The runner: turns a validated spec into work units, computes them, and hands them to a protocol.

A :class:`Session` owns the test data, the models and the attacks of one run. Protocols ask it for
clean predictions and for attack outcomes of (model, attack, eps); each outcome is computed once,
batch by batch, with a seed derived from the unit's key so that a rerun reproduces it exactly on
the same device.
"""

import hashlib
import json
import time

import attrs
import torch

from . import zoo
from .errors import UsageError
from .progress import progress_bar


def unit_seed(*parts):
    """A deterministic 63-bit seed from the JSON of ``parts``."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return int(digest[:15], 16)


@attrs.frozen
class Outcome:
    """Per-sample results of one attack at one eps on one model (tensors on the CPU)."""

    pred: torch.Tensor
    success: torch.Tensor
    distance: torch.Tensor
    queries: torch.Tensor
    eligible: torch.Tensor  # samples the attack is scored on (correct, and y != target)
    seconds: float


class Session:
    """Data, models and attacks of one run, with memoised clean and adversarial outcomes."""

    def __init__(self, spec, registry, protocol, *, device="cpu", cache=None, progress=True):
        self.spec, self.registry, self.protocol = spec, registry, protocol
        self.device, self.cache, self.progress = device, cache, progress
        self.dataset = registry.create("datasets", spec.dataset.name, **spec.dataset.params)
        x, y = self.dataset.load("test")
        limit = protocol.limit or len(x)
        self.x, self.y = x[:limit], y[:limit]
        self.bounds = tuple(self.dataset.info.bounds)
        self.model_sources = {}
        self._models, self._clean, self._outcomes = {}, {}, {}
        self.observers = []

    @property
    def n(self):
        return len(self.x)

    def model(self, model_spec):
        """The trained module of a model entry (trained and cached on first use)."""
        if model_spec.id not in self._models:
            self._models[model_spec.id] = zoo.load_model(
                model_spec.plugin.name, self.dataset, params=model_spec.plugin.params,
                recipe=model_spec.train, checkpoint=model_spec.checkpoint, cache=self.cache,
                device=self.device, progress=self.progress, registry=self.registry)
            metadata = getattr(self._models[model_spec.id], "advx_metadata", {})
            self.model_sources[model_spec.id] = metadata.get("source", "unknown")
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
            self._outcomes[key] = self._compute(model_spec, attack_spec, eps)
            self._notify(model_spec, attack_spec, eps, self._outcomes[key])
        return self._outcomes[key]

    def _compute(self, model_spec, attack_spec, eps):
        model = self.model(model_spec)
        plugin = attack_spec.plugin
        attack = self.registry.create("attacks", plugin.name, **plugin.params)
        threat = attack_spec.threat(eps, self.bounds)
        base = [self.protocol.seed, model_spec.id, attack_spec.id, attack_spec.norm, eps]
        targets = self.targets_for(attack_spec, model_spec, unit_seed(*base, "targets"))
        parts, started = [], time.perf_counter()
        label = f"{attack_spec.id} {threat} on {model_spec.id}"
        with progress_bar(label, self.n, enabled=self.progress) as advance:
            for start, x, y in self._batches():
                t = None if targets is None else targets[start:start + len(x)].to(self.device)
                result = attack(model, x, y, threat, targets=t, seed=unit_seed(*base, start))
                parts.append([result.pred, result.success, result.distance, result.queries])
                advance(len(x))
        pred, success, distance, queries = (torch.cat([p[i] for p in parts]).cpu()
                                            for i in range(4))
        eligible = self.clean_correct(model_spec)
        if targets is not None:
            eligible = eligible & (targets != self.y)
        return Outcome(pred, success, distance, queries, eligible,
                       time.perf_counter() - started)

    def _notify(self, model_spec, attack_spec, eps, outcome):
        unit = {"model": model_spec.id, "attack": attack_spec.id, "norm": attack_spec.norm,
                "eps": eps, "n": self.n}
        result = {"seconds": outcome.seconds,
                  "robust_accuracy": float(self.robust_correct(model_spec, outcome).float().mean()),
                  "attack_success_rate": success_rate(outcome)}
        for observer in self.observers:
            observer(unit, result)

    def robust_correct(self, model_spec, outcome):
        """Per sample: correct on the clean input and on the adversarial one."""
        return self.clean_correct(model_spec) & (outcome.pred == self.y)


def success_rate(outcome):
    """Fraction of eligible samples on which the attack succeeded (None if none are eligible)."""
    n = int(outcome.eligible.sum())
    return float((outcome.success & outcome.eligible).sum()) / n if n else None
