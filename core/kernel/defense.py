"""The defense interface: how a defense changes the model a run attacks.

A model entry lists its defenses in the order an input meets them::

    [[models]]
    name = "madry-cnn"
    defenses = [ { name = "binarize" }, { name = "adversarial-training", preset = "cpu" } ]

The run builds the defended model in two stages, the same for every kind of defense:

1. The classifier's weights: trained by the model plugin's recipe, or by the one
   :class:`TrainingDefense` of the list (:meth:`~TrainingDefense.recipe` adjusts the recipe,
   :meth:`~TrainingDefense.train` trains), or loaded from a checkpoint.
2. Every other defense, from the last listed to the first, replaces the module built so far by
   ``defense.apply(module, context)``; so the first listed sees the raw input.

The kernel's kinds are :class:`Preprocessor` (x -> x' before the model, with a gradient that
keeps white-box attacks adaptive), :class:`Detector` (an N-class classifier becomes one with
N + 1 outputs, index N meaning "rejected", thresholded at a false-positive rate on clean data),
:class:`ModelDefense` (a model of its own, which may contain the classifier) and
:class:`TrainingDefense`.  A plugin may define another kind by subclassing :class:`Defense` and
overriding :meth:`Defense.apply`: nothing in the core lists the kinds.  ``context`` is a
:class:`BuildContext`.
"""

import math
import typing
from typing import ClassVar

import attrs
import torch
from torch import nn

from .model import REJECT_ATTRIBUTE, carry_reject_index, reject_index


class BuildContext(typing.Protocol):
    """What a defense gets while the run builds a model (implemented by the core).

    ``dataset`` is the run's dataset plugin (``dataset.load("train")``), ``device`` where the
    model runs, ``adaptive`` whether preprocessors pass a straight-through gradient (the
    model entry's setting), ``label`` the model's name in progress displays (or None),
    ``classifier`` the entry's trained classifier before any defense wraps it (a generator
    trained against it, PuVAE's, is then the same whatever the defenses around it).
    """

    dataset: typing.Any
    device: torch.device
    adaptive: bool
    label: str | None  # what progress displays call the model being built
    classifier: typing.Any  # the entry's trained classifier, before any defense wraps it

    def create(self, kind, name, **params):
        """An instance of the plugin ``name`` of ``kind`` ("attacks", ...) from the run's
        registry."""

    def fit(self, module, recipe, *, loss=None, label=None):
        """Train ``module`` on the dataset's training split by ``recipe`` (an
        :class:`advx.TrainRecipe`); ``loss(module, x, y, position)`` replaces the clean
        cross-entropy of a batch.  Seeded, deterministic on the CPU.  Returns the module."""

    def training_split(self, recipe=None):
        """``(x, y)``: the training split without the validation samples (the entry's, or
        ``recipe.holdout`` when larger): what a model trains on."""

    def validation(self):
        """``(x, y)``: the model entry's validation split, the last ``holdout`` samples of the
        training split (``train = { holdout = N }``), which no part of the model trained on."""

    def threshold(self, detector, scorer):
        """``detector``'s threshold for ``scorer``: calibrated at ``detector.fpr`` on the
        validation split, cached with the scorer's weights."""

    def generator(self, plugin, classifier=None):
        """The module of the generator plugin ``plugin`` (an :class:`advx.GenerativeModel`),
        trained once on the training split without the validation samples, and cached."""

    def cached(self, identity, build, train):
        """A module of the defense's own (an autoencoder, say), trained once and cached:
        ``build()`` makes it (seeded), ``train(module)`` trains it when the weights cache has
        no entry for ``identity`` (a JSON-ready dict; the dataset's identity is added)."""

    def progress(self, description, total):
        """A context manager yielding ``advance(n=1, status=None)`` for a progress display."""


