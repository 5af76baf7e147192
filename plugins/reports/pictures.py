"""Pictures of robustness: accuracy against epsilon or distance, clean/perturbation/adversarial
grids.

Pure functions: they take tensors or numpy arrays, write one PNG atomically and return its path.
matplotlib is an optional extra (``pip install advx[plots]``); without it every function raises
:class:`PicturesUnavailable`.  Figures are built with ``matplotlib.figure.Figure`` directly, never
through pyplot, so no backend is selected, no global figure is left open and a user's interactive
backend is untouched.  The representation pictures (tSNE/PCA, activation maps) are in
:mod:`advx.plugins.reports.representation`.
"""

import math
import pathlib

import advx
import numpy as np

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
WORST_CASE = "worst case"
MAX_GRID_ROWS = 20


class PicturesUnavailable(advx.AdvxError):
    """An optional dependency of the pictures (matplotlib, scikit-learn) is not installed."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def new_figure(**kwargs):
    """A ``matplotlib.figure.Figure`` (constrained layout), or :class:`PicturesUnavailable`."""
    try:
        import matplotlib  # noqa: F401  (imported first: a stale matplotlib.figure is ignored)
        from matplotlib.figure import Figure
    except ImportError:
        raise PicturesUnavailable(
            "matplotlib is not installed; pip install advx[plots]") from None
    return Figure(layout="constrained", **kwargs)


def save(figure, path, dpi=100):
    """Write ``figure`` to ``path`` as a PNG atomically (temp file + rename); the path."""
    advx.write_atomically(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi))
    return pathlib.Path(path)


def as_numpy(array):
    """A numpy array from a tensor (detached, on the CPU) or anything ``np.asarray`` takes."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def plot_curves(curves, path, title=""):
    """Robust accuracy (%) against epsilon, one panel per (model, norm) pair.

    ``curves`` is a list of dicts ``{"model", "attack", "norm", "eps": [...],
    "robust_accuracy": [... in 0..1]}``; an entry whose attack is ``"worst case"`` (the
    per-sample minimum over attacks) is drawn bold and dark.  Returns the written path.
    """
    panels = _panels(curves)
    figure, axes = panel_grid(len(panels), 3, (4.5, 3.4))
    for axis, ((model, norm), entries) in zip(axes, panels.items()):
        for index, entry in enumerate(entries):
            _draw_curve(axis, entry, MARKERS[index % len(MARKERS)])
        percent_axis(axis, f"{model} ({norm})", "robust accuracy (%)", legend_size=7)
    if title:
        figure.suptitle(title)
    return save(figure, path)


