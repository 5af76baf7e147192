"""What the adversarial-set cache holds: listing, verifying, removing, collecting old formats.

These are the operations behind ``advx cache``. They only read set files (without taking locks:
complete files never change, partial files are read as they are) and remove whole files.
"""

import json
import pathlib

import attrs
import h5py
import numpy as np

from ..kernel.errors import UsageError
from .format import (
    FINAL_SUFFIX,
    PARTIAL_SUFFIX,
    CorruptSetError,
    OutdatedSetError,
    check_format,
    read_set,
    resolve_key,
    sets_dir,
)
from .lock import SetLock, is_locked
from .paths import models_dir

STATUSES = ("complete", "partial", "outdated", "corrupt")


@attrs.frozen
class SetEntry:
    """One file of the cache, as ``advx cache ls`` shows it."""

    key: str
    path: pathlib.Path
    status: str  # one of STATUSES
    model: str = ""
    attack: str = ""
    threat: str = ""
    done: int = 0
    total: int = 0
    size: int = 0
    created: str = ""
    problem: str = ""

    def to_dict(self):
        return {**attrs.asdict(self), "path": str(self.path)}


def set_files(root):
    """Every set file under ``root`` (complete and partial), sorted by name."""
    directory = sets_dir(root)
    return sorted(directory.glob("*.h5")) if directory.is_dir() else []


def key_of(path):
    return path.name.removesuffix(PARTIAL_SUFFIX).removesuffix(FINAL_SUFFIX)


def describe(path):
    """The :class:`SetEntry` of one file, read from its attributes (content not verified)."""
    path = pathlib.Path(path)
    base = {"key": key_of(path), "path": path, "size": path.stat().st_size}
    try:
        with h5py.File(path, "r", locking=False) as f:
            check_format(f, path)
            provenance = json.loads(f.attrs["provenance"])
            total = len(f["y"])
            done = _done_samples(f, total, path.name.endswith(PARTIAL_SUFFIX))
    except OutdatedSetError as exc:
        return SetEntry(status="outdated", problem=str(exc), **base)
    except (CorruptSetError, OSError, KeyError, ValueError, TypeError) as exc:
        return SetEntry(status="corrupt", problem=str(exc), **base)
    status = "partial" if path.name.endswith(PARTIAL_SUFFIX) else "complete"
    return SetEntry(status=status, done=done, total=total, created=provenance.get("created", ""),
                    **summary(provenance), **base)


def _done_samples(f, total, partial):
    """Samples stored: all of a complete set; those of recorded shards of a partial one
    (their digests are checked when a run resumes them)."""
    if not partial:
        return total
    records = f["shards"]
    done = records["done"][()].astype(bool)
    covered = np.zeros(total, dtype=bool)
    for start, stop in zip(records["start"][()][done], records["stop"][()][done]):
        covered[int(start):int(stop)] = True
    return int(covered.sum())


def summary(provenance):
    """model, attack and threat of a set as short strings, from its provenance."""
    identity = provenance.get("identity", {})
    spec = provenance.get("spec", {})
    threat = identity.get("threat", {})
    eps, method = threat.get("eps"), identity.get("method")
    grid = method.get("eps") if isinstance(method, dict) else None
    if isinstance(grid, list) and grid and all(isinstance(e, int | float) for e in grid):
        # a sweep over an eps grid (the curve protocol's search)
        text = f"{threat.get('norm', '?')} sweep {min(grid):g}-{max(grid):g} ({len(grid)})"
    elif method is not None:  # another protocol's own set method
        name = method.get("name", "method") if isinstance(method, dict) else "method"
        text = f"{threat.get('norm', '?')} {name}"
    else:
        text = f"{threat.get('norm', '?')} {'min' if eps is None else format(eps, 'g')}"
    if threat.get("targeted"):
        text += f" targeted ({identity.get('target')})"
    model = spec.get("model", {}).get("id") or identity.get("model", {}).get("plugin", "?")
    attack = spec.get("attack", {}).get("id") or identity.get("attack", {}).get("name", "?")
    return {"model": model, "attack": attack, "threat": text}


