"""The core's :class:`advx.BuildContext`: what defenses and training defenses build models with.

A :class:`Builder` carries the dataset, device, registry, cache root and progress display of
one run (or of one ``advx.get_model`` call) and hands them to the plugins that build a model:
the training loop (:meth:`Builder.fit`), other plugins (:meth:`Builder.create`) and a weights
cache for modules a defense trains itself (:meth:`Builder.cached`).
"""

import attrs
import torch

from ..kernel.progress import no_progress
from ..store.paths import cache_root, models_dir
from ..store.weights import load_weights, save_weights
from .loop import resolve_device, seeded, train_model
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

    def create(self, kind, name, **params):
        return self.registry.create(kind, name, **params)

    def fit(self, module, recipe, *, loss=None, label=None):
        return train_model(module, self.dataset, recipe, device=self.device,
                           progress=self.progress_factory, label=label or self.label, loss=loss)

    def progress(self, description, total):
        return self.progress_factory(description, total)

    def cached(self, identity, build, train):
        seed = identity.get("seed", 0) if isinstance(identity, dict) else 0
        with seeded(seed):
            module = build()
        path = models_dir(self.cache_root) / f"{weights_key(dict(identity), self.dataset)}.h5"
        if path.is_file():
            load_weights(module, path)
        else:
            module = train(module.to(self.device)) or module
            save_weights(module.cpu(), path, {"identity": identity, "source": "trained"})
        return module.to(self.device).eval()

    def labelled(self, label):
        """The same builder naming the model ``label`` in progress displays."""
        return attrs.evolve(self, label=label)

    def for_entry(self, adaptive):
        """The builder a model entry's defenses get (its ``adaptive`` setting)."""
        return attrs.evolve(self, adaptive=adaptive)
