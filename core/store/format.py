"""The adversarial-set store: one HDF5 file per adversarial example set, named by a content key.

Under ``<cache root>/adversarials/``:

- ``<key>.h5``: a complete set. It is written to a temporary file and renamed into place, so it
  is never seen half-written, and it is never modified afterwards.
- ``<key>.partial.h5``: a set being computed batch by batch (:mod:`advx.setwriter`); a run that
  was killed resumes from it.
- ``<key>.lock``: locked (``flock``) by the process computing ``<key>``.

The key is the sha256 of the set's *identity* (model weights, defenses, dataset and sample
indices, attack and parameters, threat model, targets, seed, batch size) and the format version.
A complete file is read as valid only when its format, completion flag, shapes and content digest
all check out; anything else raises :class:`CorruptSetError`. The file layout is documented in
docs/cache-format.md.
"""

import contextlib
import hashlib
import json
import os
import pathlib

import attrs
import h5py
import numpy as np

from ..kernel.errors import UsageError

FORMAT = "advx-adversarial-set"
FORMAT_VERSION = 1
RESULTS = ("x_adv", "success", "distance", "pred", "queries")  # written batch by batch
INPUTS = ("y", "indices", "targets")  # known before the attack runs; targets -1 if untargeted
ARRAYS = RESULTS + INPUTS
FINAL_SUFFIX = ".h5"
PARTIAL_SUFFIX = ".partial.h5"


class CorruptSetError(Exception):
    """A set file that cannot be trusted: unreadable, truncated, incomplete or altered."""


class OutdatedSetError(CorruptSetError):
    """A set file written in another format (version) than this advx reads."""


def canonical_json(value):
    """Compact JSON with sorted keys: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def identity_digest(identity):
    """sha256 hex of a set's identity alone (seeds derive from it, not from the format)."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def set_key(identity):
    """The content key of a set: sha256 hex of its identity, the format name and version."""
    payload = {"identity": identity, "format": FORMAT, "format_version": FORMAT_VERSION}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def arrays_digest(arrays, start=None, stop=None):
    """sha256 hex over the rows ``start:stop`` of ``arrays`` (name, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        rows = np.ascontiguousarray(arrays[name][start:stop])
        digest.update(f"{name}|{rows.dtype.str}|{rows.shape}|".encode())
        digest.update(rows.tobytes())
    return digest.hexdigest()


def sets_dir(root):
    """The folder of adversarial sets under the cache ``root``."""
    return pathlib.Path(root) / "adversarials"


@attrs.frozen(eq=False)
class StoredSet:
    """A complete set read from disk: its arrays (numpy), provenance and batch records."""

    key: str
    path: pathlib.Path
    arrays: dict
    provenance: dict
    batches: dict  # start, stop, seconds (numpy arrays, one entry per batch)

    @property
    def n(self):
        return len(self.arrays["y"])

    @property
    def seconds(self):
        return float(self.batches["seconds"].sum())


def read_set(path):
    """Read and verify the complete set at ``path``; :class:`CorruptSetError` if it is not one."""
    path = pathlib.Path(path)
    try:
        with h5py.File(path, "r", locking=False) as f:
            check_format(f, path)
            if not bool(f.attrs.get("complete", False)):
                raise CorruptSetError(f"{path.name}: not marked complete")
            arrays = {name: _read_array(f, name, path) for name in ARRAYS}
            batches = {name: f["batches"][name][()] for name in ("start", "stop", "seconds")}
            provenance = json.loads(f.attrs["provenance"])
            key, digest = str(f.attrs["key"]), str(f.attrs["digest"])
    except CorruptSetError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CorruptSetError(f"{path.name}: unreadable ({exc})") from None
    _check_lengths(arrays, path)
    if arrays_digest(arrays) != digest:
        raise CorruptSetError(f"{path.name}: content digest does not match (altered or damaged)")
    if key != path.name.removesuffix(FINAL_SUFFIX):
        raise CorruptSetError(f"{path.name}: holds set {key}, not the one its name says")
    return StoredSet(key, path, arrays, provenance, batches)


def check_format(f, path):
    """Raise unless the open file ``f`` is an advx adversarial set of this format version."""
    name = f.attrs.get("format")
    if name != FORMAT:
        raise CorruptSetError(f"{path.name}: not an advx adversarial set (format {name!r})")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise OutdatedSetError(f"{path.name}: format version {version}, this advx reads "
                               f"{FORMAT_VERSION}")


def _read_array(f, name, path):
    if name not in f:
        raise CorruptSetError(f"{path.name}: dataset {name!r} is missing")
    return f[name][()]


def _check_lengths(arrays, path):
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise CorruptSetError(f"{path.name}: datasets have different lengths {lengths}")


def fsync_path(path):
    """Flush the file at ``path`` (and, for a rename, its folder) to the disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    with contextlib.suppress(OSError):  # some file systems refuse fsync on folders
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class SetLock:
    """An exclusive lock on one key, held by the process computing that set.

    ``flock`` locks are released by the kernel when the process dies, even by SIGKILL, so a
    killed run never leaves a stale lock behind. The lock file is removed on release; a waiter
    that locked a file removed meanwhile tries again on the new one.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self._fd = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            _lock(fd)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)  # closing releases the lock
        self._fd = None


def _lock(fd):
    try:
        import fcntl
    except ImportError:  # Windows: msvcrt locks one byte, retrying until it is free
        import msvcrt

        while True:
            with contextlib.suppress(OSError):
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
    else:
        fcntl.flock(fd, fcntl.LOCK_EX)


def is_locked(path):
    """True if another process holds the lock at ``path`` (POSIX; False where unknown)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def resolve_key(root, prefix):
    """The one key under ``root`` starting with ``prefix`` (complete or partial sets)."""
    keys = sorted({p.name.split(".")[0] for p in sets_dir(root).glob("*.h5")})
    matches = [k for k in keys if k.startswith(prefix)]
    if not prefix or not matches:
        raise UsageError(f"no adversarial set with key {prefix!r} in {sets_dir(root)}; "
                         "`advx cache ls` lists them")
    if len(matches) > 1:
        shown = ", ".join(m[:12] for m in matches[:5])
        raise UsageError(f"key prefix {prefix!r} matches {len(matches)} sets ({shown}); "
                         "give more characters")
    return matches[0]
