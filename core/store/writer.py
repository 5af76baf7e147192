"""Writing one adversarial set batch by batch, so that a killed run resumes and loses nothing.

A set being computed lives in ``<key>.partial.h5``. It is created whole (every dataset allocated
at full size, contiguous, the inputs y/indices/targets written) under a temporary name and
renamed into place, so from then on writing a batch only overwrites bytes already allocated and
never changes the file's structure. Each batch is written in this order:

1. its rows of x_adv, success, distance, pred and queries; flush and fsync;
2. its completion record: the rows' sha256 and the seconds it took, then ``done = 1``; flush
   and fsync.

A kill between the two steps leaves rows without a record: they are recomputed. On resume every
recorded batch is checked against its digest, so a torn write is recomputed, never trusted. A
partial file that cannot be opened, or was made for another layout, is discarded.

When every batch is done, :meth:`SetWriter.finish` writes the complete file (x_adv chunked and
compressed), renames it to ``<key>.h5`` and removes the partial file. Only one process works on
a key at a time (:class:`advx.store.SetLock`).
"""

import contextlib
import json
import os
import pathlib
import uuid

import h5py
import numpy as np

from .format import (
    FINAL_SUFFIX,
    FORMAT,
    FORMAT_VERSION,
    INPUTS,
    PARTIAL_SUFFIX,
    RESULTS,
    CorruptSetError,
    arrays_digest,
    check_format,
    fsync_path,
)

FILL_ROWS = 4096  # rows zero-filled per write when a partial file is created


class SetWriter:
    """The partial file of one set; see the module docstring for the protocol."""

    def __init__(self, directory, key, inputs, batch_size, provenance):
        self.directory = pathlib.Path(directory)
        self.key, self.inputs, self.batch_size = key, inputs, int(batch_size)
        self.provenance = provenance
        self.n = len(inputs["y"])
        self.starts = list(range(0, self.n, self.batch_size))
        self.path = self.directory / f"{key}{PARTIAL_SUFFIX}"
        self.final_path = self.directory / f"{key}{FINAL_SUFFIX}"
        self._file = None

    # -- resuming --------------------------------------------------------------------------

    def done_batches(self, layout):
        """Indices of batches already stored and verified; discards an unusable partial file.

        ``layout`` maps each result name to ``(dtype, row shape)``; a partial file made for
        another layout (or another set) is removed and recomputed.
        """
        if not self.path.exists():
            return set()
        try:
            with h5py.File(self.path, "r", locking=False) as f:
                self._check_partial(f, layout)
                return self._verified(f)
        except (OSError, KeyError, ValueError, TypeError, CorruptSetError, _Mismatch):
            self.path.unlink(missing_ok=True)
            return set()

    def _check_partial(self, f, layout):
        check_format(f, self.path)
        if f.attrs.get("key") != self.key or len(f["batches"]["done"]) != len(self.starts):
            raise _Mismatch
        for name, (dtype, shape) in layout.items():
            if f[name].dtype != dtype or f[name].shape != (self.n, *shape):
                raise _Mismatch
        for name in INPUTS:
            if not np.array_equal(f[name][()], self.inputs[name]):
                raise _Mismatch

    def _verified(self, f):
        done = f["batches"]["done"][()]
        digests = f["batches"]["digest"][()]
        good = set()
        for index in np.flatnonzero(done):
            start, stop = self._rows(index)
            rows = {name: f[name][start:stop] for name in RESULTS}
            if arrays_digest(rows) == digests[index].decode():
                good.add(int(index))
        return good

    # -- writing ---------------------------------------------------------------------------

    def open(self, layout):
        """Open the partial file for writing, creating it if absent."""
        if not self.path.exists():
            self._create(layout)
        self._file = h5py.File(self.path, "r+")
        return self

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def write_batch(self, index, results, seconds):
        """Store batch ``index`` (a dict of numpy arrays) and then its completion record."""
        f = self._file
        start, stop = self._rows(index)
        for name in RESULTS:
            f[name][start:stop] = results[name]
        self._sync()
        batches = f["batches"]
        batches["digest"][index] = arrays_digest(results).encode()
        batches["seconds"][index] = seconds
        batches["done"][index] = 1
        self._sync()

    def finish(self):
        """Write the complete file, rename it to ``<key>.h5``, remove the partial file."""
        self.close()
        with h5py.File(self.path, "r") as f:
            if not f["batches"]["done"][()].all():
                raise RuntimeError(f"{self.path.name}: finish() before every batch is stored")
            arrays = {name: f[name][()] for name in RESULTS + INPUTS}
            seconds = f["batches"]["seconds"][()]
        temp = self.directory / f".{self.key}.{uuid.uuid4().hex}.tmp"
        try:
            with h5py.File(temp, "w-") as out:
                _write_complete(out, self.key, arrays, self._records(seconds), self.provenance)
            fsync_path(temp)
            os.replace(temp, self.final_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        fsync_path(self.directory)
        self.path.unlink(missing_ok=True)
        return self.final_path

    # -- internals -------------------------------------------------------------------------

    def _rows(self, index):
        start = self.starts[index]
        return start, min(start + self.batch_size, self.n)

    def _records(self, seconds):
        starts = np.asarray(self.starts, dtype=np.int64)
        stops = np.minimum(starts + self.batch_size, self.n)
        return {"start": starts, "stop": stops, "seconds": np.asarray(seconds, np.float64)}

    def _sync(self):
        self._file.flush()
        fsync_path(self.path)

    def _create(self, layout):
        self.directory.mkdir(parents=True, exist_ok=True)
        temp = self.directory / f".{self.key}.{uuid.uuid4().hex}.partial.tmp"
        try:
            with h5py.File(temp, "w-") as f:
                _set_attrs(f, self.key, self.provenance, complete=False)
                for name, (dtype, shape) in layout.items():
                    _allocate(f, name, (self.n, *shape), dtype)
                for name in INPUTS:
                    f.create_dataset(name, data=self.inputs[name], track_times=False)
                group = f.create_group("batches")
                count = len(self.starts)
                _allocate(group, "done", (count,), np.uint8)
                _allocate(group, "seconds", (count,), np.float64)
                _allocate(group, "digest", (count,), "S64")
            fsync_path(temp)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


class _Mismatch(Exception):
    """A partial file made for another set or layout."""


def _allocate(group, name, shape, dtype):
    """A contiguous dataset of ``shape``, written in full with zeros so its space is allocated."""
    dataset = group.create_dataset(name, shape=shape, dtype=dtype, track_times=False)
    zeros = np.zeros((min(FILL_ROWS, shape[0]), *shape[1:]), dtype=dataset.dtype)
    for start in range(0, shape[0], FILL_ROWS):
        stop = min(start + FILL_ROWS, shape[0])
        dataset[start:stop] = zeros[: stop - start]


def _set_attrs(f, key, provenance, complete):
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["key"] = key
    f.attrs["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
    f.attrs["complete"] = complete


def _write_complete(f, key, arrays, records, provenance):
    _set_attrs(f, key, provenance, complete=True)
    for name, values in arrays.items():
        options = {}
        if values.ndim > 1 and values.size:  # the images: chunked by rows, compressed
            rows = max(1, min(len(values), (1 << 20) // max(1, values[0].nbytes)))
            options = {"chunks": (rows, *values.shape[1:]), "compression": "gzip",
                       "compression_opts": 4, "shuffle": True}
        f.create_dataset(name, data=values, track_times=False, **options)
    group = f.create_group("batches")
    for name, values in records.items():
        group.create_dataset(name, data=values, track_times=False)
    f.attrs["digest"] = arrays_digest(arrays)
