"""The core's :class:`advx.BuildContext`: what defenses and training defenses build models with.

A :class:`Builder` carries the dataset, device, registry, cache root and progress display of
one run (or of one ``advx.get_model`` call) and hands them to the plugins that build a model:
the training loop (:meth:`Builder.fit`), other plugins (:meth:`Builder.create`) and a weights
cache for modules a defense trains itself (:meth:`Builder.cached`).
"""

import attrs
import torch

from ..kernel.defense import calibrate, holdout_shortfall
from ..kernel.errors import ParameterError
from ..kernel.params import plugin_identity
from ..kernel.progress import no_progress
from ..store.paths import cache_root, models_dir
from ..store.weights import weights_digest
from ..store.weights_cache import cached_or_trained
from .loop import resolve_device, seeded, train_model, training_split, validation_split
from .zoo import weights_key


@attrs.frozen(eq=False)
class Builder:
    """Implements :class:`advx.BuildContext` (see there for what each member means)."""

    dataset: object
    registry: object
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"),
                                       converter=resolve_device)
    cache_root: object = attrs.field(default=None, converter=cache_root)
    progress_factory: object = no_progress
    adaptive: bool = True
    label: str | None = None  # names the model in progress displays of fit()
    holdout: int = 0  # the model entry's validation samples (the end of the training split)
    classifier: object = None  # the entry's trained classifier, before its defenses
    # weights key -> advx.train.units.TrainResult: classifiers an executor trained (shared by
    # the builders evolved from this one); building one stores it instead of training it
    pretrained: dict = attrs.field(factory=dict, repr=False)

    def create(self, kind, name, **params):
        return self.registry.create(kind, name, **params)

    def fit(self, module, recipe, *, loss=None, label=None):
        recipe = attrs.evolve(recipe, holdout=max(recipe.holdout, self.holdout))
        return train_model(module, self.dataset, recipe, device=self.device,
                           progress=self.progress_factory, label=label or self.label, loss=loss)

    def training_split(self, recipe=None):
        return training_split(self.dataset, max(self.holdout, recipe.holdout if recipe else 0))

    def validation(self):
        return validation_split(self.dataset, self.holdout)

    def threshold(self, detector, scorer):
        x, _ = self.validation()
        shortfall = holdout_shortfall(detector, len(x))
        if shortfall:
            raise ParameterError(shortfall)
        identity = {"threshold_of": plugin_identity(detector), "scorer": weights_digest(scorer),
                    "holdout": self.holdout}

        def train(holder):
            holder.threshold.fill_(calibrate(scorer, x, detector.fpr, self.device))

        return float(self.cached(identity, _Threshold, train).threshold)

    def generator(self, plugin, classifier=None):
        identity = {"generator": plugin_identity(plugin), "recipe": plugin.recipe().identity(),
                    "holdout": self.holdout}
        if plugin.uses_classifier:
            identity["classifier"] = weights_digest(classifier)
        else:
            classifier = None

        recipe = plugin.recipe()

        def train(module):
            batches = -(-len(training_split(self.dataset, self.holdout)[1]) // recipe.batch_size)

            def loss(m, x, y, position):
                epoch, batch = position
                progress = (epoch * batches + batch) / (recipe.epochs * batches)
                return plugin.loss(m, x, y, classifier, progress=progress)
            return self.fit(module, recipe, loss=loss, label=plugin.name)

        seed = recipe.seed
        return self.cached({**identity, "seed": seed}, lambda: plugin.build(self.dataset.info),
                           train)

    def progress(self, description, total):
        return self.progress_factory(description, total)

    def cached(self, identity, build, train):
        seed = identity.get("seed", 0) if isinstance(identity, dict) else 0
        with seeded(seed):
            module = build()
        path = models_dir(self.cache_root) / f"{weights_key(dict(identity), self.dataset)}.h5"

        def fit(module):
            module = train(module.to(self.device)) or module
            return module, {"identity": identity, "source": "trained"}

        module = cached_or_trained(module, path, fit, what=type(module).__name__)[0]
        return module.to(self.device).eval()

    def labelled(self, label):
        """The same builder naming the model ``label`` in progress displays."""
        return attrs.evolve(self, label=label)

    def for_entry(self, adaptive, holdout=0, classifier=None):
        """The builder a model entry's defenses get: its ``adaptive`` setting, the size of its
        validation split and its trained classifier."""
        return attrs.evolve(self, adaptive=adaptive, holdout=holdout, classifier=classifier)


class _Threshold(torch.nn.Module):
    """A detector's calibrated threshold, as a module so that the weights cache holds it."""

    def __init__(self):
        super().__init__()
        self.register_buffer("threshold", torch.tensor(float("nan"), dtype=torch.float64))