@attrs.frozen(kw_only=True)
class Defense:
    """Base class of defenses.  ``presets`` maps a preset name to parameter values; a spec's
    ``preset = "cpu"`` fills in every parameter it does not set itself."""

    name: ClassVar[str]
    kind: ClassVar[str] = "defense"
    presets: ClassVar[dict] = {}

    def apply(self, module, context):
        """The defended module built around ``module`` (see the module docstring).  Behind a
        detector, the core carries its reject index onto the returned module unless that
        declares one itself."""
        return module


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

    def apply(self, module, context):
        return self.wrap(module, adaptive=context.adaptive)

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
        carry_reject_index(self, model)

    def forward(self, x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.model(self.preprocessor.transform(x))
        if self.adaptive:
            return self.model(self.preprocessor.gradient_proxy(x))
        out = self.preprocessor.transform(x)
        # The exact gradient; a transform with none (a step function) passes a zero gradient.
        return self.model(out if out.requires_grad else out + 0 * x)


def _probability(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{attribute.name} must be a number in (0, 1), got {value!r}")


@attrs.frozen(kw_only=True)
class Detector(Defense):
    """Rejects inputs whose score exceeds a threshold set at a false-positive rate.

    :meth:`scorer` returns a module mapping inputs to one score each (higher: more likely
    adversarial), differentiable where white-box attacks should adapt to it; it may contain
    the classifier and parts trained by the detector itself (``context.generator``,
    ``context.cached``).  The defender sets the threshold before any attack: the ``1 - fpr``
    quantile of the scores of the model entry's validation split (``train = { holdout = N }``:
    the last N training samples, which neither the classifier nor the detector's own parts
    trained on), so that at most a fraction ``fpr`` of them is rejected; it is cached with the
    scorer's weights, and no attack changes it.  The defended model (:class:`Detected`) has
    one output more than the classifier: index N, "rejected".  A rejected adversarial counts as
    defended, a rejected clean input as an error.
    """

    kind: ClassVar[str] = "detector"

    fpr: float = attrs.field(default=0.01, validator=_probability, metadata={
        "help": "false-positive rate on the clean validation split the threshold is set at"})

    def scorer(self, classifier, context):
        """A module ``x -> scores (N,)``; higher means more likely adversarial."""
        raise NotImplementedError

    def apply(self, module, context):
        scorer = self.scorer(module, context)
        threshold = context.threshold(self, scorer)
        return Detected(module, scorer, threshold, context.dataset.info.num_classes,
                        adaptive=context.adaptive)


def calibration_size(fpr):
    """The fewest clean samples a threshold at ``fpr`` can be read from: ``ceil(1 / fpr)``
    (with fewer, even the largest score leaves more than ``fpr`` of them below it unrejected
    by chance alone, and the requested rate cannot be told from zero)."""
    return math.ceil(1 / fpr - 1e-9)


def holdout_shortfall(detector, holdout):
    """Why ``holdout`` held-out samples cannot calibrate ``detector`` (too few for its
    ``fpr``: :func:`calibration_size`), or None when they can."""
    needed = calibration_size(detector.fpr)
    if holdout >= needed:
        return None
    return (f"detector {detector.name!r}: a threshold at fpr = {detector.fpr:g} needs at least "
            f"{needed} held-out clean samples, and the model entry holds out {holdout}; set "
            f"train = {{ holdout = {max(needed, 1000)} }} on the model (the last samples of the "
            "training split, which no part of the model trains on)")


def calibrate(scorer, x, fpr, device, batch_size=500):
    """The threshold at which a fraction of at most ``fpr`` of the scores of ``x`` lies above
    (their ``1 - fpr`` quantile, rounded up to a score that occurs)."""
    scorer.to(device).eval()
    with torch.no_grad():
        scores = torch.cat([scorer(part.to(device)).double().cpu() for part in
                            x.split(batch_size)])
    return float(torch.quantile(scores, 1 - fpr, interpolation="higher"))


class Detected(nn.Module):
    """A classifier with a detector: logits ``[z_0 .. z_{N-1}, max_j z_j + s(x) - t]``.

    The last output (index N, :func:`~advx.kernel.model.reject_index`) wins exactly when the
    score ``s(x)`` exceeds the threshold ``t``, and it is differentiable in both the classifier
    and the score, so an attack can be made to avoid it (Carlini & Wagner, 2017): an untargeted
    gradient attack folds it into the true class (:func:`advx.fold_rejection`).  Not
    ``adaptive``: the passes an attack takes gradients of see the classifier alone (a reject
    output that never wins), so the attacker ignores the detector, while the core's verdict
    on the returned examples sees it: the naive evaluation shown beside the adaptive one.  Behind
    a detector already, the classifier's own reject output is kept and takes the larger of the
    two rejections: detectors stack.
    """

    def __init__(self, classifier, scorer, threshold, num_classes, adaptive=True):
        super().__init__()
        self.classifier, self.scorer, self.adaptive = classifier, scorer, adaptive
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        inner = reject_index(classifier)
        self.inner_reject = inner
        setattr(self, REJECT_ATTRIBUTE, num_classes if inner is None else inner)

    def forward(self, x):
        logits = self.classifier(x)
        if not self.adaptive and torch.is_grad_enabled() and x.requires_grad:
            # the naive attacker's view: the classifier alone, a reject output that never wins
            reject = logits.detach().amin(1) - 1e4
        else:
            score = self.scorer(x).to(logits.dtype)
            reject = logits.amax(1) + score - self.threshold.to(logits.dtype)
        if self.inner_reject is None:
            return torch.cat([logits, reject.unsqueeze(1)], 1)
        column = torch.maximum(logits[:, self.inner_reject], reject)
        return torch.cat([logits[:, :self.inner_reject], column.unsqueeze(1),
                          logits[:, self.inner_reject + 1:]], 1)


@attrs.frozen(kw_only=True)
class ModelDefense(Defense):
    """A defense that is a model of its own, built around (or instead of) the classifier:
    randomised smoothing, an ensemble, analysis by synthesis."""

    kind: ClassVar[str] = "model"

    def build(self, classifier, context):
        """The defended module; ``classifier`` is the trained classifier of the entry."""
        raise NotImplementedError

    def apply(self, module, context):
        return self.build(module, context)


@attrs.frozen(kw_only=True)
class TrainingDefense(Defense):
    """Says how a model's weights are trained (adversarial training, distillation, ...).

    :meth:`recipe` adjusts the model's training recipe (epochs, learning rate); :meth:`train`
    trains the built module (by default the standard loop on the adjusted recipe).  The
    defense's parameters enter the weights' cache key, so each setting is trained once.
    """

    kind: ClassVar[str] = "training"

    def recipe(self, base):
        """The :class:`~advx.TrainRecipe` to train with, given the model's ``base`` recipe."""
        return base

    def train(self, module, recipe, context):
        """Train ``module`` by ``recipe`` (already adjusted by :meth:`recipe`)."""
        return context.fit(module, recipe)


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
        raise KeyError(f"{cls.name!r} has no preset {name!r}; presets: {allowed}")
    return {**presets[name], **params}
