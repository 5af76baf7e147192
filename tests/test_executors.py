"""Executors without Ray: what the driver hands an executor (only what the store lacks, every
set of the protocol at once when the executor prefetches), the [executor] table, the flags."""

import shutil
from typing import ClassVar

import advx
import attrs
import pytest
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

    def run(self, units):
        Recording.calls.append([(u.work.key, u.start, u.stop) for u in units])
        return super().run(units)


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
