"""What the adversarial-set cache holds: listing, verifying, removing, collecting old formats.

These are the operations behind ``advx cache``. They only read set files (without taking locks:
complete files never change, partial files are read as they are) and remove whole files.
"""

import json
import pathlib

import attrs
import h5py
import numpy as np

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
from .lock import is_locked

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


def removable(root):
    """``(path, reason)`` of files that ``advx cache gc`` removes: sets of another format
    version, files that are not readable sets, and stale lock files."""
    found = []
    for entry in list_sets(root):
        if entry.status in ("outdated", "corrupt"):
            found.append((entry.path, entry.problem))
        elif entry.status == "partial" and _complete_beside(entry.path):
            found.append((entry.path, "partial file of a set already complete"))
    directory = sets_dir(root)
    if directory.is_dir():
        found += [(p, "stale lock file") for p in sorted(directory.glob("*.lock"))
                  if not is_locked(p)]
        found += [(p, "temporary file left by a killed writer") for p in
                  sorted(directory.glob(".*.tmp")) if not is_locked(_lock_for_temp(p))]
    return found


def _complete_beside(partial):
    """True if the complete file of this partial file's set exists (a writer was killed
    between renaming the complete file into place and removing the partial one)."""
    return partial.with_name(partial.name.replace(PARTIAL_SUFFIX, FINAL_SUFFIX)).exists()


def _lock_for_temp(path):
    return path.parent / f"{path.name[1:].split('.')[0]}.lock"
