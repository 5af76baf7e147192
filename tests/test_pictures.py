"""The pictures: each writes a real, non-blank PNG; activation maps locate the perturbation."""

import sys
import types

import advx
import numpy as np
import pytest
import torch
from advx.kernel.defense import Preprocessed
from advx.plugins.reports import pictures, representation
from advx.plugins.reports.pictures import PicturesUnavailable

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


def image_is_nontrivial(path, min_size=200):
    """Assert ``path`` is a PNG of at least ``min_size`` pixels a side that is not blank."""
    from matplotlib import image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    assert pixels.shape[0] >= min_size and pixels.shape[1] >= min_size, pixels.shape
    assert pixels[..., :3].std() > 0.01
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temp file


def _curves():
    curves = []
    for model in ("blog-cnn", "madry-cnn"):
        for norm, eps in (("linf", [0.0, 0.1, 0.2, 0.3]), ("l2", [0.0, 1.0, 2.0])):
            for attack, drop in (("fgsm", 0.5), ("pgd", 1.0), ("worst case", 1.2)):
                accuracy = [max(0.0, 0.99 - drop * e / eps[-1]) for e in eps]
                curves.append({"model": model, "attack": attack, "norm": norm,
                               "eps": eps, "robust_accuracy": accuracy})
    return curves


def test_curves_with_a_worst_case(tmp_path):
    path = pictures.plot_curves(_curves(), tmp_path / "out" / "curves.png", title="robustness")
    assert path == tmp_path / "out" / "curves.png"
    image_is_nontrivial(path)


