"""Trained weights by content: a model plugin's module, trained once and cached, or loaded.

Trained weights are cached under ``<cache root>/models/<key>.h5``, where the key digests the
model plugin and its parameters, the dataset's identity, the full training recipe (seed
included), the training defense (name and parameters) and the weights format version. A second
request for the same key loads instead of training.  Defenses cache modules of their own the
same way (:meth:`advx.train.builder.Builder.cached`).
"""

import hashlib
import json
import time

import attrs
import torch

from .._version import __version__
from ..kernel.errors import UsageError
from ..kernel.params import plugin_identity, plugin_params
from ..kernel.recipe import TrainRecipe
from ..store.paths import models_dir
from ..store.weights import FORMAT_VERSION, load_weights
from ..store.weights_cache import cached_or_trained
from .loop import evaluate_accuracy, seeded


def canonical_json(value):
    """Compact JSON with sorted keys: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def resolve_recipe(plugin, overrides=None):
    """The recipe of ``plugin``: its ``default_recipe`` over the TrainRecipe defaults, with
    ``overrides`` (a dict of fields, or a TrainRecipe used as it is) over that."""
    base = TrainRecipe.from_dict(plugin.default_recipe)
    if overrides is None:
        return base
    if isinstance(overrides, TrainRecipe):
        return overrides
    if isinstance(overrides, dict):
        return TrainRecipe.from_dict(overrides, base=base)
    raise UsageError(f"recipe must be a TrainRecipe or a dict of its fields, not {overrides!r}")


def weights_key(identity, dataset):
    """sha256 hex key of trained weights described by ``identity`` on ``dataset``."""
    payload = {**identity, "dataset": dataset.identity(), "weights_format": FORMAT_VERSION}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def model_identity(plugin, recipe, training=None):
    """What a model's trained weights depend on (besides the dataset)."""
    identity = {"model": plugin.name, "params": plugin_params(plugin, identity=True),
                "recipe": recipe.identity()}
    if training is not None:
        identity["training_defense"] = plugin_identity(training)
    return identity


def load_model(plugin, context, *, recipe=None, checkpoint=None, train=True, training=None):
    """The module of ``plugin`` for ``context.dataset``, in eval mode on ``context.device``.

    With ``checkpoint``, the built module loads those weights. Otherwise, with ``train``, the
    weights come from the cache, or are trained (by ``training``, a training defense, if
    given: it adjusts the recipe and trains instead of the standard loop) and cached. With
    ``train=False`` the module keeps its seeded initial weights.  ``context`` is a
    :class:`~advx.train.builder.Builder`.  ``module.advx_metadata`` tells where the weights
    came from ("source") and, for trained weights, their provenance.
    """
    recipe = resolve_recipe(plugin, recipe)
    if training is not None:
        recipe = training.recipe(recipe)
    module = build_seeded(plugin, context.dataset.info, recipe.seed)
    if checkpoint is not None:
        metadata = {**load_weights(module, checkpoint), "source": "checkpoint",
                    "path": str(checkpoint)}
    elif train:
        identity = model_identity(plugin, recipe, training)
        path = models_dir(context.cache_root) / f"{weights_key(identity, context.dataset)}.h5"
        metadata = _cached_or_trained(module, plugin, recipe, path, context, training)
    else:
        metadata = {"source": "untrained", "model": plugin.name, "seed": recipe.seed}
    module.advx_metadata = metadata
    return module.to(context.device).eval()


def build_seeded(plugin, info, seed):
    """``plugin.build(info)`` with torch's random state seeded by ``seed``."""
    with seeded(seed):
        return plugin.build(info)


def _cached_or_trained(module, plugin, recipe, path, context, training):
    def train(module):
        trained = context.pretrained.pop(path.stem, None)  # by an executor's training unit
        if trained is not None:
            module.load_state_dict(trained.state, strict=True)
            return module, trained.provenance()
        return module, train_classifier(module, plugin, recipe, context, training)

    _, metadata, origin = cached_or_trained(module, path, train, what=plugin.name)
    return {**metadata, "source": origin, "path": str(path)}


def train_classifier(module, plugin, recipe, context, training):
    """Train ``module`` (built by ``plugin``) by ``recipe``, or by the training defense
    ``training`` if given, with ``context`` (a Builder); returns the provenance stored with its
    weights."""
    start = time.perf_counter()
    if training is None:
        plugin.train(module, recipe, context.labelled(plugin.name))
    else:
        training.train(module, recipe, context.labelled(f"{plugin.name} ({training.name})"))
    seconds = time.perf_counter() - start
    x, y = context.dataset.load("test")
    return {
        "model": plugin.name,
        "params": plugin_params(plugin),
        "training_defense": None if training is None else plugin_identity(training),
        "dataset": context.dataset.identity(),
        "recipe": attrs.asdict(recipe),
        "test_accuracy": evaluate_accuracy(module, x, y, device=context.device),
        "train_seconds": round(seconds, 3),
        "device": str(context.device),
        "versions": {"advx": __version__, "torch": torch.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
