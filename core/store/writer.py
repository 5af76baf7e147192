"""Writing one adversarial set part by part, so that a killed run resumes and loses nothing.

A set being computed lives in ``<key>.partial.h5``. It is created whole (every dataset allocated
at full size, contiguous, the inputs y/indices/targets written) under a temporary name and
renamed into place, so from then on writing rows only overwrites bytes already allocated and
never changes the file's structure. Rows are written as *shards* (any range ``start:stop`` of
the set: a batch of this run, of a run with another batch size, or a worker's share), each in
this order:

1. its rows of x_adv, success, distance, pred and queries; flush and fsync;
2. its record in the next free slot: start, stop, the rows' sha256 and the seconds it took,
   then ``done = 1``; flush and fsync.

A kill between the two steps leaves rows without a record: they are recomputed. On resume every
recorded shard is checked against its digest, so a torn write is recomputed, never trusted. A
partial file that cannot be opened, or was made for another layout, is discarded.

When every row is recorded, :meth:`SetWriter.finish` writes the complete file (x_adv chunked
and compressed, the shard records sorted), renames it to ``<key>.h5`` and removes the partial
file. Only one process works on a key at a time (:class:`advx.store.lock.SetLock`).

HDF5 never writes these files on disk: they are built in memory and written by Python
(:mod:`advx.store.h5image`), rows by positional writes (:mod:`advx.store.rows`). A full disk
or an unwritable folder is a :class:`~advx.kernel.errors.StorageError` that leaves the partial
file with the shards recorded so far, which the next run resumes.
"""

import json
import pathlib

import h5py
import numpy as np

from .atomic import storage_errors
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
)
from .h5image import write_h5
from .rows import RowFile, is_contiguous

FILL_ROWS = 4096  # rows zero-filled per write when a partial file is created
SPARE_SLOTS = 64  # record slots beyond one per row (shards whose digest failed use one too)
RECORDS = ("start", "stop", "done", "seconds", "digest")  # datasets of the group "shards"


