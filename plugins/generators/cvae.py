"""The class-conditional VAE of PuVAE (Hwang et al., 2019), built to reconstruct every input
under every class cheaply."""

from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ._common import (
    Bounded,
    TrainedGenerator,
    bernoulli_nll,
    frozen_logits,
    gaussian_kl,
    halvings,
    non_negative,
    param,
    positive_int,
    upsampling,
)

MIN_SCALE = 1e-6  # added to the softplus scale head so that log(scale) stays finite


class DilatedConv(nn.Conv2d):
    """Conv2d(kernel k, stride 1, dilation 2, padding k - 1: "same"), computed exactly as an
    undilated convolution on the four sub-grids of even and odd rows and columns.

    A dilation-2 tap only ever reads pixels of its output pixel's own row and column parity,
    so each sub-grid is convolved on its own with the same weights (padding ``k // 2``; an odd
    size gets one zero row or column, the padding's value, and loses it again).  Same
    parameters and result as the dilated convolution, but torch's CPU backward of a dilated
    convolution is about 9x slower than this (measured: 8 channels, 28 x 28, batch 64).
    """

    def __init__(self, channels_in, channels_out, kernel):
        super().__init__(channels_in, channels_out, kernel, padding=kernel - 1, dilation=2)

    def forward(self, x):
        n, c, h, w = x.shape
        x = F.pad(x, (0, w % 2, 0, h % 2))
        hh, wh = x.shape[2] // 2, x.shape[3] // 2
        grids = x.reshape(n, c, hh, 2, wh, 2).permute(0, 3, 5, 1, 2, 4).reshape(4 * n, c, hh, wh)
        out = F.conv2d(grids, self.weight, self.bias, padding=self.kernel_size[0] // 2)
        k = out.shape[1]
        out = out.view(n, 2, 2, k, hh, wh).permute(0, 3, 4, 1, 5, 2).reshape(n, k, 2 * hh,
                                                                              2 * wh)
        return out[:, :, :h, :w]


class ConditionalVae(Bounded):
    """Encoder ``x, y -> (mean, scale)`` and decoder ``z, y -> x`` of the ``cvae`` generator.

    The label joins the first fully connected layer as a one-hot vector concatenated to the
    flattened convolutional features.  That layer is ``W [f; onehot(y)] + b = W_f f + W_y[:, y]
    + b``, so the features and ``W_f f`` are computed once per input and each class only adds
    its column ``W_y[:, y]``: :meth:`encode_all` encodes an input under all classes for the
    price of one convolutional pass.  Decoding is one batched call over every (input, class).
    """

    def __init__(self, info, channels, hidden, latent):
        super().__init__(info)
        c, h, w = info.shape
        self.num_classes, self.latent = info.num_classes, latent
        convs = []
        for i in range(3):  # dilated 7x7 "same" convolutions: the size stays H x W
            convs += [DilatedConv(c if i == 0 else channels, channels, 7), nn.ReLU()]
        self.convs = nn.Sequential(*convs, nn.Flatten())
        self.features = channels * h * w
        self.fc1 = nn.Linear(self.features + self.num_classes, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.mean = nn.Linear(hidden, latent)
        self.scale = nn.Linear(hidden, latent)
        heights, widths = halvings(h, 3), halvings(w, 3)
        self.start = (channels, heights[0], widths[0])
        self.dec_fc = nn.Linear(latent + self.num_classes, channels * heights[0] * widths[0])
        ups = []
        for i in range(3):
            ups += [upsampling(channels, channels, 7, (heights[i], widths[i]),
                               (heights[i + 1], widths[i + 1])), nn.ReLU()]
        self.deconvs = nn.Sequential(*ups, nn.ConvTranspose2d(channels, c, 3, padding=1))

    # -- encoder -----------------------------------------------------------------------------

    def _heads(self, pre):
        hidden = F.relu(self.fc2(F.relu(pre)))
        return self.mean(hidden), F.softplus(self.scale(hidden)) + MIN_SCALE

    def _shared(self, x):
        """``W_f f + b`` of the first FC layer, once per input: (N, hidden)."""
        weight = self.fc1.weight[:, :self.features]
        return F.linear(self.convs(x), weight, self.fc1.bias)

    def _label_columns(self):
        """``W_y``'s columns as rows: row ``k`` is class ``k``'s contribution, (K, hidden)."""
        return self.fc1.weight[:, self.features:].t()

    def encode(self, x, y):
        """``(mean, scale)`` of q(z | x, y), each (N, latent)."""
        return self._heads(self._shared(x) + self._label_columns()[y])

    def encode_all(self, x):
        """``(mean, scale)`` of q(z | x, k) for every class k, each (N, K, latent)."""
        return self._heads(self._shared(x).unsqueeze(1) + self._label_columns().unsqueeze(0))

    # -- decoder -----------------------------------------------------------------------------

    def decode_logits(self, z, y):
        """The decoder's pre-sigmoid output for latents ``z`` (N, latent) and labels ``y``."""
        onehot = F.one_hot(y, self.num_classes).to(z.dtype)
        start = self.dec_fc(torch.cat([z, onehot], 1))  # linear: no unit can die here
        return self.deconvs(start.view(len(z), *self.start))

    def decode(self, z, y):
        """Images in the bounds decoded from ``z`` under labels ``y``."""
        return self.from_logits(self.decode_logits(z, y))

    # -- reconstructions (deterministic: the latent mean) -------------------------------------

    def reconstruct(self, x, y):
        """``x`` reconstructed under one class per row, ``y`` (N,) int64."""
        return self.decode(self.encode(x, y)[0], y)

    def reconstruct_all(self, x):
        """``x`` reconstructed under every class: (N, K, C, H, W), decoded in one batch."""
        n, k = len(x), self.num_classes
        mean, _ = self.encode_all(x)
        labels = torch.arange(k, device=x.device).repeat(n)
        return self.decode(mean.reshape(n * k, self.latent), labels).view(n, k, *x.shape[1:])

    def forward(self, x, y):
        return self.reconstruct(x, y)


@attrs.frozen(kw_only=True)
class Cvae(TrainedGenerator):
    """Class-conditional VAE of PuVAE (Hwang et al., 2019): dilated convolutions, FC, one-hot.

    Encoder: three Conv(``channels``, 7x7, stride 1, dilation 2, padding 6) + ReLU (the size
    stays H x W), the flattened features and the one-hot label into FC(``hidden``) + ReLU,
    FC(``hidden``) + ReLU, then a mean head and a softplus scale head of size ``latent``.
    Decoder: ``[z, onehot(y)]`` into FC(``channels`` x h0 x w0) (linear: on small images
    it has few units, and a dead ReLU there would cut the decoder from z), reshaped to
    ``channels`` x h0 x w0 with h0 = ceil(H / 8), then three ConvTranspose(``channels``, 7x7,
    stride 2, padding 3) + ReLU whose output paddings go h0 -> ceil(H / 4) -> ceil(H / 2) -> H
    (4 -> 7 -> 14 -> 28 on MNIST, where the FC has 32 x 4 x 4 = 512 units), and
    ConvTranspose(C, 3x3, padding 1) and a sigmoid onto the input bounds.  Any (C, H, W) works.
    ``reconstruct(x, y)`` decodes the latent mean; ``reconstruct_all(x)`` gives (N, K, C, H, W)
    with one convolutional encoder pass per input (see :class:`ConditionalVae`).

    Loss: ``reconstruction_weight`` x the Bernoulli negative log-likelihood summed over pixels
    + ``kl_weight`` x KL(q(z | x, y) || N(0, I)) + ``classifier_weight`` x the cross-entropy
    of the frozen classifier (eval mode, no gradient into its weights) on the reconstruction
    under the true label.  The weights 1, 1, 10 were chosen (the classifier term must matter
    next to a ~100-nat reconstruction term), not taken from the paper.

    Defaults: the appendix's network (channels 32, hidden 1024, latent 32; 27.1 M parameters
    on MNIST, 25.7 M of them in the first FC layer), trained 20 epochs of 128 (Adam, 1e-3).
    Presets: ``paper`` (the same network, batches of 512, 350 epochs; use latent = 128 for
    Fashion-MNIST), ``cpu`` (channels 8, hidden 128, latent 16, 5 epochs of 64: 0.84 M
    parameters; on the 8,000-digit MNIST sample, 2 cores otherwise idle, about 12 s per epoch
    with a blog-cnn classifier in the loss, and ``reconstruct_all`` of 500 digits 1.2 s).
    """

    name: ClassVar[str] = "cvae"
    conditional: ClassVar[bool] = True
    uses_classifier: ClassVar[bool] = True
    presets: ClassVar[dict] = {
        "paper": {"channels": 32, "hidden": 1024, "latent": 32, "epochs": 350,
                  "batch_size": 512},
        "cpu": {"channels": 8, "hidden": 128, "latent": 16, "epochs": 5, "batch_size": 64},
    }

    channels: int = param(32, "channels of every convolution", positive_int)
    hidden: int = param(1024, "width of the encoder's two FC layers", positive_int)
    latent: int = param(32, "latent size (PuVAE: 32 on MNIST, 128 on Fashion-MNIST)",
                        positive_int)
    reconstruction_weight: float = param(1.0, "weight of the reconstruction term",
                                         non_negative)
    kl_weight: float = param(1.0, "weight of the KL term", non_negative)
    classifier_weight: float = param(
        10.0, "weight of the frozen classifier's cross-entropy on the reconstruction",
        non_negative)

    def build(self, info):
        return ConditionalVae(info, self.channels, self.hidden, self.latent)

    def loss(self, module, x, y, classifier, progress=0.0):
        mean, scale = module.encode(x, y)
        z = mean + scale * torch.randn_like(scale)
        logits = module.decode_logits(z, y)
        loss = (self.reconstruction_weight * bernoulli_nll(module, logits, x).mean()
                + self.kl_weight * gaussian_kl(mean, 2 * scale.log()).mean())
        if self.classifier_weight and classifier is not None:
            logits_c = frozen_logits(classifier, module.from_logits(logits))
            loss = loss + self.classifier_weight * F.cross_entropy(logits_c, y)
        return loss
