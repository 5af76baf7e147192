"""The defense interface: preprocessors that transform inputs, and training defenses that
produce weights.  (Detectors and whole-model defenses are kinds the registry knows; their base
classes come with the issues that need them.)

A model entry of a spec lists its defenses in the order an input meets them::

    [[models]]
    name = "madry-cnn"
    defenses = [ { name = "binarize" }, { name = "adversarial-training", preset = "cpu" } ]

Preprocessors wrap the trained module (:class:`Preprocessed`); at most one training defense
says how the module's weights are trained (the weights cache key includes it).
"""

from typing import ClassVar

import attrs
import torch
from torch import nn

DEFENSE_KINDS = ("preprocessor", "detector", "training", "model")


@attrs.frozen(kw_only=True)
class Defense:
    """Base class of defenses: preprocessors, detectors, training recipes or whole models."""

    name: ClassVar[str]
    kind: ClassVar[str] = "preprocessor"


@attrs.frozen(kw_only=True)
class Preprocessor(Defense):
    """Transforms every input before the model sees it (binarization, purification, ...).

    ``transform(x)`` is the forward map.  Gradient attacks need a gradient through it: by
    default :meth:`gradient_proxy` is the straight-through estimate of Athalye et al. (2018,
    BPDA: the transform's backward pass is the identity), which keeps attacks adaptive.  A
    preprocessor whose transform is differentiable may override it to return ``transform(x)``.
    """

    kind: ClassVar[str] = "preprocessor"

    def transform(self, x):
        """The preprocessed batch (same shape and bounds as ``x``)."""
        raise NotImplementedError

    def gradient_proxy(self, x):
        """``transform(x)`` in the forward pass, the identity in the backward pass (BPDA)."""
        return x + (self.transform(x) - x).detach()

    def wrap(self, model, adaptive=True):
        """``model`` behind this preprocessor; see :class:`Preprocessed`."""
        return Preprocessed(model, self, adaptive)


class Preprocessed(nn.Module):
    """``model(preprocessor(x))``.  Adaptive: gradients flow through the preprocessor's
    :meth:`~Preprocessor.gradient_proxy`; non-adaptive: through its exact transform (for a
    step function such as binarization, a zero gradient: the number a naive evaluation of a
    gradient attack reports, shown beside the adaptive one)."""

    def __init__(self, model, preprocessor, adaptive=True):
        super().__init__()
        self.model, self.preprocessor, self.adaptive = model, preprocessor, adaptive

    def forward(self, x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.model(self.preprocessor.transform(x))
        if self.adaptive:
            return self.model(self.preprocessor.gradient_proxy(x))
        out = self.preprocessor.transform(x)
        # The exact gradient; a transform with none (a step function) passes a zero gradient.
        return self.model(out if out.requires_grad else out + 0 * x)


@attrs.frozen(kw_only=True)
class TrainingDefense(Defense):
    """Says how a model's weights are trained (adversarial training, distillation, ...).

    ``presets`` maps a preset name to parameter values; a spec's ``preset = "cpu"`` fills in
    every parameter it does not set itself.  :meth:`recipe` adjusts the model's training recipe
    (epochs, learning rate, an adversary); :meth:`train` trains the built module (by default the
    standard loop on the adjusted recipe).  The defense's parameters enter the weights' cache
    key, so each setting is trained once.
    """

    kind: ClassVar[str] = "training"
    presets: ClassVar[dict] = {}

    def recipe(self, base):
        """The :class:`~advx.TrainRecipe` to train with, given the model's ``base`` recipe."""
        return base

    def train(self, module, dataset, recipe, *, device, progress, label):
        """Train ``module`` on ``dataset`` by ``recipe`` (already adjusted by :meth:`recipe`)."""
        from ..train.loop import train_model  # training imports this package lazily

        return train_model(module, dataset, recipe, device=device, progress=progress,
                           label=label)


def with_preset(cls, params):
    """``params`` over the values of the preset they name (``preset`` key, if any).

    Raises KeyError naming the preset when ``cls`` has no such preset.
    """
    params = dict(params)
    name = params.pop("preset", None)
    if name is None:
        return params
    presets = getattr(cls, "presets", {})
    if name not in presets:
        allowed = ", ".join(sorted(presets)) or "none"
        raise KeyError(f"defense {cls.name!r} has no preset {name!r}; presets: {allowed}")
    return {**presets[name], **params}
