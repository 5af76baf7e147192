"""What the built-in generators share: recipe fields, validators, bounds and loss pieces."""

import advx
import attrs
import torch
import torch.nn.functional as F
from torch import nn


def positive_int(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def non_negative(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


def positive(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number > 0, got {value!r}")


def fraction(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be a number in [0, 1], got {value!r}")


def param(default, help_text, validator):
    """A generator parameter with its help text."""
    return attrs.field(default=default, validator=validator, metadata={"help": help_text})


@attrs.frozen(kw_only=True)
class TrainedGenerator(advx.GenerativeModel):
    """A generator whose fields ``epochs``, ``batch_size`` and ``lr`` make its Adam recipe."""

    epochs: int = param(20, "training epochs", positive_int)
    batch_size: int = param(128, "training batch size", positive_int)
    lr: float = param(1e-3, "Adam learning rate", positive)

    def recipe(self):
        return advx.TrainRecipe(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)


def halvings(size, steps):
    """``[ceil(size / 2**steps), ..., ceil(size / 2), size]``: the spatial sizes a decoder of
    ``steps`` stride-2 up-sampling layers passes through to end at ``size``."""
    sizes = [size]
    for _ in range(steps):
        sizes.insert(0, -(-sizes[0] // 2))
    return sizes


def upsampling(channels_in, channels_out, kernel, size_in, size_out):
    """A stride-2 transposed convolution (odd ``kernel``, padding ``kernel // 2``) from
    ``size_in`` to ``size_out`` (each ``2n - 1`` or ``2n``: the output padding picks which)."""
    padding = tuple(t - 2 * n + 1 for n, t in zip(size_in, size_out))
    return nn.ConvTranspose2d(channels_in, channels_out, kernel, stride=2, padding=kernel // 2,
                              output_padding=padding)


class Bounded(nn.Module):
    """A module whose outputs live in the dataset's input bounds (a sigmoid scaled onto them)."""

    def __init__(self, info):
        super().__init__()
        low, high = (float(b) for b in info.bounds)
        self.low, self.span = low, high - low

    def to_unit(self, x):
        """``x`` mapped from the bounds onto [0, 1]."""
        return (x - self.low) / self.span

    def from_logits(self, logits):
        """Decoder logits to images in the bounds."""
        return self.low + self.span * torch.sigmoid(logits)


def bernoulli_nll(module, logits, x):
    """Per-sample binary cross-entropy of the decoder's ``logits`` against ``x`` (in the
    bounds), summed over pixels: the usual VAE reconstruction term for images in [0, 1]."""
    target = module.to_unit(x).clamp(0, 1)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)


def gaussian_kl(mean, log_var):
    """Per-sample KL(N(mean, exp(log_var)) || N(0, I)), summed over the latent."""
    return 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(-1)


def frozen_logits(classifier, x):
    """``classifier(x)`` in eval mode with its weights detached: the gradient reaches ``x``
    (and what made it) but never the classifier's parameters."""
    classifier.eval()
    state = {name: t.detach() for name, t in
             [*classifier.named_parameters(), *classifier.named_buffers()]}
    return torch.func.functional_call(classifier, state, (x,))
