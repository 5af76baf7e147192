"""Exporting an adversarial set: a .npz of its arrays (plugins add more through
``advx_export_set``: the built-in reports plugin draws a PNG grid).

The clean inputs are not stored in a set (the dataset holds them); they are reloaded from the
dataset named in the set's provenance, and used only if that dataset's identity still matches.
"""

import json

import numpy as np

from ..kernel.errors import UsageError
from .atomic import write_stream


def clean_inputs(stored, registry):
    """The set's clean inputs as numpy, or ``(None, why)`` when its dataset is unavailable."""
    table = dict(stored.provenance.get("spec", {}).get("dataset") or {})
    expected = stored.provenance["identity"]["dataset"]["identity"]
    try:
        dataset = registry.create("datasets", table.pop("name"), **table)
        if dataset.identity() != expected:
            return None, "the dataset's content differs from the one the set was made from"
        x, _ = dataset.load("test")
    except (UsageError, KeyError, OSError) as exc:
        return None, f"its dataset cannot be loaded ({exc})"
    return x[stored.arrays["indices"]].numpy(), ""


def export_npz(stored, path, x=None):
    """Write the set's arrays (and the clean inputs ``x`` if given) to ``path`` atomically."""
    arrays = dict(stored.arrays)
    if x is not None:
        arrays["x"] = x
    arrays["provenance"] = np.array(json.dumps(stored.provenance, sort_keys=True))
    write_stream(path, lambda handle: np.savez_compressed(handle, **arrays))
