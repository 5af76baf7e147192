"""Models by name: built by a model plugin, then trained (and cached) or loaded from a checkpoint.

Trained weights are cached under ``<cache root>/models/<key>.h5``, where the key digests the
model and its parameters, the dataset's identity, the full training recipe (seed included) and
the weights format version. A second request for the same key loads instead of training.
"""

import hashlib
import json
import time
import warnings

import attrs
import torch

from .._version import __version__
from ..kernel.dataset import Dataset
from ..kernel.errors import UsageError
from ..store.paths import cache_root, models_dir
from ..store.weights import FORMAT_VERSION, load_weights, save_weights
from .loop import TrainRecipe, evaluate_accuracy, resolve_device, seeded, train_model


def resolve_recipe(model_plugin, recipe):
    """The recipe to train ``model_plugin`` with.

    ``recipe`` is a :class:`TrainRecipe` (used as given), a dict of overrides applied over the
    plugin's ``default_recipe`` over the TrainRecipe defaults, or None (the plugin's default).
    """
    base = TrainRecipe.from_dict(model_plugin.default_recipe)
    if recipe is None:
        return base
    if isinstance(recipe, TrainRecipe):
        return recipe
    if isinstance(recipe, dict):
        return TrainRecipe.from_dict(recipe, base=base)
    raise UsageError(f"recipe must be a TrainRecipe or a dict of its fields, not {recipe!r}")


def canonical_json(value):
    """Compact JSON with sorted keys: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def model_key(name, params, dataset, recipe, training=None):
    """sha256 hex key of trained weights: model, params, dataset identity, recipe, format, and
    the training defense (name and parameters) if there is one."""
    identity = {
        "model": name,
        "params": dict(params or {}),
        "dataset": dataset.identity(),
        "recipe": attrs.asdict(recipe),
        "weights_format": FORMAT_VERSION,
    }
    if training is not None:
        identity["training_defense"] = defense_identity(training)
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def defense_identity(defense):
    """``{"name": ..., "params": ...}`` of a defense instance (its resolved parameters)."""
    return {"name": defense.name, "params": attrs.asdict(defense)}


def _dataset(dataset, registry):
    if isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, str):
        return registry.create("datasets", dataset)
    raise UsageError(f"dataset must be a registered dataset name or an advx.Dataset, "
                     f"not {dataset!r}")


def _build(plugin, data, seed):
    with seeded(seed):
        return plugin.build(data.info)


def load_model(name, dataset="mnist", *, params=None, recipe=None, checkpoint=None, train=True,
               cache=None, device="cpu", progress=True, registry=None, training=None):
    """The model ``name`` for ``dataset``, in eval mode on ``device``.

    With ``checkpoint``, the built model loads those weights. Otherwise, with ``train``, the
    weights come from the cache, or are trained by the recipe and cached. With ``train=False``
    the model keeps its seeded initial weights. ``training`` (an :class:`advx.TrainingDefense`)
    adjusts the recipe and trains instead of the standard loop; it is part of the cache key.
    ``module.advx_metadata`` tells where the weights came from ("source") and, for trained
    weights, their provenance.
    """
    if registry is None:
        from .. import get_registry  # the package imports this module lazily

        registry = get_registry()
    plugin = registry.create("models", name, **(params or {}))
    data = _dataset(dataset, registry)
    recipe = resolve_recipe(plugin, recipe)
    if training is not None:
        recipe = training.recipe(recipe)
    device = resolve_device(device)
    module = _build(plugin, data, recipe.seed)
    if checkpoint is not None:
        metadata = {**load_weights(module, checkpoint), "source": "checkpoint",
                    "path": str(checkpoint)}
    elif train:
        key = model_key(name, attrs.asdict(plugin), data, recipe, training)
        path = models_dir(cache_root(cache)) / f"{key}.h5"
        metadata = _cached_or_trained(module, plugin, data, recipe, path, device, progress,
                                      training)
    else:
        metadata = {"source": "untrained", "model": name, "seed": recipe.seed}
    module.advx_metadata = metadata
    return module.to(device).eval()


def _cached_or_trained(module, plugin, data, recipe, path, device, progress, training):
    if path.is_file():
        try:
            return {**load_weights(module, path), "source": "cache", "path": str(path)}
        except UsageError as exc:
            # load_weights checks everything before it changes the module: retrain from init
            warnings.warn(f"retraining: cached weights unreadable: {exc}", stacklevel=3)
    metadata = _train(module, plugin, data, recipe, device, progress, training)
    save_weights(module.cpu(), path, metadata)
    return {**metadata, "source": "trained", "path": str(path)}


def _train(module, plugin, data, recipe, device, progress, training):
    """Train ``module``; returns the provenance stored with its weights."""
    start = time.perf_counter()
    if training is None:
        train_model(module, data, recipe, device=device, progress=progress, label=plugin.name)
    else:
        training.train(module, data, recipe, device=device, progress=progress,
                       label=f"{plugin.name} ({training.name})")
    seconds = time.perf_counter() - start
    x, y = data.load("test")
    return {
        "model": plugin.name,
        "params": attrs.asdict(plugin),
        "training_defense": None if training is None else defense_identity(training),
        "dataset": data.identity(),
        "recipe": attrs.asdict(recipe),
        "test_accuracy": evaluate_accuracy(module, x, y, device=device),
        "train_seconds": round(seconds, 3),
        "device": str(device),
        "versions": {"advx": __version__, "torch": torch.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
