"""Model training units: the classifiers of a run's model entries, trained where its executor
likes.

A run whose executor computes units concurrently (``Executor.prefetch``: the ``ray``
executor) first lists the classifiers its model entries need and the weights cache lacks
(transfer entries' source models included), one :class:`TrainUnit` per weights key, and hands
them to :meth:`advx.Executor.train` together, so that independent models train side by side
(on the workers, for ``ray``).  A unit trains a fresh module built exactly as
:func:`advx.train.zoo.load_model` builds it (seeded by the recipe) and returns its trained
state (CPU tensors) with the provenance a local training records, as a :class:`TrainResult`.
The driver keeps the results in its builder (``Builder.pretrained``); building the entry then
takes the result in place of training and stores it in the weights cache exactly as a local
training does (the weights file's lock, its metadata, source "trained").  Training is seeded,
so the weights are the same bits on any worker of the run's device type.

What depends on a trained classifier trains after it, on the driver, when the entry is built:
the parts a defense trains around it (a MagNet or PuVAE generator, a detector's threshold),
and any set attacked on the model (a transfer entry's source set is obtained before its
replays).
"""

import time

import attrs
import torch

from ..kernel.progress import no_progress
from ..store.paths import models_dir
from .builder import Builder
from .zoo import build_seeded, model_identity, train_classifier, weights_key

PICKLED_WITHOUT = ("registry", "progress")  # the driver's: a worker brings its own


@attrs.frozen(eq=False)
class TrainResult:
    """A trained classifier: its state dict (CPU tensors), the provenance its weights file
    records, the seconds it took and where it ran (``worker``, ``device``)."""

    unit: "TrainUnit"
    state: dict
    metadata: dict
    seconds: float
    where: dict = attrs.field(factory=dict)

    def provenance(self):
        """The metadata to store with the weights: the training's, and where it ran."""
        return {**self.metadata, "trained_by": dict(self.where)}


@attrs.frozen(eq=False)
class TrainUnit:
    """One classifier to train: a model plugin, its full recipe, its training defense (or
    None), the dataset and the run's device.  ``key`` is its weights key (the weights file's
    name in the models cache); ``label`` names it in messages.

    ``registry`` and ``progress`` are the driver's (registry of plugins a training may create,
    progress display); they are not pickled: a worker trains with its own registry, silently.
    """

    key: str
    label: str
    plugin: object
    recipe: object
    training: object
    dataset: object
    device: torch.device
    registry: object = attrs.field(default=None, repr=False)
    progress: object = attrs.field(default=no_progress, repr=False)

    def train(self, *, registry=None, device=None):
        """Train the classifier on ``device`` (default: the unit's) with ``registry``
        (default: the unit's); the :class:`TrainResult` (``where``: this process)."""
        began = time.perf_counter()
        device = self.device if device is None else torch.device(device)
        builder = Builder(self.dataset, registry or self.registry, device,
                          progress_factory=self.progress)
        module = build_seeded(self.plugin, self.dataset.info, self.recipe.seed)
        metadata = train_classifier(module, self.plugin, self.recipe, builder, self.training)
        state = {name: value.detach().cpu() for name, value in module.state_dict().items()}
        return TrainResult(self, state, metadata, time.perf_counter() - began,
                           {"worker": "local", "device": str(device)})

    def __getstate__(self):
        return {field.name: getattr(self, field.name) for field in attrs.fields(type(self))
                if field.name not in PICKLED_WITHOUT}

    def __setstate__(self, state):
        for name, value in {**state, "registry": None, "progress": no_progress}.items():
            object.__setattr__(self, name, value)


def training_units(models, builder):
    """A :class:`TrainUnit` per classifier of ``models`` (ModelSpec entries) whose weights the
    cache under ``builder.cache_root`` lacks, one per weights key, in entry order.  Entries
    with a checkpoint load it, and train nothing.  (A weights file that exists but cannot be
    used is retrained where the entry is built, after a warning naming it.)"""
    units = {}
    for model in models:
        if model.checkpoint is not None:
            continue
        recipe = model.recipe if model.training is None else model.training.recipe(model.recipe)
        key = weights_key(model_identity(model.plugin, recipe, model.training), builder.dataset)
        if key in units or (models_dir(builder.cache_root) / f"{key}.h5").is_file():
            continue
        label = model.name if model.training is None else f"{model.name} ({model.training.name})"
        units[key] = TrainUnit(key, label, model.plugin, recipe, model.training, builder.dataset,
                               builder.device, registry=builder.registry,
                               progress=builder.progress_factory)
    return list(units.values())


def train_models(models, builder, executor, progress=no_progress):
    """Train the classifiers of ``models`` that the cache lacks on ``executor``, together; keep
    each result in ``builder.pretrained`` for the entry's build to store.  Returns how many
    were trained."""
    units = training_units(models, builder)
    if not units:
        return 0
    total = len(units)
    with progress(f"train {total} model{'s' if total > 1 else ''}", total) as advance:
        for result in executor.train(units):
            builder.pretrained[result.unit.key] = result
            advance(1, status=f"{result.unit.label} on {result.where.get('worker', '?')}")
    return total
