"""Pictures of detectors and purifiers: score distributions with the threshold, every class's
reconstruction, robust accuracy and rejection rate against eps.

Pure functions like those of :mod:`.pictures`: arrays in, one PNG written atomically, its path
out; :class:`~.pictures.PicturesUnavailable` without matplotlib.
"""

import numpy as np

from .pictures import MARKERS, _image, as_numpy, new_figure, panel_grid, percent_axis, save

MAX_RECONSTRUCTION_ROWS = 12


def plot_scores(clean, adversarial, threshold, path, title=""):
    """Histograms of a detector's scores: ``clean`` inputs and, per name in the dict
    ``adversarial``, that attack's adversarials, with the threshold as a vertical line (the
    blog's KL picture).  Each legend entry gives the share of its scores above the threshold
    (rejected).  Scores spanning more than three decades are drawn on a log axis."""
    series = {"clean": as_numpy(clean).astype(float).ravel()}
    series.update({name: as_numpy(s).astype(float).ravel() for name, s in adversarial.items()})
    values = np.concatenate([s[np.isfinite(s)] for s in series.values()] + [[threshold]])
    if not len(values):
        raise ValueError("plot_scores needs at least one finite score")
    low, high = values.min(), values.max()
    log = low > 0 and high / low > 1e3
    if high <= low:
        high = low + 1
    bins = np.geomspace(low, high, 41) if log else np.linspace(low, high, 41)
    figure = new_figure(figsize=(6.4, 3.8))
    axis = figure.subplots()
    for index, (name, scores) in enumerate(series.items()):
        rejected = float(np.mean(scores > threshold)) if len(scores) else float("nan")
        axis.hist(np.clip(scores, low, high), bins=bins, histtype="step", linewidth=1.8,
                  color="0.15" if index == 0 else None,
                  label=f"{name} (n = {len(scores)}, {100 * rejected:.1f}% above)")
    axis.axvline(threshold, color="tab:red", linestyle="--", linewidth=1.5,
                 label=f"threshold {threshold:.4g}")
    if log:
        axis.set_xscale("log")
    axis.set_xlabel("detector score (higher: more likely adversarial)")
    axis.set_ylabel("inputs")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    if title:
        axis.set_title(title, fontsize=9)
    return save(figure, path)


def plot_reconstructions(x, reconstructions, chosen, captions, path, bounds=(0.0, 1.0),
                         title=""):
    """Rows of inputs; columns the input, then its reconstruction under every class, the kept
    one (``chosen``, the class of least RMSE) framed in red.

    ``x`` (N, C, H, W), ``reconstructions`` (N, K, C, H, W), ``chosen`` (N,) class indices,
    ``captions`` one title per row (e.g. "clean, label 2")."""
    x, recon = as_numpy(x).astype(float), as_numpy(reconstructions).astype(float)
    chosen = as_numpy(chosen).reshape(-1)
    if recon.ndim != 5 or recon.shape[0] != len(x) or recon.shape[2:] != x.shape[1:]:
        raise ValueError(f"reconstructions must be (N, K, C, H, W) for x of shape {x.shape}; "
                         f"got {recon.shape}")
    if not 1 <= len(x) <= MAX_RECONSTRUCTION_ROWS:
        raise ValueError(f"plot_reconstructions draws 1 to {MAX_RECONSTRUCTION_ROWS} rows; "
                         f"got {len(x)}")
    classes = recon.shape[1]
    figure = new_figure(figsize=(1.0 * (classes + 1) + 0.6, 1.15 * len(x) + 0.5))
    axes = figure.subplots(len(x), classes + 1, squeeze=False)
    for row in range(len(x)):
        axes[row, 0].imshow(_image(x[row], bounds), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(captions[row], fontsize=6)
        for k in range(classes):
            axis = axes[row, k + 1]
            axis.imshow(_image(recon[row, k], bounds), cmap="gray", vmin=0, vmax=1)
            if row == 0:
                axis.set_title(f"class {k}", fontsize=7)
            if k == int(chosen[row]):
                for spine in axis.spines.values():
                    spine.set(color="tab:red", linewidth=2.5)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=9)
    return save(figure, path)


def plot_detection_curves(series, path, title=""):
    """Robust accuracy (solid) and rejection rate (dashed) in % against eps, one panel per
    model; the strongest eps of each attack (its lowest robust accuracy) marked with a star.

    ``series``: dicts ``{"model", "attack", "eps": [...], "robust_accuracy": [...],
    "rejection_rate": [...]}`` (rates in 0..1)."""
    if not series:
        raise ValueError("plot_detection_curves needs at least one series")
    panels = {}
    for entry in series:
        panels.setdefault(entry["model"], []).append(entry)
    figure, axes = panel_grid(len(panels), 2, (5.4, 3.8))
    for axis, (model, entries) in zip(axes, panels.items()):
        for index, entry in enumerate(entries):
            _draw_detection(axis, entry, MARKERS[index % len(MARKERS)], f"C{index % 10}")
        percent_axis(axis, model, "%", legend_size=6)
    if title:
        figure.suptitle(title)
    return save(figure, path)


def _draw_detection(axis, entry, marker, color):
    eps = np.asarray(entry["eps"], dtype=float)
    order = np.argsort(eps, kind="stable")
    robust = 100 * np.asarray(entry["robust_accuracy"], dtype=float)[order]
    rejected = 100 * np.asarray(entry["rejection_rate"], dtype=float)[order]
    eps = eps[order]
    axis.plot(eps, robust, marker=marker, markersize=4, color=color,
              label=f"{entry['attack']}: robust accuracy")
    axis.plot(eps, rejected, marker=marker, markersize=3, linestyle="--", color=color,
              alpha=0.8, label=f"{entry['attack']}: rejected")
    weakest = int(np.argmin(robust))  # the first minimum: the smallest strongest eps
    axis.plot(eps[weakest], robust[weakest], marker="*", markersize=14, color=color,
              markeredgecolor="black", linestyle="none",
              label=f"strongest eps {eps[weakest]:.3g}: {robust[weakest]:.1f}%")
