"""The ray executor: same report as a local run (sets, trained weights, curves, transfer
sets), progress and provenance, GPU actors, user errors fail the run once, a killed worker is
retried, a killed driver leaves the store resumable.

Runs only where Ray is installed (``pip install advx[ray]``); the tests of this module share
one local Ray instance of two CPUs and one declared GPU (a resource Ray schedules by: this
machine has no CUDA device, so actors that reserve it find none).
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
import torch
from advx.host.pluginmanager import add_plugin, load_plugins
from advx.host.registry import Registry
from advx.run.execute import execute
from advx.run.spec import parse_spec
from advx.store.format import sets_dir

from . import ray_plugins
from .conftest import TINY_SPEC
from .test_executors import recording_progress

ray = pytest.importorskip("ray")

SAFETY = 300  # seconds: bounds a hung run only


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
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


def differences(one, other):
    """The fields of result rows that differ between two reports (a readable failure)."""
    rows = zip(comparable(one)[0], comparable(other)[0], strict=True)
    return [(a["attack"], a["eps"], {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)})
            for a, b in rows if a != b]


def ray_executor(registry, **params):
    return registry.create("executors", "ray", workers=2, **params)


def test_ray_run_equals_local_run(ray_instance, registry, trained, tmp_path):
    spec = parse_spec(TINY_SPEC.format(extra=""), registry)
    cache = cache_with_model(trained, tmp_path / "cache")
    log = []
    report = execute(spec, registry, tmp_path / "out", device="cpu", cache=cache,
                     executor=ray_executor(registry), progress=recording_progress(log))
    assert comparable(report) == comparable(trained[1])
    assert {r["cache"] for r in report["results"]} == {"computed"}
    for path in sets_dir(cache).glob("*.h5"):
        with h5py.File(path, "r") as f:
            units = json.loads(f.attrs["provenance"])["units"]
        assert [(u["start"], u["stop"]) for u in units] == [(0, 32), (32, 64)]
        assert all(u["device"] == "cpu" and u["worker"] != "local" for u in units)
        assert all("gpus" not in u for u in units)  # CPU actors reserve no GPU
    [(_, total, calls)] = [entry for entry in log if entry[0] == "4 adversarial sets"]
    assert sum(n for n, _ in calls) == total == 4 * 64  # samples, across the workers
    statuses = [status for _, status in calls if status]
    assert statuses[0] == "0/8 units" and statuses[-1] == "8/8 units, 2 workers"
    assert [int(s.split("/")[0]) for s in statuses] == list(range(9))
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
    assert comparable(resumed) == comparable(fresh), differences(resumed, fresh)


def test_gpu_actors_share_a_declared_gpu_and_need_cuda(ray_instance, registry):
    from advx.plugins.executors import ray_pool

    executor = registry.create("executors", "ray", gpus_per_worker=0.5)
    assert ray_pool.actor_options(executor)["num_gpus"] == 0.5
    pool = ray_pool.Pool(executor)  # as many actors as halves of the cluster's one GPU
    try:
        assert len(pool.actors) == 2

        def reserved(actor):
            return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

        seen = ray.get([a.__ray_call__.remote(reserved) for a in pool.actors], timeout=SAFETY)
        assert [(list(map(str, ids)), visible) for ids, visible in seen] == [(["0"], "0")] * 2
        assert ray.available_resources().get("GPU", 0) == 0  # both halves taken
        unit = advx.TrainUnit("k", "blog-cnn", registry.create("models", "blog-cnn"),
                              advx.TrainRecipe(epochs=1), None,
                              registry.create("datasets", "synthetic", n_train=64, n_test=16),
                              torch.device("cuda"))
        with pytest.raises(advx.UsageError, match=r"gpus_per_worker = 0.5 reserved GPU\(s\) "
                                                  r"\['0'\] for it, but torch sees no CUDA"):
            list(pool.train([unit]))  # this machine has no CUDA device
    finally:
        pool.close()
    with pytest.raises(advx.UsageError, match="gpus_per_worker = 2, but the Ray cluster has 1 "
                                              "GPU"):
        ray_pool.Pool(registry.create("executors", "ray", gpus_per_worker=2))


TRAINING_SPEC = """
[dataset]
name = "synthetic"
n_train = 256
n_test = 64

[[models]]
name = "blog-cnn"
train = { epochs = 2, batch_size = 64 }

[[models]]
name = "blog-cnn"
id = "blog-cnn-seed-1"
train = { epochs = 2, batch_size = 64, seed = 1 }

[[attacks]]
name = "fgsm"
norm = "linf"
eps = 0.3

[[attacks]]
name = "transfer"
id = "from-seed-2"
norm = "linf"
eps = [0.3]
source = { name = "blog-cnn", train = { epochs = 2, batch_size = 64, seed = 2 } }
source_attack = { name = "pgd", steps = 5 }

