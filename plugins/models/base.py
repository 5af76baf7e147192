"""The module shape every built-in model shares: ``features`` then a linear ``head``."""

import torch
from advx import UsageError
from torch import nn


class FeatureClassifier(nn.Module):
    """``head(features(x))``: ``features`` ends in the penultimate representation (N, D).

    Hook ``model.features`` (an ``nn.Sequential``) for intermediate activations and
    ``model.conv_layers()`` for the convolutions; ``model.head`` maps features to logits.
    """

    def __init__(self, features, head):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x):
        return self.head(self.features(x))

    def conv_layers(self):
        """The ``nn.Conv2d`` layers of the feature extractor, input side first."""
        return [layer for layer in self.features if isinstance(layer, nn.Conv2d)]


def output_size(layers, info, model_name):
    """Number of features ``layers`` produce per sample for inputs shaped ``info.shape``."""
    try:
        with torch.no_grad():
            return nn.Sequential(*layers)(torch.zeros(1, *info.shape)).numel()
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"model {model_name!r} cannot take inputs of shape {info.shape} "
                         f"(needs (C, H, W) large enough for its convolutions): {exc}") from None


def classifier(conv_part, dense_part, info, model_name):
    """A :class:`FeatureClassifier` from convolutions, a dense builder and ``info``.

    ``dense_part(flat)`` returns ``(layers, width)``: the dense layers after flattening ``flat``
    features, and the width of the penultimate features they end with.
    """
    flat = output_size(conv_part, info, model_name)
    dense, width = dense_part(flat)
    features = nn.Sequential(*conv_part, nn.Flatten(), *dense)
    return FeatureClassifier(features, nn.Linear(width, info.num_classes))
