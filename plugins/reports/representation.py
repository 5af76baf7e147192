"""Pictures of what a model sees: 2-D maps of its features and where attacks change activations.

:func:`plot_representation` embeds penultimate-layer features in the plane (PCA, or tSNE of van
der Maaten and Hinton, 2008) and draws arrows from chosen clean inputs to their adversarial
versions, showing which class cluster an attack pushes them toward.  :func:`activation_differences`
measures, for every convolution, how much the adversarial input changes each location's
activations.  Pure functions like those of :mod:`.pictures`: matplotlib and scikit-learn are
optional (``pip install advx[plots]``); without them they raise
:class:`~.pictures.PicturesUnavailable`.
"""

import numpy as np

from .pictures import PicturesUnavailable, as_numpy, new_figure, save

METHODS = ("pca", "tsne")
MAX_ACTIVATION_ROWS = 8


def plot_representation(features, labels, method, path, originals=None, adversarials=None,
                        adversarial_labels=None, seed=0, title=""):
    """Scatter of a 2-D embedding of ``features`` (M, D) coloured by ``labels`` (M,).

    ``originals`` and ``adversarials`` (K, D) are the features of chosen clean inputs and of
    their adversarial versions: drawn as large circles and stars joined by arrows; a star is
    filled with the colour of its ``adversarial_labels`` class (the model's prediction) if given.
    ``method`` "pca" fits a 2-component PCA on ``features`` alone and projects the others;
    "tsne" (which cannot place new points) embeds ``[features; originals; adversarials]`` in one
    fit with ``random_state=seed``, PCA initialisation and perplexity ``min(30, (n - 1) / 3)``;
    cost O(n log n) per iteration (Barnes-Hut), about a second for n = 200 on a CPU.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    features, labels = as_numpy(features).astype(float), as_numpy(labels).reshape(-1)
    pairs = _pairs(features, labels, originals, adversarials)
    figure = new_figure(figsize=(8, 6))  # first: no embedding is computed without matplotlib
    clean, start, end = _embed(features, pairs, method, seed)
    axis = figure.subplots()
    colours = _class_colours()
    for label in np.unique(labels):
        points = clean[labels == label]
        axis.scatter(points[:, 0], points[:, 1], s=8, alpha=0.5, color=colours(label),
                     label=str(label), linewidths=0)
    if len(start):
        _draw_pairs(axis, start, end, adversarial_labels, colours)
    _legend(figure, axis, len(np.unique(labels)))
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title or f"{method.upper()} of penultimate-layer features")
    return save(figure, path)


def _legend(figure, axis, classes):
    """The classes (opaque, enlarged dots), then original and adversarial, right of the axes."""
    legend = figure.legend(*axis.get_legend_handles_labels(), loc="outside right upper",
                           fontsize=8, title="class", scatterpoints=1)
    for handle in legend.legend_handles[:classes]:
        handle.set_sizes([30])
        handle.set_alpha(1)
    for handle in legend.legend_handles[classes:]:
        handle.set_sizes([90])


def _pairs(features, labels, originals, adversarials):
    """``(originals, adversarials)`` as float arrays (K, D), checked against ``features``."""
    if features.ndim != 2 or len(features) != len(labels) or len(features) < 2:
        raise ValueError(f"features must be (M >= 2, D) with one label each; got "
                         f"{features.shape} and {labels.shape[0]} labels")
    if (originals is None) != (adversarials is None):
        raise ValueError("pass both originals and adversarials, or neither")
    if originals is None:
        empty = np.zeros((0, features.shape[1]))
        return empty, empty
    originals, adversarials = (as_numpy(a).astype(float) for a in (originals, adversarials))
    if originals.shape != adversarials.shape or originals.shape[1:] != features.shape[1:]:
        raise ValueError(f"originals {originals.shape} and adversarials {adversarials.shape} "
                         f"must both be (K, {features.shape[1]})")
    return originals, adversarials


def _embed(features, pairs, method, seed):
    """The 2-D coordinates of the clean points, the originals and the adversarials."""
    try:
        import sklearn  # noqa: F401  (imported first: a stale submodule is ignored)
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError:
        raise PicturesUnavailable(
            "scikit-learn is not installed; pip install advx[plots]") from None
    originals, adversarials = pairs
    if method == "pca":
        pca = PCA(n_components=2, random_state=seed).fit(features)
        return tuple(pca.transform(a) if len(a) else a[:, :2] for a in (features, *pairs))
    points = np.concatenate([features, originals, adversarials])
    perplexity = min(30.0, (len(points) - 1) / 3)
    embedded = TSNE(n_components=2, random_state=seed, init="pca",
                    perplexity=perplexity).fit_transform(points)
    m, k = len(features), len(originals)
    return embedded[:m], embedded[m:m + k], embedded[m + k:]


def _class_colours():
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return lambda label: palette[int(label) % len(palette)]


def _draw_pairs(axis, start, end, adversarial_labels, colours):
    """Circles at the originals, stars at the adversarials, an arrow from each to its pair."""
    axis.scatter(start[:, 0], start[:, 1], s=110, facecolors="white", edgecolors="black",
                 linewidths=1.5, zorder=4, label="original")
    if adversarial_labels is None:
        fill = ["tab:red"] * len(end)
    else:
        fill = [colours(label) for label in as_numpy(adversarial_labels).reshape(-1)]
    label = "adversarial" if adversarial_labels is None else "adversarial\n(fill: prediction)"
    axis.scatter(end[:, 0], end[:, 1], s=220, marker="*", c=fill, edgecolors="black",
                 linewidths=1, zorder=5, label=label)
    for a, b in zip(start, end):
        axis.annotate("", xy=(b[0], b[1]), xytext=(a[0], a[1]), zorder=3,
                      arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2,
                                  "shrinkA": 6, "shrinkB": 8})


def conv_layers(model):
    """``model.conv_layers()`` if the model has it, else every ``nn.Conv2d`` in module order
    (which finds the convolutions of a model wrapped by a defense, e.g. ``Preprocessed``)."""
    from torch import nn

    if hasattr(model, "conv_layers"):
        return list(model.conv_layers())
    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


def activation_differences(model, x, x_adv):
    """``[(layer_name, map (N, H, W))]``: per convolution, input side first, the max over
    channels of ``|activation(x_adv) - activation(x)|`` at each location.

    Two forward passes without gradients, read by forward hooks (a convolution called more than
    once per pass keeps its last output; one never called is left out).  Put the model in eval
    mode first: in training mode batch-norm layers would use, and update, batch statistics.
    """
    import torch

    layers = conv_layers(model)
    # names as in the module the run wraps (InvariantBatches adds a leading "module.")
    names = {id(module): name.removeprefix("module.") for name, module in model.named_modules()}
    parameter = next(model.parameters(), None)
    like = {} if parameter is None else {"device": parameter.device, "dtype": parameter.dtype}
    x, x_adv = (torch.as_tensor(a).to(**like) for a in (x, x_adv))
    if x.shape != x_adv.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} differ in shape")
    passes = []  # one dict per forward pass: id(layer) -> its output

    def record(module, inputs, output):
        passes[-1][id(module)] = output.detach()[:len(x)]  # without rows of any padding

    handles = [layer.register_forward_hook(record) for layer in layers]
    try:
        with torch.no_grad():
            for batch in (x, x_adv):
                passes.append({})
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    clean, adversarial = passes
    return [(names.get(id(layer), f"conv{index}"),
             (adversarial[id(layer)] - clean[id(layer)]).abs().amax(dim=1))
            for index, layer in enumerate(layers) if id(layer) in clean]


def plot_activation_differences(model, x, x_adv, path, title=""):
    """Rows of samples (<= 8); columns ``|x_adv - x|`` (max over channels) then, per
    convolution, :func:`activation_differences`; heatmaps ("magma") on one scale per column,
    with a colour bar under each column.  Returns the written path.
    """
    rows = len(x)
    if not 1 <= rows <= MAX_ACTIVATION_ROWS:
        raise ValueError(f"plot_activation_differences draws 1 to {MAX_ACTIVATION_ROWS} "
                         f"samples; got {rows}")
    figure = new_figure()  # first: no forward pass is run without matplotlib
    maps = activation_differences(model, x, x_adv)
    difference = np.abs(as_numpy(x_adv).astype(float) - as_numpy(x).astype(float)).max(axis=1)
    columns = [("input |x_adv - x|", difference)] + [(n, as_numpy(m)) for n, m in maps]
    figure.set_size_inches(2.1 * len(columns), 2.0 * rows + 0.9)
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for column, (name, values) in enumerate(columns):
        _heat_column(figure, axes[:, column], name, values)
    for row in range(rows):
        axes[row, 0].set_ylabel(f"sample {row}", fontsize=8)
    if title:
        figure.suptitle(title)
    return save(figure, path)


def _heat_column(figure, axes, name, values):
    """One heatmap per sample on the column's common scale, its name above, a colour bar below."""
    top = float(values.max()) or 1.0
    for axis, heat in zip(axes, values):
        image = axis.imshow(heat, cmap="magma", vmin=0, vmax=top)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0].set_title(name, fontsize=8)
    figure.colorbar(image, ax=list(axes), location="bottom", shrink=0.8, aspect=12)
