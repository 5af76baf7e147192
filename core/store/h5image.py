"""HDF5 files built in memory and written by Python, so that a full disk is a clean error.

When a write fails (disk full, quota, read-only folder), HDF5 cannot close the file: it prints
"Exception ignored" tracebacks while releasing its objects and crashes when the interpreter
exits (measured: exit 139 on a full tmpfs while a set was finalised). So advx never lets HDF5
write a file on disk: :func:`write_h5` builds the file in memory (the ``core`` driver, no
backing store) and writes its bytes atomically with plain Python I/O, where a refusal is an
ordinary ``OSError`` (turned into :class:`~advx.kernel.errors.StorageError`). Rows of a set
being computed are written the same way, at their datasets' offsets
(:mod:`advx.store.rows`).
"""

import uuid

import h5py

from .atomic import write_bytes


def h5_image(fill):
    """The bytes of an HDF5 file that ``fill(f)`` fills (``f`` an open, writable h5py File)."""
    with h5py.File(f"advx-{uuid.uuid4().hex}.h5", "w", driver="core",
                   backing_store=False) as f:
        fill(f)
        f.flush()
        return f.id.get_file_image()


def write_h5(path, fill):
    """Create the HDF5 file ``path`` atomically: ``fill(f)`` fills it in memory, then its bytes
    are written to disk (see the module docstring)."""
    return write_bytes(path, h5_image(fill))