[protocol]
name = "robust-accuracy"
batch_size = 32
"""


def stored_weights(cache):
    """Weights key -> (digest, metadata) of every weights file under ``cache``."""
    found = {}
    for path in (cache / "models").glob("*.h5"):
        with h5py.File(path, "r") as f:
            found[path.stem] = (f.attrs["digest"], json.loads(f.attrs["metadata"]))
    return found


def test_models_train_on_workers_to_the_same_weights(ray_instance, registry, tmp_path):
    spec = parse_spec(TRAINING_SPEC, registry)
    local = execute(spec, registry, tmp_path / "local", device="cpu",
                    cache=tmp_path / "local-cache")
    log = []
    report = execute(spec, registry, tmp_path / "out", device="cpu", cache=tmp_path / "cache",
                     executor=ray_executor(registry), progress=recording_progress(log))
    assert comparable(report) == comparable(local)  # weights digests included
    assert {m["source"] for m in report["models"]} == {"trained"}
    here, there = stored_weights(tmp_path / "local-cache"), stored_weights(tmp_path / "cache")
    assert len(there) == 3  # two entries and the transfer entry's source
    assert {k: d for k, (d, _) in there.items()} == {k: d for k, (d, _) in here.items()}
    workers = {m["trained_by"]["worker"] for _, m in there.values()}
    assert len(workers) == 2 and "local" not in workers  # side by side, on the actors
    assert all(m["trained_by"]["device"] == "cpu" for _, m in there.values())
    [(_, total, calls)] = [entry for entry in log if entry[0] == "train 3 models"]
    assert total == 3 and [n for n, _ in calls] == [1, 1, 1]
    transfer = [r for r in report["results"] if r["attack"] == "from-seed-2"]
    assert len(transfer) == 2 and {r["cache"] for r in transfer} == {"computed"}


CURVE_SPEC = """
[dataset]
name = "synthetic"
n_train = 256
n_test = 128

[[models]]
name = "blog-cnn"
train = { epochs = 2, batch_size = 64 }

[[attacks]]
name = "pgd"
norm = "linf"
eps = { from = 0.02, to = 0.3, count = 6 }
steps = 5

[[attacks]]
name = "deepfool"
norm = "linf"
eps = [0.05, 0.1, 0.15]

[protocol]
name = "curve"
batch_size = 64
"""


def without(value, names=("seconds", "cache", "source")):
    """``value`` with the keys ``names`` left out at every depth."""
    if isinstance(value, dict):
        return {k: without(v, names) for k, v in value.items() if k not in names}
    if isinstance(value, list):
        return [without(v, names) for v in value]
    return value


def test_curve_protocol_on_ray_equals_local(ray_instance, registry, tmp_path):
    spec = parse_spec(CURVE_SPEC, registry)
    local = execute(spec, registry, tmp_path / "local", device="cpu", cache=tmp_path / "lc")
    cache = tmp_path / "cache"
    shutil.copytree(tmp_path / "lc" / "models", cache / "models")
    report = execute(spec, registry, tmp_path / "out", device="cpu", cache=cache,
                     executor=ray_executor(registry))
    methods = {c["attack"]: c["method"] for c in report["curves"]}
    assert methods == {"pgd": "guided bisection", "deepfool": "minimal distances",
                       "worst case": "worst case"}
    assert without([report[k] for k in ("clean_accuracy", "curves", "results")]) == without(
        [local[k] for k in ("clean_accuracy", "curves", "results")])
    # the sets the curve reads, and no robust-accuracy set per eps
    assert sorted(p.name for p in sets_dir(cache).glob("*.h5")) == sorted(
        p.name for p in sets_dir(tmp_path / "lc").glob("*.h5"))
    assert len(list(sets_dir(cache).glob("*.h5"))) == 2


@pytest.mark.parametrize("params, resources, count", [
    ({}, {"CPU": 3.0}, 3),
    ({"cpus_per_worker": 0.5}, {"CPU": 2.0}, 4),
    ({"gpus_per_worker": 0.5}, {"CPU": 8.0, "GPU": 2.0}, 4),
    ({"gpus_per_worker": 1 / 3}, {"CPU": 8.0, "GPU": 1.0}, 3),
    ({"gpus_per_worker": 2}, {"CPU": 8.0, "GPU": 4.0}, 2),
    ({"workers": 2, "gpus_per_worker": 1}, {"CPU": 8.0, "GPU": 2.0}, 2),
])
def test_actor_count_follows_the_cluster(registry, params, resources, count):
    from advx.plugins.executors.ray_pool import actor_count

    assert actor_count(registry.create("executors", "ray", **params), resources) == count


@pytest.mark.parametrize("params, resources, message", [
    ({"workers": 3}, {"CPU": 2.0}, "workers = 3 x cpus_per_worker = 1: 3 CPUs, but the Ray "
                                   "cluster has 2; allowed: at most 2 workers"),
    ({"cpus_per_worker": 4}, {"CPU": 2.0}, "workers = 1 x cpus_per_worker = 4: 4 CPUs"),
    ({"workers": 3, "gpus_per_worker": 1}, {"CPU": 8.0, "GPU": 2.0},
     "workers = 3 x gpus_per_worker = 1: 3 GPUs, but the Ray cluster has 2"),
    ({"gpus_per_worker": 0.5}, {"CPU": 8.0}, "gpus_per_worker = 0.5, but the Ray cluster has 0"),
])
def test_actor_count_refuses_actors_that_would_never_start(registry, params, resources,
                                                           message):
    from advx.plugins.executors.ray_pool import actor_count

    with pytest.raises(advx.UsageError, match=message.replace("(", r"\(")):
        actor_count(registry.create("executors", "ray", **params), resources)
