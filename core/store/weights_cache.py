"""The weights cache: trained weights read if they verify, else trained once and stored.

Used by :func:`advx.train.zoo.load_model` and :meth:`advx.train.builder.Builder.cached`.
Training takes the lock of the weights file (``<key>.lock`` beside ``<key>.h5``, the helper
sets use), so two runs sharing a cache train a model once: the second waits, then loads. A
cached file that is damaged (its digest does not match, it is truncated, it does not fit the
module) is reported by a warning naming it and retrained, never used. A file written before
weights carried a digest is accepted once, with a warning, and its digest recorded then: it
was written by advx itself (atomically), and retraining every cached model of every user
would cost hours for a damage nobody observed; from then on it is verified like the others.
"""

import logging
import warnings

from ..kernel.errors import StorageError, UsageError
from .lock import SetLock
from .weights import read_weights, save_weights

log = logging.getLogger("advx")


def lock_path(path):
    """The lock file of the weights file ``path``."""
    return path.with_name(f"{path.stem}.lock")


def cached_or_trained(module, path, train, what="model"):
    """``(module, metadata, origin)``: the weights at ``path`` loaded into ``module``
    (origin "cache"), or ``train(module) -> (module, metadata)`` run and its weights saved
    there (origin "trained"). ``what`` names the model in messages. Everything that writes
    ``path`` holds its lock, so ``advx cache gc`` never removes a file being written."""
    found = _load(module, path, report=False)
    if found is not None and found[1]:
        return module, found[0], "cache"

    def waiting():
        log.warning("waiting for another process training %s (%s)", what, lock_path(path))

    with SetLock(lock_path(path), on_wait=waiting):
        found = _load(module, path, report=True)  # another process may have trained it
        if found is not None:
            if not found[1]:
                _record_digest(module, path, found[0])
            return module, found[0], "cache"
        module, metadata = train(module)
        save_weights(module.cpu(), path, metadata)
    return module, metadata, "trained"


def _load(module, path, report):
    """``(metadata, verified)`` of the weights at ``path``, loaded into ``module``; None if
    there are none (or, with ``report``, a warning naming the file if they cannot be used)."""
    if not path.is_file():
        return None
    try:
        state, metadata, verified = read_weights(module, path)
    except UsageError as exc:
        if report:  # read_weights checks everything before the module is changed
            warnings.warn(f"retraining: cached weights {str(path)!r} cannot be used: {exc}",
                          stacklevel=4)
        return None
    module.load_state_dict(state, strict=True)
    return metadata, verified


def _record_digest(module, path, metadata):
    warnings.warn(f"cached weights {str(path)!r} have no digest (written by an older advx): "
                  "accepted once, their digest is recorded now", stacklevel=4)
    try:
        save_weights(module, path, metadata)
    except StorageError as exc:
        warnings.warn(f"could not record the digest: {exc}", stacklevel=4)
