"""Executors without Ray: what the driver hands an executor (only what the store lacks, every
set of the protocol at once and every model to train before them when the executor
prefetches), the [executor] table and the ray executor's settings, the flags, the progress
display's unit counts, where each shard ran."""

import contextlib
import json
import shutil
from typing import ClassVar

import advx
import attrs
import h5py
import pytest
import torch
from advx.cli import cli
from advx.host.pluginmanager import add_plugin, load_plugins
from advx.host.registry import Registry
from advx.run.execute import execute
from advx.run.spec import parse_spec
from advx.store.format import sets_dir
from click.testing import CliRunner

from .conftest import TINY_SPEC


@attrs.frozen(kw_only=True)
class Recording(advx.LocalExecutor):
    """The local executor, noting each call of run() (the units it got)."""

    name = "test-recording"
    prefetch = True
    calls: ClassVar[list] = []
    trained: ClassVar[list] = []

    def run(self, units):
        Recording.calls.append([(u.work.key, u.start, u.stop) for u in units])
        return super().run(units)

    def train(self, units):
        Recording.trained.append([u.label for u in units])
        return super().train(units)


@pytest.fixture(scope="module")
def registry():
    module = type(advx)("recording")
    module.advx_register_executors = advx.hookimpl(
        specname="advx_register_executors")(lambda register: register(Recording))
    loaded = load_plugins()
    add_plugin(loaded, module, "recording")
    return Registry(loaded)


@pytest.fixture(scope="module")
def local(tmp_path_factory, registry):
    base = tmp_path_factory.mktemp("local")
    spec = parse_spec(TINY_SPEC.format(extra=""), registry)
    return base / "cache", execute(spec, registry, base / "out", device="cpu",
                                   cache=base / "cache")