class SetWriter:
    """The partial file of one set; see the module docstring for the protocol."""

    def __init__(self, directory, key, inputs, provenance):
        self.directory = pathlib.Path(directory)
        self.key, self.inputs, self.provenance = key, inputs, provenance
        self.n = len(inputs["y"])
        self.slots = self.n + SPARE_SLOTS
        self.path = self.directory / f"{key}{PARTIAL_SUFFIX}"
        self.final_path = self.directory / f"{key}{FINAL_SUFFIX}"
        self._rows = None
        self._next_slot = 0
        self.results = RESULTS  # the result datasets: those of the layout (see _use)

    # -- resuming --------------------------------------------------------------------------

    def done_shards(self, layout):
        """``[(start, stop), ...]`` of the shards already stored and verified, sorted and not
        overlapping; discards an unusable partial file.

        ``layout`` maps each result name to ``(dtype, row shape)``; a partial file made for
        another layout (or another set) is removed and recomputed.
        """
        self._use(layout)
        if not self.path.exists():
            return []
        try:
            with h5py.File(self.path, "r", locking=False) as f:
                self._check_partial(f, layout)
                shards, self._next_slot = self._verified(f)
        except (OSError, KeyError, ValueError, TypeError, CorruptSetError, _Mismatch):
            self.path.unlink(missing_ok=True)
            return []
        missing = self.n - sum(stop - start for start, stop in shards)
        if self.slots - self._next_slot < missing:  # too few free records left: start over
            self.path.unlink(missing_ok=True)
            return []
        return shards

    def _check_partial(self, f, layout):
        check_format(f, self.path)
        if f.attrs.get("key") != self.key or len(f["shards"]["done"]) != self.slots:
            raise _Mismatch
        if {name for name in RESULTS if name in f} != set(layout):
            raise _Mismatch
        for name, (dtype, shape) in layout.items():
            if f[name].dtype != dtype or f[name].shape != (self.n, *shape):
                raise _Mismatch
        for name in INPUTS:
            if not np.array_equal(f[name][()], self.inputs[name]):
                raise _Mismatch
        for name in self.results + tuple(f"shards/{r}" for r in RECORDS):
            if not is_contiguous(f[name]):
                raise _Mismatch  # rows without a fixed place: written by another writer

    def _verified(self, f):
        records = f["shards"]
        done = np.flatnonzero(records["done"][()])
        starts, stops = records["start"][()], records["stop"][()]
        digests = records["digest"][()]
        covered = np.zeros(self.n, dtype=bool)
        good = []
        for slot in done:
            start, stop = int(starts[slot]), int(stops[slot])
            if not 0 <= start < stop <= self.n or covered[start:stop].any():
                continue
            rows = {name: f[name][start:stop] for name in self.results}
            if arrays_digest(rows) == digests[slot].decode():
                covered[start:stop] = True
                good.append((start, stop))
        next_slot = int(done.max()) + 1 if len(done) else 0
        return sorted(good), next_slot

    # -- writing ---------------------------------------------------------------------------

    def open(self, layout):
        """Open the partial file for writing, creating it if absent."""
        self._use(layout)
        with storage_errors(self.path):
            if not self.path.exists():
                self._create(layout)
                self._next_slot = 0
            names = self.results + tuple(f"shards/{r}" for r in RECORDS)
            self._rows = RowFile(self.path, names)
        return self

    def close(self):
        if self._rows is not None:
            self._rows.close()
            self._rows = None

    def write_rows(self, start, stop, results, seconds):
        """Store the rows ``start:stop`` (a dict of numpy arrays) and then their record."""
        slot = self._next_slot
        if slot >= self.slots:
            raise RuntimeError(f"{self.path.name}: no free shard record (more shards than rows)")
        record = {"start": start, "stop": stop, "digest": arrays_digest(results).encode(),
                  "seconds": seconds}
        with storage_errors(self.path):
            for name in self.results:
                self._rows.write(name, start, results[name])
            self._rows.sync()
            for name, value in record.items():
                self._rows.write(f"shards/{name}", slot, np.array([value]))
            self._rows.write("shards/done", slot, np.array([1]))
            self._rows.sync()
        self._next_slot += 1

    def finish(self):
        """Write the complete file, rename it to ``<key>.h5``, remove the partial file."""
        self.close()
        with h5py.File(self.path, "r") as f:
            shards = self._verified(f)[0]
            records = f["shards"]
            seconds = dict(zip(zip(records["start"][()].tolist(), records["stop"][()].tolist()),
                               records["seconds"][()].tolist()))
            if sum(b - a for a, b in shards) != self.n:
                raise RuntimeError(f"{self.path.name}: finish() before every row is stored")
            arrays = {name: f[name][()] for name in self.results + INPUTS}
        table = {"start": np.array([a for a, _ in shards], dtype=np.int64),
                 "stop": np.array([b for _, b in shards], dtype=np.int64),
                 "seconds": np.array([seconds[s] for s in shards], dtype=np.float64)}
        write_h5(self.final_path,
                 lambda out: _write_complete(out, self.key, arrays, table, self.provenance))
        self.path.unlink(missing_ok=True)
        return self.final_path

    # -- internals -------------------------------------------------------------------------

    def _use(self, layout):
        """Write the results of ``layout``: every one of :data:`RESULTS`, or all but the
        propagation counts (a layout without them; read back as not counted)."""
        unknown = set(layout) - set(RESULTS)
        if unknown:
            raise ValueError(f"results {sorted(unknown)} are not set results {RESULTS}")
        self.results = tuple(name for name in RESULTS if name in layout)

    def _create(self, layout):
        def fill(f):
            _set_attrs(f, self.key, self.provenance, complete=False)
            for name, (dtype, shape) in layout.items():
                _allocate(f, name, (self.n, *shape), dtype)
            for name in INPUTS:
                f.create_dataset(name, data=self.inputs[name], track_times=False)
            group = f.create_group("shards")
            for name, dtype in zip(RECORDS, (np.int64, np.int64, np.uint8, np.float64, "S64")):
                _allocate(group, name, (self.slots,), dtype)

        write_h5(self.path, fill)


class _Mismatch(Exception):
    """A partial file made for another set or layout."""


def missing_ranges(shards, n):
    """The row ranges of ``0:n`` that no shard of ``shards`` (sorted, disjoint) covers."""
    gaps, cursor = [], 0
    for start, stop in shards:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, stop)
    if cursor < n:
        gaps.append((cursor, n))
    return gaps


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


def _write_complete(f, key, arrays, shards, provenance):
    _set_attrs(f, key, provenance, complete=True)
    for name, values in arrays.items():
        options = {}
        if values.ndim > 1 and values.size:  # the images: chunked by rows, compressed
            rows = max(1, min(len(values), (1 << 20) // max(1, values[0].nbytes)))
            options = {"chunks": (rows, *values.shape[1:]), "compression": "gzip",
                       "compression_opts": 4, "shuffle": True}
        f.create_dataset(name, data=values, track_times=False, **options)
    group = f.create_group("shards")
    for name, values in shards.items():
        group.create_dataset(name, data=values, track_times=False)
    f.attrs["digest"] = arrays_digest(arrays)
