"""Exporting an adversarial set: a .npz of its arrays and a PNG grid of its first examples.

The clean inputs are not stored in a set (the dataset holds them); they are reloaded from the
dataset named in the set's provenance, and used only if that dataset's identity still matches.
"""

import json
import os
import pathlib
import uuid

import numpy as np

from ..kernel.errors import UsageError


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
    _atomic(path, lambda handle: np.savez_compressed(handle, **arrays))


def export_grid(stored, x, path, count=8):
    """PNG of the first ``count`` samples: clean, perturbation (amplified), adversarial.

    Returns None, or why no picture was drawn (matplotlib missing).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install advx[plots])"
    arrays = stored.arrays
    count = min(count, len(x))
    figure, axes = plt.subplots(count, 3, figsize=(6, 2 * count), squeeze=False)
    bounds = stored.provenance["identity"]["threat"]["bounds"]
    for row in range(count):
        _draw_row(axes[row], x[row], arrays, row, bounds)
    figure.tight_layout()
    _atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=80))
    plt.close(figure)
    return None


def _draw_row(axes, clean, arrays, row, bounds):
    adversarial = arrays["x_adv"][row]
    delta = (adversarial - clean).mean(0)
    scale = float(np.abs(delta).max()) or 1.0
    target = int(arrays["targets"][row])
    verdict = "fooled" if arrays["success"][row] else "not fooled"
    axes[0].imshow(_image(clean, bounds), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"clean, label {int(arrays['y'][row])}", fontsize=8)
    axes[1].imshow(delta, cmap="seismic", vmin=-scale, vmax=scale)
    axes[1].set_title(f"perturbation (x{1 / scale:.3g})", fontsize=8)
    axes[2].imshow(_image(adversarial, bounds), cmap="gray", vmin=0, vmax=1)
    title = f"adversarial: {int(arrays['pred'][row])} ({verdict})"
    if target >= 0:
        title += f", target {target}"
    axes[2].set_title(title, fontsize=8)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])


def _image(array, bounds):
    """An image scaled from ``bounds`` to [0, 1]: 2-D (one channel) or height x width x 3."""
    lower, upper = bounds
    scaled = ((array - lower) / (upper - lower)).clip(0, 1)
    return scaled[0] if scaled.shape[0] == 1 else np.transpose(scaled, (1, 2, 0))


def _atomic(path, write):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # honours the umask
    try:
        with open(temp, "xb") as handle:
            write(handle)
        os.replace(temp, path)
    except BaseException:
        pathlib.Path(temp).unlink(missing_ok=True)
        raise