def test_prefetch_hands_every_missing_shard_at_once(registry, local, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(local[0] / "models", cache / "models")
    kept = sorted(sets_dir(local[0]).glob("*.h5"))[0]  # one set already stored
    sets_dir(cache).mkdir(parents=True)
    shutil.copy(kept, sets_dir(cache) / kept.name)
    Recording.calls.clear()
    text = TINY_SPEC.format(extra="") + '\n[executor]\nname = "test-recording"\n'
    report = execute(parse_spec(text, registry), registry, tmp_path / "out", device="cpu",
                     cache=cache)
    [units] = Recording.calls  # one call: three sets of two shards, the stored one left out
    assert len(units) == 6 and len({key for key, _, _ in units}) == 3
    assert kept.stem not in {key for key, _, _ in units}
    assert [r["robust_accuracy"] for r in report["results"]] == [
        r["robust_accuracy"] for r in local[1]["results"]]
    assert report["spec"]["executor"] == {"name": "test-recording"}


def test_local_executor_is_the_default(registry):
    spec = parse_spec(TINY_SPEC.format(extra=""), registry)
    assert spec.executor is None
    text = TINY_SPEC.format(extra="") + '\n[executor]\nname = "local"\n'
    assert isinstance(parse_spec(text, registry).executor, advx.LocalExecutor)


@pytest.mark.parametrize("flags, message", [
    (["--address", "auto"], "--address needs an executor that takes one"),
    (["--executor", "nope"], "'nope' is not a registered executor"),
    (["--executor", "local", "--address", "auto"], "has no parameter address"),
])
def test_executor_flags_refused_before_any_work(tiny_spec, tmp_path, flags, message):
    result = CliRunner().invoke(cli, ["run", str(tiny_spec()), "--out", str(tmp_path / "o"),
                                      "--cache", str(tmp_path / "c"), *flags])
    assert result.exit_code == advx.ExitCode.USAGE, result.output
    assert message in result.output
    assert not (tmp_path / "c" / "models").exists()


def test_executor_table_refuses_unknown_parameters(registry):
    text = TINY_SPEC.format(extra="") + '\n[executor]\nname = "ray"\nworkers = 0\n'
    with pytest.raises(advx.UsageError, match=r"\[executor\].*workers"):
        parse_spec(text, registry)


def recording_progress(log):
    """A progress factory noting ``(description, total)`` and each ``(n, status)``."""
    @contextlib.contextmanager
    def progress(description, total):
        calls = []
        log.append((description, total, calls))
        yield lambda n=1, status=None: calls.append((n, status))

    return progress


def test_models_train_through_a_prefetching_executor(registry, local, tmp_path):
    Recording.trained.clear()
    log = []
    text = TINY_SPEC.format(extra="") + '\n[executor]\nname = "test-recording"\n'
    report = execute(parse_spec(text, registry), registry, tmp_path / "out", device="cpu",
                     cache=tmp_path / "cache", progress=recording_progress(log))
    assert Recording.trained == [["blog-cnn"]]  # before any set, through Executor.train
    [model], [reference] = report["models"], local[1]["models"]
    assert model["source"] == "trained"
    assert model["weights_digest"] == reference["weights_digest"]
    [path] = (tmp_path / "cache" / "models").glob("*.h5")
    with h5py.File(path, "r") as f:
        metadata = json.loads(f.attrs["metadata"])
    assert metadata["trained_by"] == {"worker": "local", "device": "cpu"}
    [training] = [entry for entry in log if entry[0] == "train 1 model"]
    assert training[1:] == (1, [(1, "blog-cnn on local")])
    again = execute(parse_spec(text, registry), registry, tmp_path / "again", device="cpu",
                    cache=tmp_path / "cache")
    assert Recording.trained == [["blog-cnn"]]  # cached: nothing more to train
    assert again["models"][0]["source"] == "cache"


def test_progress_counts_units_and_samples(registry, local, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(local[0] / "models", cache / "models")
    log = []
    text = TINY_SPEC.format(extra="") + '\n[executor]\nname = "test-recording"\n'
    execute(parse_spec(text, registry), registry, tmp_path / "out", device="cpu", cache=cache,
            progress=recording_progress(log))
    [(description, total, calls)] = [e for e in log if e[0] == "4 adversarial sets"]
    assert total == 4 * 64 and sum(n for n, _ in calls) == total  # samples
    statuses = [status for _, status in calls if status is not None]
    assert statuses[0] == "0/8 units"
    assert statuses[1:] == [f"{k}/8 units, 1 worker" for k in range(1, 9)]


def test_local_shards_record_their_worker_and_device(local):
    for path in sets_dir(local[0]).glob("*.h5"):
        with h5py.File(path, "r") as f:
            units = json.loads(f.attrs["provenance"])["units"]
        assert [(u["start"], u["stop"]) for u in units] == [(0, 32), (32, 64)]
        assert all(u["worker"] == "local" and u["device"] == "cpu" for u in units)


@pytest.mark.parametrize("value", [1.5, -1, -0.5, 65, True, "1", float("nan")])
def test_gpus_per_worker_refuses_what_ray_cannot_reserve(registry, value):
    with pytest.raises(advx.UsageError, match=r"gpus_per_worker must be 0 \(workers on CPUs\), "
                                              r"a fraction in \(0, 1\].*or a whole number"):
        registry.create("executors", "ray", gpus_per_worker=value)


@pytest.mark.parametrize("value", [0, 0.25, 0.5, 1, 2, 8.0])
def test_gpus_per_worker_takes_fractions_and_whole_gpus(registry, value):
    assert registry.create("executors", "ray", gpus_per_worker=value).gpus_per_worker == value


def test_gpus_per_worker_exits_2_and_needs_the_ray_executor(tiny_spec, tmp_path):
    for table, message in [('name = "ray"\ngpus_per_worker = 1.5', "gpus_per_worker must be"),
                           ('name = "local"\ngpus_per_worker = 1', "no parameter gpus_per_worker")]:
        spec = tiny_spec(extra="", text=TINY_SPEC.format(extra="") + f"\n[executor]\n{table}\n")
        result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(tmp_path / "o"),
                                          "--cache", str(tmp_path / "c")])
        assert result.exit_code == advx.ExitCode.USAGE, result.output
        assert message in result.output
    assert not (tmp_path / "c" / "models").exists()


def test_ray_workers_take_the_runs_device_type(registry):
    cpu_workers = registry.create("executors", "ray")
    cpu_workers.check_device(torch.device("cpu"))
    with pytest.raises(advx.UsageError, match="computes on cuda.*gpus_per_worker"):
        cpu_workers.check_device(torch.device("cuda"))
    gpu_workers = registry.create("executors", "ray", gpus_per_worker=0.5)
    gpu_workers.check_device(torch.device("cuda", 1))
    with pytest.raises(advx.UsageError, match="gpus_per_worker = 0.5 puts the ray workers on "
                                              "GPUs, but the run computes on cpu"):
        gpu_workers.check_device(torch.device("cpu"))
