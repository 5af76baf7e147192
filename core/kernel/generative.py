"""The generative-model interface: autoencoders and VAEs that defenses purify or detect with.

A generator plugin names an architecture and how it is trained, as a model plugin does for a
classifier.  Defenses build theirs through the build context
(:meth:`advx.BuildContext.generator`), which trains it once on the training split (minus the
model entry's held-out validation samples) and caches the weights by the generator's name,
parameters (preset applied), recipe, the dataset, and, when the training loss reads the
classifier (PuVAE's), the classifier's weights digest.

The module a generator builds maps a batch to its reconstruction in the input bounds:
``module.reconstruct(x)``, or ``module.reconstruct(x, y)`` with int64 labels for a
class-conditional one (:attr:`GenerativeModel.conditional`).  At evaluation a reconstruction
is deterministic (a VAE decodes its latent mean) and differentiable in ``x``.
"""

from typing import ClassVar

import attrs
import torch

from .errors import UsageError
from .model import InvariantBatches
from .recipe import TrainRecipe

RECONSTRUCTIONS = "class_reconstructions"  # the method a generative classifier offers


@attrs.frozen(kw_only=True)
class GenerativeModel:
    """Base class of generator plugins (``@attrs.frozen(kw_only=True)``, fields = parameters).

    ``presets`` maps a preset name to parameter values, as for defenses (``preset = "cpu"``).
    ``uses_classifier``: the training loss reads the frozen classifier (its digest then joins
    the weights' cache key).
    """

    name: ClassVar[str]
    conditional: ClassVar[bool] = False
    uses_classifier: ClassVar[bool] = False
    presets: ClassVar[dict] = {}

    def build(self, info):
        """A freshly initialised module for a dataset described by ``info`` (DatasetInfo)."""
        raise NotImplementedError

    def recipe(self):
        """The :class:`advx.TrainRecipe` it is trained by (epochs, batch size, ...)."""
        return TrainRecipe()

    def loss(self, module, x, y, classifier, progress=0.0):
        """The training loss of one batch (a scalar); ``classifier`` is the frozen classifier
        when :attr:`uses_classifier`, else None; ``progress`` the fraction of training done
        before this batch, in [0, 1) (for schedules such as a KL warm-up)."""
        raise NotImplementedError


def offers_reconstructions(model):
    """Whether ``model`` (or the module a run's batch-invariance wrapper holds) offers
    ``class_reconstructions(x)``: a generative classifier such as ABS."""
    inner = model.module if isinstance(model, InvariantBatches) else model
    return callable(getattr(inner, RECONSTRUCTIONS, None))


def class_reconstructions(model, x):
    """``(logits (N, K), reconstructions (N, K, C, H, W))`` of a generative classifier: its
    class scores and ``x`` as each class's generative model reconstructs it (ABS: the
    decoded optimal latent per class), from one pass.  Through a run's
    :class:`InvariantBatches` the batch is padded as its forward pass pads it, so a sample's
    answer does not depend on its batch.  Raises UsageError for a model that offers none."""
    if isinstance(model, InvariantBatches):
        n, extra = len(x), -len(x) % model.multiple
        if n and extra:
            x = torch.cat([x, x[-1:].detach().expand(extra, *x.shape[1:])])
        logits, reconstructions = class_reconstructions(model.module, x)
        return logits[:n], reconstructions[:n]
    if not offers_reconstructions(model):
        raise UsageError(f"{type(model).__name__} offers no class-conditional reconstructions "
                         f"(a generative classifier, abs or binary-abs, does)")
    return getattr(model, RECONSTRUCTIONS)(x)
