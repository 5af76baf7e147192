"""advx: robustness evaluation of image classifiers against adversarial examples.

The public API::

    import advx
    threat = advx.ThreatModel(norm="linf", eps=0.3)
    attack = advx.get_attack("pgd", steps=40)
    result = attack(model, x, y, threat)        # -> advx.AttackResult

Plugins import ``advx`` (and ``advx.testing`` in their tests) and nothing else of advx: every
name they need is here.  Names load on first use, so ``import advx`` (and ``advx --version``)
imports neither torch nor any plugin.  The layers behind them: ``advx.kernel`` (the types),
``advx.host`` (hooks, plugin manager, registry), ``advx.store`` (sets and weights on disk),
``advx.train`` (training and building defended models), ``advx.run`` (specs and runs).
"""

import importlib

from ._version import __version__  # noqa: F401  (in __all__)

_EXPORTS = {
    "kernel.accounting": ("for_samples",),
    "kernel.attack": ("Attack", "AttackResult", "FixedEpsilonAttack", "MinimizationAttack",
                      "Replay", "TransferAttack"),
    "kernel.dataset": ("Dataset", "DatasetInfo"),
    "kernel.defense": ("BuildContext", "Defense", "Detected", "Detector", "ModelDefense",
                       "Preprocessed", "Preprocessor", "TrainingDefense"),
    "kernel.executor": ("Executor", "LocalExecutor", "SetWork", "Unit", "UnitResult"),
    "kernel.generative": ("GenerativeModel", "class_reconstructions", "offers_reconstructions"),
    "kernel.entries": ("NAIVE_SUFFIX", "AttackSpec", "ModelSpec", "RunSpec"),
    "kernel.errors": ("AdvxError", "DuplicatePluginError", "ExitCode", "ParameterError",
                      "PluginLoadError", "ThreatModelViolation", "UnknownPluginError",
                      "UsageError"),
    "kernel.model": ("InvariantBatches", "ModelPlugin", "fold_rejection", "reject_index"),
    "kernel.params": ("MAX_SCALE", "boolean", "finite", "is_finite_number", "plugin_params",
                      "plugin_table", "to_float", "whole"),
    "kernel.progress": ("no_progress",),
    "kernel.protocol": ("Outcome", "Protocol", "RunContext", "SetJob", "SetMethod",
                        "SetRequest"),
    "kernel.random": ("SampleStreams",),
    "kernel.recipe": ("TrainRecipe",),
    "kernel.threat": ("NORMS", "PER_SAMPLE_NORMS", "ThreatModel"),
    "host.hookspecs": ("hookimpl", "hookspec"),
    "host.registry": ("Registry",),
    "store.weights": ("load_weights", "save_weights", "weights_digest"),
    "train.loop": ("evaluate_accuracy", "train_model"),
    "train.units": ("TrainResult", "TrainUnit"),
}
_RENAMED = {  # public name -> (module, attribute)
    "derive_seeds": ("kernel.random", "derive"),
    "write_text_atomically": ("store.atomic", "write_text"),
    "write_atomically": ("store.atomic", "write_stream"),
}
_WHERE = {name: (module, name) for module, names in _EXPORTS.items() for name in names}
_WHERE.update(_RENAMED)

_registry = None


def __getattr__(name):
    """Load an exported name's module on first use (PEP 562)."""
    try:
        module, attribute = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'advx' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)


def get_registry(refresh=False):
    """The registry of every installed plugin, loaded once from the ``advx`` entry points.

    The conveniences below use it; the core never does: a run uses the registry it is given.
    """
    global _registry
    if _registry is None or refresh:
        from .host.registry import Registry

        _registry = Registry.from_entrypoints()
    return _registry


def get_attack(name, **params):
    """An attack instance: ``attack(model, x, y, threat) -> AttackResult``."""
    return get_registry().create("attacks", name, **params)


def get_dataset(name, **params):
    """A dataset instance with ``.info`` and ``.load("train" | "test") -> (x, y)``."""
    return get_registry().create("datasets", name, **params)


def get_defense(name, **params):
    """A defense instance; ``preset`` picks a preset."""
    return get_registry().create("defenses", name, **params)


def get_model(name, dataset="mnist", *, params=None, recipe=None, checkpoint=None, train=True,
              training=None, cache=None, device="cpu", progress=None, registry=None):
    """A trained (cached) or checkpoint-loaded model plugin's module, in eval mode.

    ``dataset`` is a dataset name or instance; ``recipe`` overrides fields of the plugin's
    recipe (a dict) or replaces it (an :class:`advx.TrainRecipe`); ``training`` is a training
    defense instance; ``progress`` a progress factory (see :mod:`advx.kernel.progress`; None:
    silent).
    """
    from .train.builder import Builder
    from .train.zoo import load_model

    registry = registry or get_registry()
    plugin = registry.create("models", name, **(params or {}))
    data = registry.create("datasets", dataset) if isinstance(dataset, str) else dataset
    builder = Builder(data, registry, device, cache, progress or __getattr__("no_progress"))
    return load_model(plugin, builder, recipe=recipe, checkpoint=checkpoint, train=train,
                      training=training)


def list_plugins(kind=None):
    """Descriptions (name, kind, plugin, summary, params) of registered classes of ``kind``."""
    from .host.registry import KINDS

    registry = get_registry()
    kinds = [kind] if kind else list(KINDS)
    return [entry.describe() for k in kinds for entry in registry.entries(k)]


__all__ = sorted([*_WHERE, "__version__", "get_attack", "get_dataset", "get_defense",
                  "get_model", "get_registry", "list_plugins"])