def list_sets(root):
    """A :class:`SetEntry` per file of the cache."""
    return [describe(path) for path in set_files(root)]


def verify(path):
    """None if the file checks out, else what is wrong. Partial files are checked for format
    and readability only (their batches are verified when a run resumes them)."""
    path = pathlib.Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        entry = describe(path)
        return entry.problem or None
    try:
        read_set(path)
    except CorruptSetError as exc:
        return str(exc)
    return None


def files_of(root, prefix):
    """The files (complete, partial) of the one set whose key starts with ``prefix``."""
    key = resolve_key(root, prefix)
    directory = sets_dir(root)
    return key, [p for p in (directory / f"{key}{FINAL_SUFFIX}",
                             directory / f"{key}{PARTIAL_SUFFIX}") if p.exists()]


class SetInUseError(UsageError):
    """A set (or weights file) that a running process is computing: it is not removed."""


def remove_set(root, prefix):
    """Remove the files of the set whose key starts with ``prefix``: ``(key, paths)``.

    The set's lock is taken (without waiting) while its files are removed, so a run computing
    the set is never broken: a set in use raises :class:`SetInUseError`.
    """
    key = resolve_key(root, prefix)
    lock = sets_dir(root) / f"{key}.lock"
    with SetLock(lock, blocking=False) as held:
        if not held.held:
            raise SetInUseError(f"set {key[:12]} is in use: a running process is computing it "
                                f"(it holds {lock}); run `advx cache rm` again when it ends")
        key, paths = files_of(root, key)
        for path in paths:
            path.unlink(missing_ok=True)
    return key, paths


def removable(root):
    """``(path, reason)`` of files that ``advx cache gc`` removes: sets of another format
    version, files that are not readable sets, lock and temporary files left by killed
    processes (in the sets' and the weights' folders). Files in use are removed by
    :func:`collect` only if their lock is free."""
    found = []
    for entry in list_sets(root):
        if entry.status in ("outdated", "corrupt"):
            found.append((entry.path, entry.problem))
        elif entry.status == "partial" and _complete_beside(entry.path):
            found.append((entry.path, "partial file of a set already complete"))
    for directory in (sets_dir(root), models_dir(root)):
        if directory.is_dir():
            found += [(p, "stale lock file") for p in sorted(directory.glob("*.lock"))]
            found += [(p, "temporary file left by a killed writer")
                      for p in sorted(directory.glob(".*.tmp"))]
    return found


def collect(root, dry_run=False):
    """Remove what :func:`removable` finds, except files whose lock a running process holds:
    ``[(path, reason, action)]``, action "removed", "would remove" (``dry_run``) or "kept"
    (in use). Lock files in use are not stale: they are left out."""
    done = []
    for path, reason in removable(root):
        lock = lock_of(path)
        if is_locked(lock) or (not dry_run and not _remove_unless_locked(path, lock)):
            if path != lock:
                done.append((path, f"{reason}; in use by a running process", "kept"))
        else:
            done.append((path, reason, "would remove" if dry_run else "removed"))
    return done


def _remove_unless_locked(path, lock):
    """Remove ``path`` while holding ``lock`` (releasing a lock file removes it); False if
    another process holds the lock."""
    with SetLock(lock, blocking=False) as held:
        if held.held and path != lock:
            path.unlink(missing_ok=True)
        return held.held


def lock_of(path):
    """The lock file that guards ``path``: a set file, a weights or temporary file written
    under a key's lock (``.<key>.h5.<random>.tmp``), or a lock file itself."""
    if path.suffix == ".lock":
        return path
    name = path.name[1:] if path.name.startswith(".") else path.name
    return path.parent / f"{name.split('.')[0]}.lock"


def _complete_beside(partial):
    """True if the complete file of this partial file's set exists (a writer was killed
    between renaming the complete file into place and removing the partial one)."""
    return partial.with_name(partial.name.replace(PARTIAL_SUFFIX, FINAL_SUFFIX)).exists()
