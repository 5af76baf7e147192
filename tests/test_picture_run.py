"""Pictures in runs: the [pictures] table, the PNG files listed in report.json, skipped pictures
without matplotlib, and bad tables."""

import json
import sys

import pytest
from advx.cli import cli
from click.testing import CliRunner

from .test_pictures import image_is_nontrivial

SPEC = """
[dataset]
name = "synthetic"
n_train = 256
n_test = 64

[[models]]
name = "blog-cnn"
train = {{ epochs = 2, batch_size = 64 }}

[[attacks]]
name = "pgd"
norm = "linf"
eps = [0.05, 0.1, 0.3]
steps = 5

[[attacks]]
name = "fgsm"
norm = "linf"
eps = [0.05, 0.3]

[protocol]
name = "robust-accuracy"
batch_size = 32
{pictures}
"""


def _run(tmp_path, pictures, name="out"):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(pictures=pictures))
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(out), "--cache",
                                      str(tmp_path / "cache"), "--no-progress"])
    return result, out


def test_every_kind_of_picture_is_drawn_and_listed(tmp_path):
    result, out = _run(tmp_path, '[pictures]\nsamples = 4\nattacks = ["pgd"]')
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    kinds = sorted(p["kind"] for p in report["pictures"])
    assert kinds == ["activations", "curves", "grid", "representation", "representation"]
    for picture in report["pictures"]:
        image_is_nontrivial(out / picture["path"])
    assert report["skipped_pictures"] == []
    assert "## Pictures" in (out / "report.md").read_text()
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_without_a_table_only_the_curves(tmp_path):
    result, out = _run(tmp_path, "")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [p["kind"] for p in report["pictures"]] == ["curves"]
    # drawing the curves reads no adversarial set, so the cache holds the results' sets only
    stored = {p.name.removesuffix(".h5") for p in (tmp_path / "cache" / "adversarials").glob(
        "*.h5")}
    assert stored == {r["set_key"] for r in report["results"]}


def test_a_curve_run_computes_no_set_for_its_pictures(tmp_path):
    """The curve protocol sweeps instead of attacking at each eps: drawing its curves must not
    attack at the largest eps after all."""
    text = SPEC.replace('name = "robust-accuracy"', 'name = "curve"').format(pictures="")
    (tmp_path / "spec.toml").write_text(text)
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "spec.toml"), "--out",
                                      str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    keys = {c["set_key"] for c in report["curves"] if "set_key" in c}
    stored = {p.name.removesuffix(".h5") for p in (tmp_path / "cache" / "adversarials").glob(
        "*.h5")}
    assert len(keys) == 2 and stored == keys


def test_without_matplotlib_the_run_says_what_it_skipped(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result, out = _run(tmp_path, '[pictures]\nkinds = ["curves", "grid"]')
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["pictures"] == []
    assert {s["kind"] for s in report["skipped_pictures"]} == {"curves", "grid"}
    assert all("pip install advx[plots]" in s["reason"] for s in report["skipped_pictures"])
    assert "Pictures not drawn" in (out / "report.md").read_text()


@pytest.mark.parametrize("table, message", [
    ('[pictures]\nkinds = ["histogram"]', "unknown 'histogram'"),
    ('[pictures]\nsamples = 50', "from 1 to 20"),
    ('[pictures]\nattacks = ["cw"]', "allowed: pgd, fgsm"),
    ('[pictures]\ncolour = "red"', "unknown key colour"),
])
def test_bad_pictures_tables_exit_2(tmp_path, table, message):
    result, out = _run(tmp_path, table)
    assert result.exit_code == 2, result.output
    assert "pictures" in result.output and message in result.output
    assert not out.exists()
