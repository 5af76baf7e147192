"""The adversarial-set store: one HDF5 file per adversarial example set, named by a content key.

Under ``<cache root>/adversarials/``:

- ``<key>.h5``: a complete set. It is written to a temporary file and renamed into place, so it
  is never seen half-written, and it is never modified afterwards.
- ``<key>.partial.h5``: a set being computed shard by shard (:mod:`advx.store.writer`); a run
  that was killed resumes from it.
- ``<key>.lock``: locked (``flock``) by the process computing ``<key>``.

The key is the sha256 of the set's *identity* (model weights, defenses, dataset and sample
indices, attack and parameters, threat model, targets, seed, and the method for sets that are
not one attack call) and the format version.  The batch size is no part of it: every sample
draws from its own random stream, so a set is the same whatever batches or shards computed it.
A complete file is read as valid only when its format, completion flag, shapes and content digest
all check out; anything else raises :class:`CorruptSetError`. The file layout is documented in
docs/cache-format.md.
"""

import hashlib
import json
import pathlib

import attrs
import h5py
import numpy as np

from ..kernel.budget import COUNTS, uncounted
from ..kernel.errors import UsageError

FORMAT = "advx-adversarial-set"
FORMAT_VERSION = 2  # 2: no batch size in the identity, per-sample streams, shard records
# COUNTS: per-sample propagation accounting (advx.kernel.budget); sets written before advx
# counted lack them and read back with the UNCOUNTED values.
RESULTS = ("x_adv", "success", "distance", "pred", "queries", *COUNTS)  # written shard by shard
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
    """A complete set read from disk: its arrays (numpy), provenance and shard records."""

    key: str
    path: pathlib.Path
    arrays: dict
    provenance: dict
    shards: dict  # start, stop, seconds (numpy arrays, one entry per shard computed)

    @property
    def n(self):
        return len(self.arrays["y"])

    @property
    def seconds(self):
        return float(self.shards["seconds"].sum())


def read_set(path):
    """Read and verify the complete set at ``path``; :class:`CorruptSetError` if it is not one."""
    path = pathlib.Path(path)
    try:
        with h5py.File(path, "r", locking=False) as f:
            check_format(f, path)
            if not bool(f.attrs.get("complete", False)):
                raise CorruptSetError(f"{path.name}: not marked complete")
            arrays = {name: _read_array(f, name, path) for name in ARRAYS
                      if name in f or name not in COUNTS}
            shards = {name: f["shards"][name][()] for name in ("start", "stop", "seconds")}
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
    return StoredSet(key, path, uncounted_filled(arrays), provenance, shards)


def uncounted_filled(arrays):
    """``arrays`` with the :data:`COUNTS` it lacks (a set computed before propagations were
    counted) filled with their :data:`UNCOUNTED` value, one per row."""
    filled = {name: uncounted(name, len(arrays["y"]), arrays["distance"].dtype)
              for name in COUNTS if name not in arrays}
    return {**arrays, **filled}


def check_format(f, path):
    """Raise unless the open file ``f`` is an advx adversarial set of this format version."""
    name = f.attrs.get("format")
    if name != FORMAT:
        raise CorruptSetError(f"{path.name}: not an advx adversarial set (format {name!r})")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        age = "an older" if version < FORMAT_VERSION else "a newer"
        raise OutdatedSetError(f"{path.name}: {age} format (version {version}; this advx reads "
                               f"{FORMAT_VERSION}): recomputed when a run asks for it, removed "
                               "by `advx cache gc`")


def _read_array(f, name, path):
    if name not in f:
        raise CorruptSetError(f"{path.name}: dataset {name!r} is missing")
    return f[name][()]


def _check_lengths(arrays, path):
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise CorruptSetError(f"{path.name}: datasets have different lengths {lengths}")


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
