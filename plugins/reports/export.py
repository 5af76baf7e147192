"""The PNG grid ``advx cache export`` writes beside a set's .npz (``advx_export_set``)."""

from . import pictures


def export_png(stored, clean, npz_path, count=8):
    """Draw the set's first ``count`` samples (clean, perturbation, adversarial) next to
    ``npz_path``; the lines ``advx cache export`` prints."""
    if clean is None:
        return ["PNG skipped: the set's clean inputs are not available"]
    arrays, count = stored.arrays, min(count, len(clean))
    if count == 0:
        return ["PNG skipped: the set is empty"]
    png = npz_path.with_suffix(".png")
    bounds = stored.provenance["identity"]["threat"]["bounds"]
    try:
        pictures.plot_grid(clean[:count], arrays["x_adv"][:count], arrays["y"][:count],
                           arrays["pred"][:count], None, png, targets=arrays["targets"][:count],
                           bounds=bounds)
    except pictures.PicturesUnavailable as exc:
        return [f"PNG skipped: {exc.reason}"]
    except ValueError as exc:  # not images plot_grid can draw (shape, channels)
        return [f"PNG skipped: {exc}"]
    return [f"Wrote {png}"]
