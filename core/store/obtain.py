"""Obtaining an adversarial set: from the store if it is there, else computed shard by shard.

:func:`open_set` reads a complete, verified file, and writes nothing.  Otherwise the process
takes the key's lock, reads the file again (another process may have finished it meanwhile)
and returns a :class:`PendingSet`: the partial file's verified shards kept, the rows no shard
covers still missing.  Whoever computes those rows (this process, or the workers of an
executor, :mod:`advx.kernel.executor`) hands them back to the pending set, which alone
writes the file; :meth:`PendingSet.finish` renames the finished set into place.
:func:`obtain_set` does all of it in this process, in parts of at most ``batch_size`` rows.
"""

import logging
import time

import attrs
import numpy as np

from .format import FINAL_SUFFIX, CorruptSetError, read_set, sets_dir
from .lock import SetLock
from .writer import SetWriter, missing_ranges

log = logging.getLogger("advx")

ORIGINS = ("computed", "cache", "resumed")


@attrs.frozen
class Obtained:
    """A set and where it came from: computed now, read from the cache, or resumed."""

    stored: object  # advx.store.format.StoredSet
    origin: str
    reused_batches: int = 0  # shards of a partial file kept on resume


def try_read(path):
    """The complete set at ``path``, or None if it is absent or cannot be trusted."""
    if not path.exists():
        return None
    try:
        return read_set(path)
    except CorruptSetError as exc:
        log.warning("recomputing adversarial set: %s", exc)
        return None


def open_set(root, key, *, inputs, layout, provenance, advance=lambda n: None):
    """The set ``key`` under the cache ``root``: an :class:`Obtained` set read whole, or a
    :class:`PendingSet` (its lock held, its partial file open) whose missing rows the caller
    computes, writes and finishes.

    :param inputs: numpy arrays y, indices, targets (the samples, in set order).
    :param layout: result name -> (numpy dtype, row shape) of the rows to be written.
    :param advance: called with the number of samples read or written (progress display).
    """
    directory = sets_dir(root)
    final = directory / f"{key}{FINAL_SUFFIX}"
    stored = try_read(final)
    if stored is None:
        lock = SetLock(directory / f"{key}.lock", on_wait=lambda: log.info(
            "waiting for another process computing set %s", key[:12])).__enter__()
        try:
            stored = try_read(final)  # another process may have finished it meanwhile
            if stored is None:
                writer = SetWriter(directory, key, inputs, provenance)
                return PendingSet(lock, writer, layout, advance)
        except BaseException:
            lock.__exit__(None, None, None)
            raise
        lock.__exit__(None, None, None)
    advance(stored.n)
    return Obtained(stored, "cache")


class PendingSet:
    """A set being computed by this process: its lock held, its verified shards kept, its
    partial file open for the rows still :attr:`missing`.  :meth:`finish` or :meth:`release`
    ends it (both release the lock)."""

    def __init__(self, lock, writer, layout, advance):
        self.lock, self.writer, self.layout, self.advance = lock, writer, layout, advance
        self.key = writer.key
        self.done = writer.done_shards(layout)
        advance(sum(stop - start for start, stop in self.done))
        self.missing = missing_ranges(self.done, writer.n)
        self.units = []  # where each shard computed now ran (provenance)
        writer.open(layout)

    def parts(self, batch_size):
        """The missing rows in parts of at most ``batch_size`` rows."""
        return parts(self.missing, batch_size)

    def write(self, start, stop, results, seconds, where=None):
        """Store the rows ``start:stop`` (numpy arrays of the layout) and their record."""
        _check_layout(results, self.layout, stop - start)
        self.writer.write_rows(start, stop, results, seconds)
        if where:
            self.units.append({"start": start, "stop": stop, **where})
        self.advance(stop - start)

    def finish(self):
        """The complete set, renamed into place and read back (under the lock: ``advx cache
        rm`` may remove it once the lock is free)."""
        if self.units:
            self.writer.provenance = {**self.writer.provenance,
                                      "units": sorted(self.units, key=lambda u: u["start"])}
        try:
            stored = read_set(self.writer.finish())
        finally:
            self.release()
        return Obtained(stored, "resumed" if self.done else "computed", len(self.done))

    def release(self):
        """Close the partial file and release the lock (what is written stays resumable)."""
        self.writer.close()
        self.lock.__exit__(None, None, None)


def obtain_set(root, key, *, inputs, layout, batch_size, provenance, compute_rows,
               prepare=lambda: None, advance=lambda n: None):
    """The set ``key``: read, resumed or computed in this process; see :class:`Obtained`.

    :param compute_rows: ``f(start, stop, state) -> dict`` of numpy result arrays for those rows;
        a row's result must not depend on which rows share the call.
    :param prepare: ``f() -> state``, called once before the first rows are computed (never
        when the set is read whole from the cache).
    The other parameters are :func:`open_set`'s.
    """
    opened = open_set(root, key, inputs=inputs, layout=layout, provenance=provenance,
                      advance=advance)
    if isinstance(opened, Obtained):
        return opened
    try:
        todo = opened.parts(batch_size)
        state = prepare() if todo else None
        for start, stop in todo:
            began = time.perf_counter()
            results = compute_rows(start, stop, state)
            opened.write(start, stop, results, time.perf_counter() - began)
    except BaseException:
        opened.release()
        raise
    return opened.finish()


def parts(ranges, batch_size):
    """The ``(start, stop)`` parts of at most ``batch_size`` rows that cover ``ranges``."""
    return [(start, min(start + batch_size, stop)) for first, stop in ranges
            for start in range(first, stop, batch_size)]


def _check_layout(results, layout, rows):
    for name, (dtype, shape) in layout.items():
        array = results[name]
        if array.dtype != np.dtype(dtype) or array.shape != (rows, *shape):
            raise RuntimeError(f"batch result {name!r} is {array.dtype} {array.shape}, "
                               f"expected {np.dtype(dtype)} {(rows, *shape)}")
