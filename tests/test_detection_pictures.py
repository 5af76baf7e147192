"""The detector and purifier pictures: score distributions with the threshold, every class's
reconstruction, robust accuracy and rejection rate against eps with the strongest eps."""

import json

import numpy as np
import pytest
from advx.cli import cli
from advx.plugins.reports import detection_pictures as draw
from advx.plugins.reports.detection_run import detection_series
from click.testing import CliRunner

pytest.importorskip("matplotlib")


def _image(path):
    from matplotlib import image
    return image.imread(str(path))


def test_score_histograms_are_drawn_on_a_log_axis_across_decades(tmp_path):
    rng = np.random.default_rng(0)
    clean, adversarial = rng.lognormal(-6, 1, 300), rng.lognormal(-1, 1, 100)
    path = draw.plot_scores(clean, {"pgd": adversarial}, 0.01, tmp_path / "s.png")
    assert _image(path).shape[0] > 100


def test_scores_with_zeros_and_one_value_still_draw(tmp_path):
    path = draw.plot_scores(np.zeros(5), {"fgsm": np.zeros(3)}, 0.0, tmp_path / "z.png")
    assert _image(path).shape[0] > 100


def test_reconstructions_check_their_shapes(tmp_path):
    x = np.random.rand(2, 1, 8, 8)
    recon = np.random.rand(2, 10, 1, 8, 8)
    draw.plot_reconstructions(x, recon, [3, 4], ["a", "b"], tmp_path / "r.png")
    with pytest.raises(ValueError, match=r"\(N, K, C, H, W\)"):
        draw.plot_reconstructions(x, recon[:, :, :, :4], [3, 4], ["a", "b"], tmp_path / "q.png")


def test_detection_series_keeps_detector_rows_with_two_or_more_eps_in_eps_order():
    rows = [{"model": "m", "attack": "a", "eps": e, "robust_accuracy": r, "rejection_rate": j}
            for e, r, j in ((0.3, 0.5, 0.4), (0.1, 0.2, 0.0), (0.2, 0.1, 0.1))]
    rows += [{"model": "m", "attack": "b", "eps": 0.3, "robust_accuracy": 0.5,
              "rejection_rate": 0.3},
             {"model": "plain", "attack": "a", "eps": 0.1, "robust_accuracy": 0.5},
             {"model": "plain", "attack": "a", "eps": 0.2, "robust_accuracy": 0.4}]
    series = detection_series({"results": rows})
    assert series == [{"model": "m", "attack": "a", "eps": [0.1, 0.2, 0.3],
                       "robust_accuracy": [0.2, 0.1, 0.5], "rejection_rate": [0.0, 0.1, 0.4]}]


SPEC = """
[dataset]
name = "synthetic"
n_train = 160
n_test = 24

[[models]]
name = "blog-cnn"
train = { epochs = 1, holdout = 40 }
defenses = [
    { name = "magnet-detector", fpr = 0.05, generator = { name = "magnet-dae", epochs = 1 } },
    { name = "puvae", generator = { name = "cvae", channels = 4, hidden = 8, epochs = 1 } },
]

[[attacks]]
name = "fgsm"
norm = "linf"
eps = [0.1, 0.3]

[pictures]
kinds = ["detection", "scores", "reconstructions"]

[protocol]
name = "robust-accuracy"
"""


def test_a_run_behind_a_detector_and_purifier_draws_the_three_pictures(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(out),
                                      "--cache", str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    kinds = sorted(p["kind"] for p in report["pictures"])
    assert kinds == ["detection", "reconstructions", "scores"], report["pictures"]
    for picture in report["pictures"]:
        assert _image(out / picture["path"]).shape[0] > 100
    assert "Detector scores" in (out / "report.md").read_text()
