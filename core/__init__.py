"""advx: robustness evaluation of image classifiers against adversarial examples.

The public API::

    import advx
    threat = advx.ThreatModel(norm="linf", eps=0.3)
    attack = advx.get_attack("pgd", steps=40)
    result = attack(model, x, y, threat)        # -> advx.AttackResult
"""

from ._version import __version__
from .host.hookspecs import hookimpl
from .host.registry import Registry
from .kernel.attack import Attack, AttackResult, FixedEpsilonAttack, MinimizationAttack
from .kernel.dataset import Dataset, DatasetInfo
from .kernel.defense import Defense, Preprocessor, TrainingDefense
from .kernel.errors import (
    AdvxError,
    DuplicatePluginError,
    ExitCode,
    ParameterError,
    PluginLoadError,
    ThreatModelViolation,
    UnknownPluginError,
    UsageError,
)
from .kernel.model import ModelPlugin
from .kernel.protocol import Protocol
from .kernel.threat import NORMS, ThreatModel
from .store.weights import load_weights, save_weights, weights_digest
from .train.loop import TrainRecipe, evaluate_accuracy, train_model

_registry = None


def get_registry(refresh=False):
    """The registry of every installed plugin, loaded once from the ``advx`` entry points."""
    global _registry
    if _registry is None or refresh:
        _registry = Registry.from_entrypoints()
    return _registry


def get_attack(name, **params):
    """An attack instance: ``attack(model, x, y, threat) -> AttackResult``."""
    return get_registry().create("attacks", name, **params)


def get_dataset(name, **params):
    """A dataset instance with ``.info`` and ``.load("train" | "test") -> (x, y)``."""
    return get_registry().create("datasets", name, **params)


def get_model(name, dataset="mnist", **kwargs):
    """A trained (cached) or checkpoint-loaded model; see :func:`advx.zoo.load_model`."""
    from .train.zoo import load_model

    return load_model(name, dataset=dataset, **kwargs)


def get_defense(name, **params):
    """A defense instance (a preprocessor or a training defense); ``preset`` picks a preset."""
    return get_registry().create("defenses", name, **params)


def list_plugins(kind=None):
    """Descriptions (name, kind, plugin, summary, params) of registered classes of ``kind``."""
    registry = get_registry()
    kinds = [kind] if kind else ["attacks", "models", "datasets", "defenses", "protocols"]
    return [entry.describe() for k in kinds for entry in registry.entries(k)]


__all__ = [
    "AdvxError", "Attack", "AttackResult", "Dataset", "DatasetInfo", "Defense",
    "DuplicatePluginError", "ExitCode", "FixedEpsilonAttack", "MinimizationAttack", "ModelPlugin",
    "NORMS", "ParameterError", "PluginLoadError", "Preprocessor", "Protocol", "Registry",
    "ThreatModel", "ThreatModelViolation", "TrainRecipe", "TrainingDefense",
    "UnknownPluginError", "UsageError", "__version__", "evaluate_accuracy", "get_attack",
    "get_dataset", "get_defense", "get_model", "get_registry", "hookimpl",
    "list_plugins", "load_weights", "save_weights", "train_model", "weights_digest",
]
