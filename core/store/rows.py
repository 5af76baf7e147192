"""Rows written into a partial set file by plain positional writes, never through HDF5.

A partial file's datasets are contiguous, unfiltered and allocated in full when it is created
(:mod:`advx.store.writer`), so a row ``i`` of dataset ``name`` lives at a fixed byte offset:
``offset(name) + i * row_bytes(name)``, stored in the dataset's own dtype. :class:`RowFile`
reads those offsets once through h5py (read-only) and then writes bytes with ``os.pwrite``:
a write the disk refuses is an ordinary ``OSError`` and HDF5 never holds a half-written file
(see :mod:`advx.store.h5image`). h5py reads the rows back as it would have written them.
"""

import os

import h5py
import numpy as np

from .atomic import write_at


class NotContiguous(Exception):
    """A dataset whose rows have no fixed place in the file (chunked, filtered, unallocated)."""


class RowFile:
    """Positional writes of rows into the allocated datasets ``names`` of an HDF5 file."""

    def __init__(self, path, names):
        self.path = path
        self._places = _places(path, names)
        self._fd = os.open(path, os.O_RDWR)

    def write(self, name, start, values):
        """Write ``values`` (rows ``start:start + len(values)``) of dataset ``name``."""
        offset, dtype, row_bytes = self._places[name]
        data = np.ascontiguousarray(values, dtype=dtype)
        write_at(self._fd, data, offset + start * row_bytes)

    def sync(self):
        os.fsync(self._fd)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _places(path, names):
    """name -> (byte offset, file dtype, bytes per row) of each dataset of ``names``."""
    places = {}
    with h5py.File(path, "r", locking=False) as f:
        for name in names:
            dataset = f[name]
            if not is_contiguous(dataset):
                raise NotContiguous(f"{path}: dataset {name!r} is not contiguous and allocated")
            offset = dataset.id.get_offset() or 0  # None: empty, never written
            dtype = _numpy_dtype(dataset)
            row_bytes = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dtype.itemsize
            places[name] = (offset, dtype, row_bytes)
    return places


def is_contiguous(dataset):
    """True if the rows of ``dataset`` have fixed places in its file (or it is empty)."""
    if dataset.chunks is not None or dataset.id.get_create_plist().get_nfilters():
        return False
    return dataset.size == 0 or dataset.id.get_offset() is not None


def _numpy_dtype(dataset):
    """The numpy dtype whose bytes are the dataset's stored bytes (bool is stored as int8)."""
    dtype = dataset.dtype
    return np.dtype(np.int8) if dtype == np.bool_ else dtype
