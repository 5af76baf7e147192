"""Obtaining an adversarial set: from the store if it is there, else computed shard by shard.

:func:`obtain_set` is what the run calls for every set. A complete, verified file is read and
nothing is written. Otherwise the process takes the key's lock, reads the file again (another
process may have finished it meanwhile), keeps the partial file's verified shards, computes the
rows no shard covers in parts of at most ``batch_size`` rows, and renames the finished set
into place.
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


def obtain_set(root, key, *, inputs, layout, batch_size, provenance, compute_rows,
               prepare=lambda: None, advance=lambda n: None):
    """The set ``key`` under the cache ``root``: read, resumed or computed; see :class:`Obtained`.

    :param inputs: numpy arrays y, indices, targets (the samples, in set order).
    :param layout: result name -> (numpy dtype, row shape), as ``compute_rows`` returns them.
    :param compute_rows: ``f(start, stop, state) -> dict`` of numpy result arrays for those rows;
        a row's result must not depend on which rows share the call.
    :param prepare: ``f() -> state``, called once before the first rows are computed (never
        when the set is read whole from the cache).
    :param advance: called with the number of samples of each part done (progress display).
    """
    directory = sets_dir(root)
    final = directory / f"{key}{FINAL_SUFFIX}"
    stored = try_read(final)
    if stored is not None:
        advance(stored.n)
        return Obtained(stored, "cache")
    def waiting():
        log.info("waiting for another process computing set %s", key[:12])

    with SetLock(directory / f"{key}.lock", on_wait=waiting):
        stored = try_read(final)
        if stored is not None:  # another process finished it while we waited for the lock
            advance(stored.n)
            return Obtained(stored, "cache")
        writer = SetWriter(directory, key, inputs, provenance)
        done = writer.done_shards(layout)
        advance(sum(stop - start for start, stop in done))
        _compute_missing(writer, layout, missing_ranges(done, writer.n), batch_size,
                         compute_rows, prepare, advance)
        # read under the lock: `advx cache rm` may remove the set once the lock is free
        stored = read_set(writer.finish())
    return Obtained(stored, "resumed" if done else "computed", len(done))


def parts(ranges, batch_size):
    """The ``(start, stop)`` parts of at most ``batch_size`` rows that cover ``ranges``."""
    return [(start, min(start + batch_size, stop)) for first, stop in ranges
            for start in range(first, stop, batch_size)]


def _compute_missing(writer, layout, missing, batch_size, compute_rows, prepare, advance):
    writer.open(layout)
    try:
        state = prepare() if missing else None
        for start, stop in parts(missing, batch_size):
            began = time.perf_counter()
            results = compute_rows(start, stop, state)
            _check_layout(results, layout, stop - start)
            writer.write_rows(start, stop, results, time.perf_counter() - began)
            advance(stop - start)
    finally:
        writer.close()


def _check_layout(results, layout, rows):
    for name, (dtype, shape) in layout.items():
        array = results[name]
        if array.dtype != np.dtype(dtype) or array.shape != (rows, *shape):
            raise RuntimeError(f"batch result {name!r} is {array.dtype} {array.shape}, "
                               f"expected {np.dtype(dtype)} {(rows, *shape)}")
