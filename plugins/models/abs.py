"""The analysis-by-synthesis (ABS) model of Schott et al. (ICLR 2019) and its binary variant.

ABS classifies by asking which class's generative model explains the input best.  Ten VAEs
(:mod:`.abs_vae`), one per class, each trained on its own class; for an input ``x`` and every
class ``c`` inference searches the latent ``z`` that minimises

    loss_c(x, z) = ||x - G_c(z)||^2 + 0.5 ||z||^2        (G_c: class c's decoder)

by optimisation: ``latents`` latents drawn once from the prior (a fixed seed: the model is
deterministic), decoded under every class once per set of weights; the best per class by that
loss is selected as one matrix product (||x||^2 + ||g||^2 - 2 x.g); then ``steps`` Adam steps
(rate ``lr``) on all ten latents at once, each latent kept in the L2 ball of radius ``radius``.
The class score is ``l_c(x) = -loss_c / D`` (D pixels); the module returns ``alpha * l_c``, so
that a softmax of its output is the paper's calibrated confidence up to the offset
(:meth:`AbsModule.confidences`: ``exp(alpha l_y) / (sum_c exp(alpha l_c) + eta)``, which stays
low on inputs no class explains).

Binary ABS binarizes the input at 0.5 first and scales each class's loss by a fixed factor,
learned after training (the cross-entropy of the scores on binarized training digits, ten
parameters): the VAEs are trained on grey values, and a binary image costs some classes more
squared error than others.

The gradient of the output w.r.t. the input ignores the inner optimisation, so it is not the
gradient of the classifier: the plugins declare ``access = "score"`` and a spec runs gradient
attacks on them only through gradient estimates.
"""

from typing import ClassVar

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, whole

from .abs_inference import LatentSearch, fit_class_scales
from .abs_vae import ClassVAEs

ALPHA, ETA = 440.0, 3.9e-5  # the paper's calibration of the softmax


_positive_int, _non_negative_int = whole(1), whole(0)
_positive = finite(0, MAX_SCALE, low_open=True)


def _field(default, help_text, validator, trained=True):
    """A parameter; ``trained=False`` for the inference settings, which the VAEs' training
    does not read: they stay out of the weights' cache key (every setting shares one training)
    and enter the module's state instead (:class:`AbsModule`), so sets computed under one
    setting are never served for another."""
    metadata = {"help": help_text, **({} if trained else {"identity": False})}
    return attrs.field(default=default, validator=validator, metadata=metadata)


class AbsModule(torch.nn.Module):
    """The ABS classifier: ``forward(x)`` gives ``alpha * l_c(x)`` per class (see the module
    docstring); ``class_reconstructions(x)`` gives those scores and the reconstruction of ``x``
    under every class (N, K, C, H, W): the interface the latent-descent attack uses."""

    def __init__(self, info, search, binary=False):
        super().__init__()
        self.vaes = ClassVAEs(info.num_classes, info.shape[0])
        self.search, self.binary = search, binary
        self.register_buffer("class_scale", torch.ones(info.num_classes))
        # the inference settings, in the state so that the weights digest (and every set's
        # key) tells them apart; never loaded from a file (they are this module's own)
        self.register_buffer("inference", torch.tensor(
            [search.latents, search.steps, search.lr, search.radius, search.seed],
            dtype=torch.float64))

    def prepare(self, x):
        """The input ABS explains: ``x``, binarized at 0.5 for binary ABS."""
        return (x > 0.5).to(x.dtype) if self.binary else x

    def class_reconstructions(self, x):
        losses, reconstructions = self.search(self.vaes.bank, self.prepare(x))
        return self.scores(losses, self.class_scale, x[0].numel()), reconstructions

    @staticmethod
    def scores(losses, class_scale, pixels):
        """``alpha * l_c``: minus the (scaled) class losses per pixel, times alpha."""
        return -ALPHA * losses * class_scale / pixels

    def forward(self, x):
        return self.class_reconstructions(x)[0]

    def confidences(self, x):
        """The paper's calibrated probabilities: ``exp(alpha l_y) / (sum_c exp(alpha l_c) +
        eta)``; they sum to less than 1, the more so the worse every class explains ``x``."""
        scores = self(x).double()
        top = scores.amax(1, keepdim=True)
        numerator = (scores - top).exp()
        return numerator / (numerator.sum(1, keepdim=True) + ETA * (-top).exp())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        own = self.inference.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.inference.copy_(own)

    def train(self, mode=True):
        super().train(mode)
        self.search.forget()  # candidates are decoded again for the weights at hand
        return self


@attrs.frozen(kw_only=True)
class Abs(advx.ModelPlugin):
    """Analysis by synthesis (Schott et al., 2019): ten class-conditional VAEs (latent 8),
    classification by the best lower bound on each class's likelihood, found by optimisation
    at inference.  Presets: ``paper`` (8,000 prior latents, 50 Adam steps) and ``cpu`` (fewer
    of both, fast enough for examples/abs-mnist.toml on two CPU cores)."""

    name: ClassVar[str] = "abs"
    access: ClassVar[str] = "score"
    offers: ClassVar[frozenset] = frozenset({"class-reconstructions"})
    binary: ClassVar[bool] = False
    default_recipe: ClassVar[dict] = {"epochs": 20, "batch_size": 128, "lr": 3e-3}
    presets: ClassVar[dict] = {
        "paper": {"latents": 8000, "steps": 50, "lr": 0.05, "radius": 5.0},
        "cpu": {"latents": 1000, "steps": 3, "lr": 0.05, "radius": 5.0},
    }

    latents: int = _field(8000, "prior latents decoded once per class; the best per class "
                          "starts the optimisation", _positive_int, trained=False)
    steps: int = _field(50, "Adam steps on the latents at inference (0: selection only)",
                        _non_negative_int, trained=False)
    lr: float = _field(0.05, "Adam learning rate of the latent optimisation", _positive,
                       trained=False)
    radius: float = _field(5.0, "each latent stays in the L2 ball of this radius", _positive,
                           trained=False)
    seed: int = _field(0, "seed of the prior latents (fixed: the model is deterministic)",
                       _non_negative_int, trained=False)
    beta: float = _field(1.0, "weight of the KL term when the VAEs are trained", _positive)

    def build(self, info):
        if tuple(info.shape[1:]) != (28, 28):
            raise advx.UsageError(f"model {self.name!r} is built for 28x28 images (MNIST, its "
                                  f"VAEs' fixed architecture), got inputs of shape {info.shape}")
        search = LatentSearch(latents=self.latents, steps=self.steps, lr=self.lr,
                              radius=self.radius, seed=self.seed)
        return AbsModule(info, search, binary=self.binary)

    def train(self, module, recipe, context):
        def loss(m, x, y, position):
            return m.vaes.training_loss(x, y, self.beta)

        context.fit(module, recipe, loss=loss, label=self.name)
        if self.binary:
            x, y = context.training_split(recipe)
            fit_class_scales(module, x, y)


@attrs.frozen(kw_only=True)
class BinaryAbs(Abs):
    """Binary ABS (Schott et al., 2019): ABS on inputs binarized at 0.5, each class's loss
    scaled by a fixed factor learned after training (see the module docstring)."""

    name: ClassVar[str] = "binary-abs"
    binary: ClassVar[bool] = True