def panel_grid(count, most_columns, size):
    """A figure of ``count`` panels, at most ``most_columns`` a row, each ``size`` inches;
    ``(figure, axes)`` with the unused axes hidden."""
    columns = min(most_columns, count)
    rows = math.ceil(count / columns)
    figure = new_figure(figsize=(size[0] * columns, size[1] * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes[count:]:
        axis.set_visible(False)
    return figure, axes[:count]


def percent_axis(axis, title, ylabel, legend_size):
    """A panel of percentages against epsilon: title, labels, 0-100 range, grid, legend."""
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("epsilon")
    axis.set_ylabel(ylabel)
    axis.set_ylim(-3, 103)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=legend_size)


def _panels(curves):
    """The curves grouped by (model, norm), in order of first appearance; checks each entry."""
    if not curves:
        raise ValueError("plot_curves needs at least one curve")
    panels = {}
    for entry in curves:
        missing = {"model", "attack", "norm", "eps", "robust_accuracy"} - set(entry)
        if missing:
            raise ValueError(f"curve {entry!r} lacks {sorted(missing)}")
        if len(entry["eps"]) != len(entry["robust_accuracy"]):
            raise ValueError(f"curve of {entry['attack']!r}: eps and robust_accuracy "
                             "differ in length")
        panels.setdefault((entry["model"], entry["norm"]), []).append(entry)
    return panels


def _draw_curve(axis, entry, marker):
    eps = np.asarray(entry["eps"], dtype=float)
    accuracy = 100 * np.asarray(entry["robust_accuracy"], dtype=float)
    order = np.argsort(eps, kind="stable")
    style = {"marker": marker, "markersize": 5, "linewidth": 1.5}
    if entry["attack"] == WORST_CASE:
        style.update(marker="o", linewidth=3, color="0.1", zorder=5)
    axis.plot(eps[order], accuracy[order], label=entry["attack"], **style)


def plot_distortion(entries, path, norm, at=None, title=""):
    """Robust accuracy (%) against the distance of the smallest adversarial in ``norm``: one
    step curve per model, a dashed vertical line at distance ``at`` (None: none).

    ``entries`` are the minimal-perturbation protocol's entries of that norm, each ``{"model",
    "curve": {"n", "distances": [sorted finite distances]}}``: robust accuracy at d is the
    fraction of the n samples whose smallest adversarial lies farther than d (misclassified
    clean samples at distance 0; samples never fooled beyond every distance).
    """
    if not entries:
        raise ValueError("plot_distortion needs at least one entry")
    tops = [max(e["curve"]["distances"], default=0.0) for e in entries]
    right = 1.05 * max(tops + [at or 0.0]) or 1.0
    figure = new_figure(figsize=(6.0, 4.2))
    axis = figure.subplots()
    for index, entry in enumerate(entries):
        n, distances = entry["curve"]["n"], np.sort(np.asarray(entry["curve"]["distances"],
                                                               dtype=float))
        if not n:
            continue
        later = distances[distances > 0]  # the others (misclassified clean) fall at d = 0
        left = n - (len(distances) - len(later))
        x = np.concatenate([[0.0], later, [right]])
        y = 100 * (left - np.concatenate([np.arange(len(later) + 1), [len(later)]])) / n
        axis.step(x, y, where="post", linewidth=1.8, label=entry["model"],
                  color=f"C{index % 10}")
    if at is not None:
        axis.axvline(at, color="0.3", linestyle="--", linewidth=1.2, label=f"d = {at:g}")
    percent_axis(axis, title or f"Accuracy against {norm} distance", "robust accuracy (%)",
                 legend_size=8)
    axis.set_xlabel(f"{norm} distance of the smallest adversarial")
    axis.set_xlim(0, right)
    return save(figure, path)


def plot_grid(x, x_adv, y, pred, confidence, path, targets=None, bounds=(0.0, 1.0), title=""):
    """Rows of samples; columns clean input, amplified perturbation, adversarial input.

    ``x``, ``x_adv``: (N, C, H, W) with N <= 20 and C 1 (grey) or 3 (RGB), in ``bounds``;
    ``y`` true labels, ``pred`` the predictions on ``x_adv`` and ``confidence`` their softmax
    probabilities (0..1, shown in %; None: not shown); ``targets`` (>= 0 where a sample had a
    target) are named
    when given.  The perturbation is the mean over channels of ``x_adv - x``, each drawn on its
    own symmetric scale (its max |value|); its title gives the amplification relative to the
    image range.  Predictions that differ from the label are titled in red.
    """
    x, x_adv = as_numpy(x).astype(float), as_numpy(x_adv).astype(float)
    if x.shape != x_adv.shape or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x and x_adv must both be (N, 1 or 3, H, W); got {x.shape} and "
                         f"{x_adv.shape}")
    if not 1 <= len(x) <= MAX_GRID_ROWS:
        raise ValueError(f"plot_grid draws 1 to {MAX_GRID_ROWS} samples; got {len(x)}")
    if confidence is None:
        confidence = np.full(len(x), np.nan)
    labels = [as_numpy(a).reshape(-1) for a in (y, pred, confidence)]
    targets = None if targets is None else as_numpy(targets).reshape(-1)
    figure = new_figure(figsize=(6.6, 2.2 * len(x) + (0.4 if title else 0)))
    axes = figure.subplots(len(x), 3, squeeze=False)
    for row in range(len(x)):
        target = None if targets is None or targets[row] < 0 else int(targets[row])
        _grid_row(axes[row], x[row], x_adv[row], [a[row] for a in labels], target, bounds)
    if title:
        figure.suptitle(title)
    return save(figure, path)


def _grid_row(axes, clean, adversarial, labels, target, bounds):
    label, prediction, confidence = int(labels[0]), int(labels[1]), float(labels[2])
    delta = (adversarial - clean).mean(0)
    scale = float(np.abs(delta).max())
    span = float(bounds[1]) - float(bounds[0])
    axes[0].imshow(_image(clean, bounds), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"clean, label {label}", fontsize=8)
    axes[1].imshow(delta, cmap="seismic", vmin=-(scale or 1), vmax=scale or 1)
    axes[1].set_title(f"perturbation (x{span / scale:.3g})" if scale else "no perturbation",
                      fontsize=8)
    axes[2].imshow(_image(adversarial, bounds), cmap="gray", vmin=0, vmax=1)
    text = f"pred {prediction}" + ("" if np.isnan(confidence) else f" ({100 * confidence:.1f}%)")
    if target is not None:
        text += f", target {target}"
    axes[2].set_title(text, fontsize=8, color="tab:red" if prediction != label else "black")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])


def _image(array, bounds):
    """An image scaled from ``bounds`` to [0, 1]: 2-D (grey; imshow's cmap applies) or H x W x 3
    (RGB; imshow ignores the cmap)."""
    lower, upper = float(bounds[0]), float(bounds[1])
    scaled = ((array - lower) / (upper - lower)).clip(0, 1)
    return scaled[0] if scaled.shape[0] == 1 else np.transpose(scaled, (1, 2, 0))
