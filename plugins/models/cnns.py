"""The built-in convolutional classifiers for MNIST-sized (and larger) images.

Default recipes were chosen by measurement on the embedded MNIST sample (8,000 train / 2,000 test
digits, CPU): blog-cnn ~97.5% test accuracy in ~20 s, madry-cnn ~98.2% in ~50 s, classifier-a
~97.9% in ~85 s (one torch thread; seeds 0-2).
"""

from typing import ClassVar

import advx
import attrs
from torch import nn

from .base import classifier


def _channels(info):
    return info.shape[0]


@attrs.frozen(kw_only=True)
class BlogCnn(advx.ModelPlugin):
    """Small fast CNN: conv 16/32/64 3x3 (strides 1/2/2), ReLU, linear head; the quickstart."""

    name: ClassVar[str] = "blog-cnn"
    default_recipe: ClassVar[dict] = {"epochs": 8, "batch_size": 64, "lr": 3e-3,
                                      "lr_schedule": "cosine"}

    def build(self, info):
        convs = [
            nn.Conv2d(_channels(info), 16, 3, stride=1, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        ]
        return classifier(convs, lambda flat: ([], flat), info, self.name)


@attrs.frozen(kw_only=True)
class MadryCnn(advx.ModelPlugin):
    """The MNIST challenge model of Madry et al.: two conv 5x5 + max-pool blocks, fc 1024."""

    name: ClassVar[str] = "madry-cnn"
    default_recipe: ClassVar[dict] = {"epochs": 5, "batch_size": 64, "lr": 1e-3,
                                      "lr_schedule": "cosine"}

    def build(self, info):
        convs = [
            nn.Conv2d(_channels(info), 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        ]
        return classifier(convs, lambda flat: ([nn.Linear(flat, 1024), nn.ReLU()], 1024),
                          info, self.name)


@attrs.frozen(kw_only=True)
class ClassifierA(advx.ModelPlugin):
    """Classifier A of the PuVAE/Defense-GAN studies: conv 64 5x5, conv 64 5x5/2, fc 128."""

    name: ClassVar[str] = "classifier-a"
    default_recipe: ClassVar[dict] = {"epochs": 8, "batch_size": 64, "lr": 2e-3,
                                      "lr_schedule": "cosine"}

    def build(self, info):
        convs = [
            nn.Conv2d(_channels(info), 64, 5, stride=1), nn.ReLU(),
            nn.Conv2d(64, 64, 5, stride=2), nn.ReLU(),
            nn.Dropout(0.25),
        ]
        def dense_part(flat):
            return [nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(0.5)], 128

        return classifier(convs, dense_part, info, self.name)
