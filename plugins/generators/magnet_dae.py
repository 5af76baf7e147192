"""MagNet's denoising autoencoder (Meng & Chen, 2017): detector I and reformer on MNIST."""

from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ._common import Bounded, TrainedGenerator, non_negative, param, positive_int


class DenoisingAutoencoder(Bounded):
    """``reconstruct(x)``: MagNet's sigmoid convolutional autoencoder, onto the input bounds."""

    def __init__(self, info, channels):
        super().__init__(info)
        c, h, w = info.shape

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.Sigmoid()]

        # Up-sampling to the input's size is the 2x nearest-neighbour up-sampling for even
        # sizes, and lands odd ones (which the pooling floored) back on H x W.
        self.network = nn.Sequential(
            *conv(c, channels), nn.AvgPool2d(2), *conv(channels, channels),
            *conv(channels, channels), nn.Upsample(size=(h, w), mode="nearest"),
            *conv(channels, channels), nn.Conv2d(channels, c, 3, padding=1))

    def reconstruct(self, x):
        """The autoencoder's output for ``x`` (deterministic, differentiable)."""
        return self.from_logits(self.network(x))

    def forward(self, x):
        return self.reconstruct(x)


@attrs.frozen(kw_only=True)
class MagnetDae(TrainedGenerator):
    """MagNet's MNIST autoencoder (Meng & Chen, 2017), trained to remove Gaussian noise.

    Conv(``channels``, 3x3) + sigmoid, AvgPool 2, Conv(``channels``, 3x3) + sigmoid; decoder
    Conv(``channels``, 3x3) + sigmoid, up-sampling 2 (to the input's size), Conv(``channels``,
    3x3) + sigmoid, Conv(C, 3x3) + sigmoid onto the input bounds; every convolution "same".
    Trained on inputs with Gaussian noise of std ``noise`` (clipped to the bounds; torch's
    global generator, which the training loop seeds) to reconstruct the clean input: mean
    squared error + ``weight_regularization`` x the squared L2 norm of the convolution
    weights (MagNet's 1e-9).  Defaults: MagNet's network (channels 3; 310 parameters on
    MNIST), 20 epochs of 128.  Presets: ``paper`` (100 epochs of 256, as MagNet trains it),
    ``cpu`` (10 epochs of 128: about 1 s per epoch on the MNIST sample, 2 cores).
    """

    name: ClassVar[str] = "magnet-dae"
    presets: ClassVar[dict] = {
        "paper": {"channels": 3, "noise": 0.1, "epochs": 100, "batch_size": 256},
        "cpu": {"channels": 3, "noise": 0.1, "epochs": 10, "batch_size": 128},
    }

    channels: int = param(3, "channels of the hidden convolutions", positive_int)
    noise: float = param(0.1, "std of the Gaussian training noise (in input units)",
                         non_negative)
    weight_regularization: float = param(
        1e-9, "weight of the squared L2 norm of the convolution weights", non_negative)

    def build(self, info):
        return DenoisingAutoencoder(info, self.channels)

    def loss(self, module, x, y, classifier, progress=0.0):
        low, high = module.low, module.low + module.span
        noisy = (x + self.noise * module.span * torch.randn_like(x)).clamp(low, high)
        loss = F.mse_loss(module.reconstruct(noisy), x)
        if self.weight_regularization:
            squares = sum(m.weight.square().sum() for m in module.modules()
                          if isinstance(m, nn.Conv2d))
            loss = loss + self.weight_regularization * squares
        return loss
