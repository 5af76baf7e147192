"""The ``synthetic`` dataset: small, generated, quickly learnable images for tests and demos.

Each class has a fixed random template, a few solid blobs with soft edges, chosen far apart from
the other classes' templates; a sample is its class's template plus Gaussian pixel noise, clipped
to [0, 1]. Everything is determined by the parameters: the templates, the train samples and the
test samples come from three independent streams spawned from ``seed``, so changing ``n_test``
leaves the training set unchanged.
"""

import functools
import math
from typing import ClassVar

import attrs
import numpy as np
import torch
from advx import Dataset, DatasetInfo, ParameterError

from .arrays import check_split

GENERATOR_VERSION = 1  # bump whenever the generated data changes
BLOBS_PER_TEMPLATE = 3
CANDIDATES_PER_CLASS = 4  # templates are picked far apart from this many random shapes each


def _int_at_least(minimum):
    def check(instance, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ParameterError(f"{attribute.name} must be an integer >= {minimum}, "
                                 f"got {value!r}")
    return check


def _non_negative_number(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise ParameterError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _int_to_float(value):
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _param(default, help, validator, converter=None):
    return attrs.field(default=default, validator=validator, converter=converter,
                       metadata={"help": help})


@attrs.frozen(kw_only=True)
class SyntheticDataset(Dataset):
    """Generated blob images, one random template per class plus noise: learnable in seconds."""

    name: ClassVar[str] = "synthetic"

    n_train: int = _param(512, "number of training images", _int_at_least(1))
    n_test: int = _param(256, "number of test images", _int_at_least(1))
    num_classes: int = _param(10, "number of classes (one template each)", _int_at_least(2))
    channels: int = _param(1, "image channels", _int_at_least(1))
    size: int = _param(28, "image height and width in pixels", _int_at_least(4))
    noise: float = _param(0.1, "standard deviation of the Gaussian pixel noise",
                          _non_negative_number, _int_to_float)
    seed: int = _param(0, "seed of the templates and the noise", _int_at_least(0))

    @property
    def info(self):
        return DatasetInfo(shape=(self.channels, self.size, self.size),
                           num_classes=self.num_classes,
                           class_names=tuple(str(k) for k in range(self.num_classes)))

    def load(self, split):
        x, y = generate(self, check_split(split))
        return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())

    def identity(self):
        """Name, generator version and every parameter: they fully determine the data."""
        return {"name": self.name, "generator_version": GENERATOR_VERSION,
                **attrs.asdict(self)}

    def templates(self):
        """The class templates, float32 (num_classes, C, H, W) in [0, 1]."""
        return make_templates(self.num_classes, self.channels, self.size, _streams(self.seed)[0])


def _streams(seed):
    """Independent seeds for the templates, the train split and the test split."""
    return np.random.SeedSequence(seed).spawn(3)


@functools.lru_cache(maxsize=8)
def generate(dataset, split):
    """``(x, y)`` numpy arrays of ``split`` of the (hashable, frozen) ``dataset``; cached."""
    templates = dataset.templates()
    count = dataset.n_train if split == "train" else dataset.n_test
    rng = np.random.default_rng(_streams(dataset.seed)[1 if split == "train" else 2])
    labels = rng.permutation(np.arange(count) % dataset.num_classes)
    noise = rng.standard_normal((count, *templates.shape[1:]), dtype=np.float32)
    x = np.clip(templates[labels] + np.float32(dataset.noise) * noise, 0.0, 1.0)
    return x, labels.astype(np.int64)


def make_templates(num_classes, channels, size, seed):
    """One template per class: the most mutually distant of several random blob shapes."""
    candidates = blob_shapes(CANDIDATES_PER_CLASS * num_classes, channels, size, seed)
    return candidates[farthest_points(candidates.reshape(len(candidates), -1), num_classes)]


def blob_shapes(count, channels, size, seed):
    """``count`` random images (count, C, H, W) in [0, 0.9]: a few blobs, sharpened to solids."""
    rng = np.random.default_rng(seed)
    shape = (count, channels, BLOBS_PER_TEMPLATE, 1, 1)
    centers_y, centers_x = (rng.uniform(0.2, 0.8, shape) * size for _ in range(2))
    widths = rng.uniform(0.08, 0.16, shape) * size
    heights = rng.uniform(0.5, 1.0, shape)
    grid = np.arange(size, dtype=np.float64) + 0.5
    squared = (grid[:, None] - centers_y) ** 2 + (grid[None, :] - centers_x) ** 2
    blobs = _normalize((heights * np.exp(-squared / (2 * widths**2))).sum(axis=2))
    solids = _normalize(1.0 / (1.0 + np.exp(-12.0 * (blobs - 0.4))))
    return (0.9 * solids).astype(np.float32)


def _normalize(images):
    return images / images.max(axis=(-2, -1), keepdims=True)


def farthest_points(points, k):
    """Indices of ``k`` rows of ``points`` chosen greedily, each farthest from those before."""
    chosen = [0]
    distance = np.linalg.norm(points - points[0], axis=1)
    for _ in range(k - 1):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.array(chosen)
