"""A real third-party plugin package, installed by pip, seen by `advx list` and used by `advx run`.

The package is installed into a temporary target folder put on PYTHONPATH of subprocesses, so
the test environment itself is left as it was.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "advx-plugin-example"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
                   check=True, capture_output=True, text=True,
                   cwd=tmp_path_factory.mktemp("build"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def advx_cli(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "advx.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_installed_plugin_is_listed(plugin_env):
    result = advx_cli(plugin_env, "list", "attacks", "--json")
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert entries["random-sign"]["plugin"] == "advx-plugin-example"
    assert entries["random-sign"]["params"][0]["name"] == "tries"


@pytest.mark.slow
def test_installed_plugin_runs_in_a_spec(plugin_env, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[dataset]\nname = "synthetic"\nn_train = 128\nn_test = 32\n'
        '[[models]]\nname = "blog-cnn"\ntrain = { epochs = 1 }\n'
        '[[attacks]]\nname = "random-sign"\nnorm = "linf"\neps = 0.3\ntries = 4\n')
    result = advx_cli(plugin_env, "run", spec, "--out", tmp_path / "out", "--cache",
                      tmp_path / "cache", "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    [row] = report["results"]
    assert row["attack"] == "random-sign" and row["mean_queries"] == 4


@pytest.mark.slow
def test_plugin_authors_can_run_the_contract_suite(plugin_env):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(EXAMPLE / "tests")], env=plugin_env, capture_output=True,
                            text=True, timeout=600, cwd=EXAMPLE)
    assert result.returncode == 0, result.stdout[-3000:]
