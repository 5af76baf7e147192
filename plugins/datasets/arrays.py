"""Image datasets held as uint8 arrays, loaded once per source and handed out as float tensors.

Shared by the ``mnist`` and ``fashion-mnist`` datasets: the standard four IDX file names, finding
them in a directory, loading and checking them (cached per resolved directory), and a content
digest for :meth:`advx.Dataset.identity`.
"""

import functools
import hashlib
from pathlib import Path

import attrs
import numpy as np
import torch
from advx import UsageError

from .idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

SPLITS = ("train", "test")

# split -> (images file, labels file), without the optional ".gz"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_FILE_LIST = ", ".join(f"{name}[.gz]" for pair in IDX_FILES.values() for name in pair)


def check_split(split):
    """``split`` itself when it is "train" or "test"; :class:`UsageError` otherwise."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


@attrs.frozen(kw_only=True)
class ImageArrays:
    """Train and test images (N, C, H, W) and labels (N,), all uint8, of one source."""

    x_train: np.ndarray = attrs.field(eq=False, repr=False)
    y_train: np.ndarray = attrs.field(eq=False, repr=False)
    x_test: np.ndarray = attrs.field(eq=False, repr=False)
    y_test: np.ndarray = attrs.field(eq=False, repr=False)
    sha256: str = attrs.field(init=False, default=attrs.Factory(
        lambda self: content_sha256(self.x_train, self.y_train, self.x_test, self.y_test),
        takes_self=True))

    def tensors(self, split):
        """``(x, y)`` of ``split``: fresh float32 tensors in [0, 1] and int64 labels."""
        x, y = (self.x_train, self.y_train) if check_split(split) == "train" else (
            self.x_test, self.y_test)
        x = torch.from_numpy(x).to(torch.float32).div_(255.0)
        return x, torch.from_numpy(y).to(torch.int64)

    def counts(self):
        """``{"train": n, "test": n}``."""
        return {"train": len(self.y_train), "test": len(self.y_test)}


def content_sha256(*arrays):
    """Hex sha256 of the dtypes, shapes and bytes of ``arrays`` (independent of file format)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def find_idx_files(directory):
    """``{split: (images path, labels path)}`` when ``directory`` holds all four files, else None.

    Each file may be raw or gzip-compressed (``.gz``); the raw file wins when both exist.
    """
    directory = Path(directory)
    found = {}
    for split, names in IDX_FILES.items():
        paths = [_existing(directory, name) for name in names]
        if None in paths:
            return None
        found[split] = tuple(paths)
    return found


def _existing(directory, name):
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_directory(directory, num_classes=10, image_shape=(28, 28)):
    """The :class:`ImageArrays` of the IDX files in ``directory``, cached while they are unchanged.

    Images must be uint8 of ``image_shape`` and labels uint8 below ``num_classes``.
    """
    files = find_idx_files(directory)
    if files is None:
        raise UsageError(f"{str(directory)!r} does not hold the IDX files {IDX_FILE_LIST}")
    stamp = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                  for pair in files.values() for p in pair)
    return _load_idx_files(stamp, num_classes, tuple(image_shape))


@functools.lru_cache(maxsize=4)
def _load_idx_files(stamp, num_classes, image_shape):
    paths = [Path(entry[0]) for entry in stamp]
    train = _read_pair(paths[0], paths[1], num_classes, image_shape)
    test = _read_pair(paths[2], paths[3], num_classes, image_shape)
    return ImageArrays(x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])


def _read_pair(images_path, labels_path, num_classes, image_shape):
    images = read_idx(images_path, magic=IMAGES_MAGIC)
    labels = read_idx(labels_path, magic=LABELS_MAGIC)
    if images.shape[1:] != image_shape:
        raise UsageError(f"{str(images_path)!r} holds images of {images.shape[1:]} pixels; "
                         f"expected {image_shape}")
    if len(images) != len(labels):
        raise UsageError(f"{str(images_path)!r} holds {len(images)} images but "
                         f"{str(labels_path)!r} holds {len(labels)} labels")
    if labels.size and labels.max() >= num_classes:
        raise UsageError(f"{str(labels_path)!r} holds label {int(labels.max())}; "
                         f"allowed: 0 to {num_classes - 1}")
    return images[:, None, :, :], labels
