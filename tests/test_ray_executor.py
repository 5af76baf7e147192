"""The ray executor: same report as a local run, user errors fail the run once, a killed
worker is retried, a killed driver leaves the store resumable.

Runs only where Ray is installed (``pip install advx[ray]``); the tests of this module share
one local Ray instance of two CPUs.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import advx
import h5py
import pytest
from advx.host.pluginmanager import add_plugin, load_plugins
from advx.host.registry import Registry
from advx.run.execute import execute
from advx.run.spec import parse_spec
from advx.store.format import sets_dir

from . import ray_plugins
from .conftest import TINY_SPEC

ray = pytest.importorskip("ray")

SAFETY = 300  # seconds: bounds a hung run only


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def registry():
    loaded = load_plugins()
    add_plugin(loaded, ray_plugins, "ray-test-plugins")
    return Registry(loaded)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, registry):
    """A cache holding the tiny spec's trained model, and a local run's report."""
    base = tmp_path_factory.mktemp("local")
    spec = parse_spec(TINY_SPEC.format(extra=""), registry)
    report = execute(spec, registry, base / "out", device="cpu", cache=base / "cache")
    return base / "cache", report


def cache_with_model(trained, path):
    shutil.copytree(trained[0] / "models", path / "models")
    return path


def comparable(report):
    """Everything a run measured but compute seconds and where sets and weights came from
    (computed, trained or read from the cache)."""
    rows = [{k: v for k, v in r.items() if k not in ("seconds", "cache")}
            for r in report["results"]]
    models = [{k: v for k, v in m.items() if k != "source"} for m in report["models"]]
    return rows, report["clean_accuracy"], report["worst_case"], models


def ray_executor(registry, **params):
    return registry.create("executors", "ray", workers=2, **params)


def test_ray_run_equals_local_run(ray_instance, registry, trained, tmp_path):
    spec = parse_spec(TINY_SPEC.format(extra=""), registry)
    cache = cache_with_model(trained, tmp_path / "cache")
    report = execute(spec, registry, tmp_path / "out", device="cpu", cache=cache,
                     executor=ray_executor(registry))
    assert comparable(report) == comparable(trained[1])
    assert {r["cache"] for r in report["results"]} == {"computed"}
    for path in sets_dir(cache).glob("*.h5"):
        with h5py.File(path, "r") as f:
            units = json.loads(f.attrs["provenance"])["units"]
        assert [(u["start"], u["stop"]) for u in units] == [(0, 32), (32, 64)]
        assert all(u["device"] == "cpu" and u["worker"] != "local" for u in units)
    again = execute(spec, registry, tmp_path / "again", device="cpu", cache=cache,
                    executor=ray_executor(registry))
    assert {r["cache"] for r in again["results"]} == {"cache"}
    assert comparable(again) == comparable(report)


def one_attack_spec(name, marker):
    attack = f'[[attacks]]\nname = "{name}"\nnorm = "linf"\neps = 0.1\nmarker = "{marker}"\n'
    text = TINY_SPEC.format(extra="")
    return text[:text.index("[[attacks]]")] + attack + text[text.index("[protocol]"):]


def test_user_error_in_a_unit_fails_the_run_once(ray_instance, registry, trained, tmp_path):
    marker = tmp_path / "calls"
    spec = parse_spec(one_attack_spec("test-refuse", marker), registry)
    with pytest.raises(advx.UsageError, match="refused on purpose"):
        execute(spec, registry, tmp_path / "out", device="cpu",
                cache=cache_with_model(trained, tmp_path / "cache"),
                executor=ray_executor(registry))
    assert 1 <= len(marker.read_text().splitlines()) <= 2  # two units, neither retried


def test_killed_worker_is_retried(ray_instance, registry, trained, tmp_path):
    marker = tmp_path / "killed"
    spec = parse_spec(one_attack_spec("test-kill-once", marker), registry)
    marker.touch()  # the local reference run never kills
    local = execute(spec, registry, tmp_path / "local", device="cpu",
                    cache=cache_with_model(trained, tmp_path / "local-cache"))
    marker.unlink()
    report = execute(spec, registry, tmp_path / "out", device="cpu",
                     cache=cache_with_model(trained, tmp_path / "cache"),
                     executor=ray_executor(registry))
    assert marker.exists()  # a worker died computing a unit
    assert comparable(report) == comparable(local)


def recorded_shards(cache):
    total = 0
    for path in sets_dir(cache).glob("*.partial.h5"):
        try:
            with h5py.File(path, "r", locking=False) as f:
                total += int(f["shards"]["done"][()].sum())
        except (OSError, KeyError):
            pass
    return total + 2 * len(list(sets_dir(cache).glob("*[0-9a-f].h5")))


def test_killed_driver_leaves_the_store_resumable(ray_instance, registry, trained, tmp_path):
    text = (TINY_SPEC.format(extra="").replace("n_test = 64", "n_test = 192")
            .replace("batch_size = 32", "batch_size = 16"))
    (tmp_path / "spec.toml").write_text(text)
    cache = cache_with_model(trained, tmp_path / "cache")  # (n_test: same training data)
    command = [sys.executable, "-m", "advx.cli", "run", str(tmp_path / "spec.toml"), "--out",
               str(tmp_path / "killed"), "--cache", str(cache), "--no-progress",
               "--executor", "ray", "--address", ray_instance]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + SAFETY
    while process.poll() is None and recorded_shards(cache) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert recorded_shards(cache) < 4 * 12  # killed part-way
    spec = parse_spec(text, registry)
    resumed = execute(spec, registry, tmp_path / "resumed", device="cpu", cache=cache)
    fresh = execute(spec, registry, tmp_path / "fresh", device="cpu",
                    cache=cache_with_model(trained, tmp_path / "fresh-cache"))
    assert "resumed" in {r["cache"] for r in resumed["results"]}
    assert comparable(resumed) == comparable(fresh)
