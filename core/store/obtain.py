"""Obtaining an adversarial set: from the store if it is there, else computed batch by batch.

:func:`obtain_set` is what the runner calls for every (model, attack, threat) unit. A complete,
verified file is read and nothing is written. Otherwise the process takes the key's lock, reads
the file again (another process may have finished it meanwhile), resumes the partial file's
verified batches, computes the missing ones in order, and renames the finished set into place.
"""

import logging
import time

import attrs
import numpy as np

from .format import FINAL_SUFFIX, CorruptSetError, SetLock, read_set, sets_dir
from .writer import SetWriter

log = logging.getLogger("advx")

ORIGINS = ("computed", "cache", "resumed")


@attrs.frozen
class Obtained:
    """A set and where it came from: computed now, read from the cache, or resumed."""

    stored: object  # advx.store.StoredSet
    origin: str
    reused_batches: int = 0


def try_read(path):
    """The complete set at ``path``, or None if it is absent or cannot be trusted."""
    if not path.exists():
        return None
    try:
        return read_set(path)
    except CorruptSetError as exc:
        log.warning("recomputing adversarial set: %s", exc)
        return None


def obtain_set(root, key, *, inputs, layout, batch_size, provenance, compute_batch,
               advance=lambda n: None):
    """The set ``key`` under the cache ``root``: read, resumed or computed; see :class:`Obtained`.

    :param inputs: numpy arrays y, indices, targets (the samples, in batch order).
    :param layout: result name -> (numpy dtype, row shape), as ``compute_batch`` returns them.
    :param compute_batch: ``f(start, stop) -> dict`` of numpy result arrays for those rows.
    :param advance: called with the number of samples of each batch done (progress display).
    """
    directory = sets_dir(root)
    final = directory / f"{key}{FINAL_SUFFIX}"
    stored = try_read(final)
    if stored is not None:
        advance(stored.n)
        return Obtained(stored, "cache")
    with SetLock(directory / f"{key}.lock"):
        stored = try_read(final)
        if stored is not None:  # another process finished it while we waited for the lock
            advance(stored.n)
            return Obtained(stored, "cache")
        writer = SetWriter(directory, key, inputs, batch_size, provenance)
        done = writer.done_batches(layout)
        _compute_missing(writer, layout, done, compute_batch, advance)
        path = writer.finish()
    origin = "resumed" if done else "computed"
    return Obtained(read_set(path), origin, len(done))


def _compute_missing(writer, layout, done, compute_batch, advance):
    writer.open(layout)
    try:
        for index, start in enumerate(writer.starts):
            stop = min(start + writer.batch_size, writer.n)
            if index not in done:
                began = time.perf_counter()
                results = compute_batch(start, stop)
                _check_layout(results, layout, stop - start)
                writer.write_batch(index, results, time.perf_counter() - began)
            advance(stop - start)
    finally:
        writer.close()


def _check_layout(results, layout, rows):
    for name, (dtype, shape) in layout.items():
        array = results[name]
        if array.dtype != np.dtype(dtype) or array.shape != (rows, *shape):
            raise RuntimeError(f"batch result {name!r} is {array.dtype} {array.shape}, "
                               f"expected {np.dtype(dtype)} {(rows, *shape)}")
