"""A small unconditional convolutional VAE, the one the VAE-KL detector reconstructs with."""

from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ._common import (
    Bounded,
    TrainedGenerator,
    bernoulli_nll,
    fraction,
    gaussian_kl,
    halvings,
    non_negative,
    param,
    positive_int,
    upsampling,
)


class ConvolutionalVae(Bounded):
    """Encoder ``x -> (mean, log_var)`` and decoder ``z -> x`` of the ``conv-vae`` generator."""

    def __init__(self, info, channels, hidden, latent):
        super().__init__(info)
        c, h, w = info.shape
        heights, widths = halvings(h, 2), halvings(w, 2)
        wide = 2 * channels
        self.start = (wide, heights[0], widths[0])
        flat = wide * heights[0] * widths[0]
        self.encoder = nn.Sequential(
            nn.Conv2d(c, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, wide, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent)
        self.log_var = nn.Linear(hidden, latent)
        self.dec_fc = nn.Linear(latent, flat)
        self.deconvs = nn.Sequential(
            upsampling(wide, wide, 3, (heights[0], widths[0]), (heights[1], widths[1])),
            nn.ReLU(),
            upsampling(wide, channels, 3, (heights[1], widths[1]), (heights[2], widths[2])),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, c, 3, padding=1))

    def encode(self, x):
        """``(mean, log_var)`` of q(z | x), each (N, latent)."""
        hidden = self.encoder(x)
        return self.mean(hidden), self.log_var(hidden)

    def decode_logits(self, z):
        """The decoder's pre-sigmoid output for latents ``z``."""
        return self.deconvs(F.relu(self.dec_fc(z)).view(len(z), *self.start))

    def decode(self, z):
        """Images in the bounds decoded from ``z``."""
        return self.from_logits(self.decode_logits(z))

    def reconstruct(self, x):
        """``x`` reconstructed from its latent mean (deterministic)."""
        return self.decode(self.encode(x)[0])

    def forward(self, x):
        return self.reconstruct(x)


@attrs.frozen(kw_only=True)
class ConvVae(TrainedGenerator):
    """Convolutional VAE with a 2-dimensional latent (the Keras VAE example's network).

    Encoder: Conv(``channels``, 3x3, stride 2, padding 1) + ReLU, Conv(2 x ``channels``, 3x3,
    stride 2, padding 1) + ReLU, flatten, FC(``hidden``) + ReLU, then mean and log-variance
    heads of size ``latent``.  Decoder: FC(2 x ``channels`` x ceil(H/4) x ceil(W/4)) + ReLU,
    reshaped, ConvTranspose(2 x ``channels``, 3x3, stride 2) + ReLU, ConvTranspose(``channels``,
    3x3, stride 2) + ReLU (output paddings chosen to reach H x W: 7 -> 14 -> 28 on MNIST),
    ConvTranspose(C, 3x3, padding 1) and a sigmoid onto the input bounds.  Loss: the Bernoulli
    negative log-likelihood summed over pixels + ``kl_weight`` x KL(q(z | x) || N(0, I)), the
    KL weight rising linearly from 0 over the first ``kl_warmup`` of training (Bowman et al.,
    2016).  Without the warm-up, training with the `cpu` preset on the MNIST sample collapsed
    onto the prior (the latent means of 200 test digits spread by 0.0008; every
    reconstruction the same average digit, which blog-cnn reads as an 8).
    ``reconstruct(x)`` decodes the latent mean.

    Defaults (channels 32, hidden 16, latent 2; about 134 k parameters on MNIST) are the Keras
    example's network, trained 20 epochs of 128.  Presets: ``paper`` (the same, 30 epochs of
    128 as the Keras example trains it), ``cpu`` (the same network, 10 epochs of 128: about
    6 s per epoch on the 8,000-digit MNIST sample, 2 cores).
    """

    name: ClassVar[str] = "conv-vae"
    presets: ClassVar[dict] = {
        "paper": {"channels": 32, "hidden": 16, "latent": 2, "epochs": 30, "batch_size": 128},
        "cpu": {"channels": 32, "hidden": 16, "latent": 2, "epochs": 10, "batch_size": 128},
    }

    channels: int = param(32, "channels of the first convolution (the second has twice)",
                          positive_int)
    hidden: int = param(16, "width of the encoder's FC layer", positive_int)
    latent: int = param(2, "latent size", positive_int)
    kl_weight: float = param(1.0, "weight of the KL term", non_negative)
    kl_warmup: float = param(0.3, "fraction of training over which the KL weight rises "
                             "linearly from 0 (against posterior collapse; 0: none)", fraction)

    def build(self, info):
        return ConvolutionalVae(info, self.channels, self.hidden, self.latent)

    def loss(self, module, x, y, classifier, progress=0.0):
        mean, log_var = module.encode(x)
        z = mean + (0.5 * log_var).exp() * torch.randn_like(mean)
        nll = bernoulli_nll(module, module.decode_logits(z), x)
        warm = min(1.0, progress / self.kl_warmup) if self.kl_warmup else 1.0
        return (nll + warm * self.kl_weight * gaussian_kl(mean, log_var)).mean()
