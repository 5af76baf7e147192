"""Protocol ``classes``: evaluating only the test samples of some classes."""

import json

import advx
import h5py
import numpy as np
import pytest
from advx.cli import cli
from click.testing import CliRunner

from .conftest import TINY_SPEC


def _run(tmp_path, protocol_extra):
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_SPEC.format(extra="").replace(
        'name = "robust-accuracy"', f'name = "robust-accuracy"\n{protocol_extra}'))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(out), "--cache",
                                      str(tmp_path / "cache"), "--no-progress"])
    return result, out


def test_classes_select_samples_and_name_them_in_the_set(tmp_path):
    result, out = _run(tmp_path, "classes = [2, 6]\nlimit = 5")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["n"] == 5
    _, y = advx.get_dataset("synthetic", n_train=256, n_test=64).load("test")
    expected = np.flatnonzero(np.isin(y.numpy(), [2, 6]))[:5]
    key = report["results"][0]["set_key"]
    path = next((tmp_path / "cache" / "adversarials").glob(f"{key}*.h5"))
    with h5py.File(path, "r") as f:
        assert f["indices"][:].tolist() == expected.tolist()
        assert set(f["y"][:].tolist()) <= {2, 6}
        identity = json.loads(f.attrs["provenance"])["identity"]
    assert identity["dataset"]["indices"] == expected.tolist()


@pytest.mark.parametrize("value", ["[]", "[-1]", "2", '["two"]'])
def test_bad_classes_exit_2(tmp_path, value):
    result, _ = _run(tmp_path, f"classes = {value}")
    assert result.exit_code == 2, result.output
    assert "classes" in result.output
