"""Small seeded networks and batches the contract suites run plugins on (CPU, 8x8 images)."""

import torch

from ..kernel.generative import class_reconstructions

NUM_CLASSES = 10
SIDE = 8
# A radius per norm that changes an 8x8 image noticeably without covering the whole box.
TYPICAL_EPS = {"linf": 0.1, "l2": 1.0, "l1": 4.0, "l0": 5}


def build_network(kind, channels, seed=0):
    """A small seeded network on (N, channels, 8, 8) inputs: "conv", "mlp" or "linear"."""
    inputs = channels * SIDE * SIDE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "conv":
            return torch.nn.Sequential(
                torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(),
                torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                torch.nn.Flatten(), torch.nn.Linear(8 * (SIDE // 2) ** 2, NUM_CLASSES))
        if kind == "mlp":
            return torch.nn.Sequential(
                torch.nn.Flatten(), torch.nn.Linear(inputs, 32), torch.nn.ReLU(),
                torch.nn.Linear(32, NUM_CLASSES))
        if kind == "linear":
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(inputs, NUM_CLASSES))
    raise ValueError(f"unknown network kind {kind!r}")


def random_batch(n=6, channels=1, seed=0):
    """``(x, y, targets)``: seeded images in [0, 1] (some pixels exactly 0 or 1) and labels."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, channels, SIDE, SIDE, generator=generator) * 1.4 - 0.2).clamp(0, 1)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    offset = torch.randint(1, NUM_CLASSES, (n,), generator=generator)
    return x, y, (y + offset) % NUM_CLASSES


def easy_eps(norm, channels):
    """A radius so large that the ball covers the whole [0, 1] box of an 8x8 image."""
    pixels = SIDE * SIDE
    return {"linf": 1.0, "l2": float(channels * pixels) ** 0.5,
            "l1": float(channels * pixels), "l0": pixels}[norm]


class WithReconstructions(torch.nn.Module):
    """``network`` as a stand-in generative classifier: its logits, and as every class's
    reconstruction of any input a seeded template image of that class (for the attacks that
    need ``class_reconstructions``, latent descent)."""

    def __init__(self, network, channels, seed=0):
        super().__init__()
        self.network = network
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("templates", torch.rand(NUM_CLASSES, channels, SIDE, SIDE,
                                                     generator=generator))

    def forward(self, x):
        return self.network(x)

    def class_reconstructions(self, x):
        templates = self.templates.to(x.dtype).unsqueeze(0)
        return self.network(x), templates.expand(len(x), *templates.shape[1:])


class NoBackward(torch.nn.Module):
    """Wraps a network so that any gradient flowing back through its output fails the test."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        return _no_backward(self.network(x))

    def class_reconstructions(self, x):
        logits, reconstructions = class_reconstructions(self.network, x)
        return _no_backward(logits), _no_backward(reconstructions)


def _no_backward(out):
    if out.requires_grad:
        out.register_hook(_refuse_gradient)
    return out


def _refuse_gradient(grad):
    raise AssertionError("a score- or decision-based attack ran a backward pass through the model")