def test_curves_reject_bad_entries(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        pictures.plot_curves([], tmp_path / "c.png")
    bad = dict(_curves()[0], eps=[0.0, 0.1])
    with pytest.raises(ValueError, match="differ in length"):
        pictures.plot_curves([bad], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def _distortion_entries():
    """Two models' minimal-perturbation entries of one norm (one never fooled beyond 2.0)."""
    return [{"model": "blog-cnn", "curve": {"n": 5, "distances": [0.0, 0.4, 0.9, 1.3, 2.0]}},
            {"model": "abs", "curve": {"n": 4, "distances": [1.1, 1.6]}}]


def test_distortion_steps_with_the_accuracy_at_line(tmp_path):
    path = pictures.plot_distortion(_distortion_entries(), tmp_path / "d.png", "l2", at=1.5)
    image_is_nontrivial(path)
    with pytest.raises(ValueError, match="at least one"):
        pictures.plot_distortion([], tmp_path / "e.png", "l2")
    assert not (tmp_path / "e.png").exists()


def _grid_inputs(channels, n=4, bounds=(0.0, 1.0)):
    generator = torch.Generator().manual_seed(0)
    lower, upper = bounds
    x = lower + (upper - lower) * torch.rand(n, channels, 16, 16, generator=generator)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(lower, upper)
    x_adv[0] = x[0]  # one unperturbed sample: its perturbation panel must still draw
    y = torch.arange(n) % 10
    pred = torch.tensor([0, 3, 2, 7])[:n]
    confidence = torch.softmax(torch.randn(n, 10, generator=generator), 1).amax(1)
    return x, x_adv, y, pred, confidence


def test_grid_rgb_with_targets(tmp_path):
    x, x_adv, y, pred, confidence = _grid_inputs(3, bounds=(-1.0, 1.0))
    targets = torch.tensor([-1, 3, 5, -1])
    path = pictures.plot_grid(x, x_adv, y, pred, confidence, tmp_path / "grid.png",
                              targets=targets, bounds=(-1.0, 1.0), title="targeted")
    image_is_nontrivial(path)
    # Writing again replaces the file in place.
    again = pictures.plot_grid(x.numpy(), x_adv.numpy(), y.numpy(), pred.numpy(),
                               confidence.numpy(), path, targets=targets.numpy(),
                               bounds=(-1.0, 1.0))
    assert again == path
    image_is_nontrivial(path)


def test_grid_grayscale_numpy(tmp_path):
    x, x_adv, y, pred, confidence = (a.numpy() for a in _grid_inputs(1, n=3))
    image_is_nontrivial(pictures.plot_grid(x, x_adv, y, pred, confidence, tmp_path / "g.png"))


def test_grid_rejects_bad_shapes(tmp_path):
    x, x_adv, y, pred, confidence = _grid_inputs(3)
    with pytest.raises(ValueError, match="1 or 3"):
        pictures.plot_grid(x[:, :2], x_adv[:, :2], y, pred, confidence, tmp_path / "g.png")
    many = x[:1].expand(21, -1, -1, -1)
    with pytest.raises(ValueError, match="1 to 20"):
        pictures.plot_grid(many, many, y.repeat(6), pred.repeat(6), confidence.repeat(6),
                           tmp_path / "g.png")


def _clusters(n=200, dim=16, classes=10, seed=0):
    """Gaussian class clusters: features (n, dim) and labels (n,)."""
    generator = np.random.default_rng(seed)
    centres = 4 * generator.normal(size=(classes, dim))
    labels = np.arange(n) % classes
    return centres[labels] + generator.normal(size=(n, dim)), labels, centres


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_representation_with_arrows(tmp_path, method):
    features, labels, centres = _clusters()
    originals = features[labels == 2][:3]
    adversarials = 0.3 * originals + 0.7 * centres[6]  # "2s pushed toward the 6 cluster"
    path = representation.plot_representation(
        torch.as_tensor(features), torch.as_tensor(labels), method, tmp_path / f"{method}.png",
        originals=originals, adversarials=adversarials, adversarial_labels=[6, 6, 2],
        title="2s pushed toward the 6 cluster")
    image_is_nontrivial(path)


def test_representation_without_pairs(tmp_path):
    features, labels, _ = _clusters(n=60)
    image_is_nontrivial(representation.plot_representation(features, labels, "pca",
                                                           tmp_path / "p.png"))


def test_pca_places_originals_where_their_clean_points_are():
    features, labels, _ = _clusters(n=100)
    pairs = (features[:3], features[10:13])
    clean, start, end = representation._embed(features, pairs, "pca", seed=0)
    np.testing.assert_allclose(start, clean[:3])
    np.testing.assert_allclose(end, clean[10:13])


def test_tsne_is_seeded_and_keeps_clusters_apart():
    features, labels, _ = _clusters(n=150, classes=3)
    pairs = (features[:2], features[3:5])
    first = representation._embed(features, pairs, "tsne", seed=1)
    second = representation._embed(features, pairs, "tsne", seed=1)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    clean = first[0]
    # Each point's nearest embedded neighbour belongs to its own class.
    distances = np.linalg.norm(clean[:, None] - clean[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert (labels[distances.argmin(1)] == labels).mean() > 0.95


def test_representation_rejects_bad_input(tmp_path):
    features, labels, _ = _clusters(n=30)
    with pytest.raises(ValueError, match="method"):
        representation.plot_representation(features, labels, "umap", tmp_path / "r.png")
    with pytest.raises(ValueError, match="both"):
        representation.plot_representation(features, labels, "pca", tmp_path / "r.png",
                                           originals=features[:2])
    with pytest.raises(ValueError, match="one label each"):
        representation.plot_representation(features, labels[:5], "pca", tmp_path / "r.png")


@pytest.fixture(scope="module")
def blog_cnn():
    info = advx.get_dataset("synthetic").info  # 1 x 28 x 28
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = advx.get_registry().create("models", "blog-cnn").build(info)
    return model.eval()


def _local_change():
    """Three samples: unchanged, one pixel changed at (5, 5), changed everywhere."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 28, 28, generator=generator)
    x_adv = x.clone()
    x_adv[1, 0, 5, 5] = 1 - x[1, 0, 5, 5]
    x_adv[2] = torch.rand(1, 28, 28, generator=generator)
    return x, x_adv


def test_activation_differences_locate_the_perturbation(blog_cnn):
    x, x_adv = _local_change()
    maps = representation.activation_differences(blog_cnn, x, x_adv)
    assert [name for name, _ in maps] == ["features.0", "features.2", "features.4"]
    assert [tuple(m.shape) for _, m in maps] == [(3, 28, 28), (3, 14, 14), (3, 7, 7)]
    first = maps[0][1]
    assert first[1, 5, 5] > 0
    outside = torch.ones(28, 28, dtype=torch.bool)
    outside[4:7, 4:7] = False  # the 3 x 3 neighbourhood the first convolution sees
    assert first[1][outside].abs().max() <= 1e-6 * first[1].max()
    for _, values in maps:
        assert torch.all(values[0] == 0)  # identical input, identical activations
        assert values[1].max() > 0 and values[2].min() > 0
        assert values[1, -1, -1] <= 1e-6 * values[1].max()  # far from (5, 5)


def test_activation_differences_see_through_a_defense(blog_cnn):
    x, x_adv = _local_change()
    wrapped = Preprocessed(blog_cnn, types.SimpleNamespace(transform=lambda batch: batch))
    plain = representation.activation_differences(blog_cnn, x, x_adv)
    inner = representation.activation_differences(wrapped, x, x_adv)
    assert [name for name, _ in inner] == ["model.features.0", "model.features.2",
                                           "model.features.4"]
    for (_, a), (_, b) in zip(plain, inner):
        torch.testing.assert_close(a, b)


def test_activation_differences_of_a_plain_sequential():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                    torch.nn.Conv2d(4, 5, 3, stride=2), torch.nn.Flatten())
    x = np.zeros((2, 3, 9, 9), dtype=np.float32)
    x_adv = x.copy()
    x_adv[1] += 0.5
    maps = representation.activation_differences(model, x, x_adv)
    assert [(name, tuple(m.shape)) for name, m in maps] == [("0", (2, 7, 7)), ("2", (2, 3, 3))]
    assert all(torch.all(m[0] == 0) and torch.all(m[1] > 0) for _, m in maps)


def test_plot_activation_differences(tmp_path, blog_cnn):
    x, x_adv = _local_change()
    path = representation.plot_activation_differences(blog_cnn, x, x_adv, tmp_path / "a.png",
                                                      title="where the attack acts")
    image_is_nontrivial(path)
    many = x[:1].expand(9, -1, -1, -1)
    with pytest.raises(ValueError, match="1 to 8"):
        representation.plot_activation_differences(blog_cnn, many, many, tmp_path / "b.png")


@pytest.mark.parametrize("missing, package", [("matplotlib", "matplotlib"),
                                              ("sklearn", "scikit-learn")])
def test_unavailable_without_the_extras(tmp_path, monkeypatch, missing, package):
    monkeypatch.setitem(sys.modules, missing, None)
    features, labels, _ = _clusters(n=30)
    with pytest.raises(PicturesUnavailable, match=rf"{package}.*pip install advx\[plots\]"):
        representation.plot_representation(features, labels, "pca", tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


def test_every_picture_needs_matplotlib(tmp_path, monkeypatch, blog_cnn):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    x, x_adv, y, pred, confidence = _grid_inputs(1)
    calls = [
        lambda: pictures.plot_curves(_curves(), tmp_path / "c.png"),
        lambda: pictures.plot_distortion(_distortion_entries(), tmp_path / "d.png", "linf"),
        lambda: pictures.plot_grid(x, x_adv, y, pred, confidence, tmp_path / "g.png"),
        lambda: representation.plot_activation_differences(blog_cnn, *_local_change(),
                                                           tmp_path / "a.png"),
    ]
    for call in calls:
        with pytest.raises(PicturesUnavailable) as info:
            call()
        assert "pip install advx[plots]" in info.value.reason
    assert not list(tmp_path.iterdir())
    # The maps themselves are plain torch and need no extra.
    assert len(representation.activation_differences(blog_cnn, *_local_change())) == 3
