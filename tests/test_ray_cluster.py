"""The ray executor on a local multi-node cluster (``ray.cluster_utils.Cluster``): a node
removed while its actor computes a shard, and the run completes on the surviving nodes with
the report of a local run.

Runs only where Ray is installed; its own Ray cluster (a head and two worker nodes of one CPU
each), so it lives apart from tests/test_ray_executor.py's instance.
"""

import json
import threading
import time

import h5py
import pytest
from advx.host.pluginmanager import add_plugin, load_plugins
from advx.host.registry import Registry
from advx.run.execute import execute
from advx.run.spec import parse_spec
from advx.store.format import sets_dir

from . import ray_plugins
from .conftest import TINY_SPEC
from .test_ray_executor import comparable

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

SAFETY = 120  # seconds: bounds a hung run or barrier only


@pytest.fixture(scope="module")
def registry():
    loaded = load_plugins()
    add_plugin(loaded, ray_plugins, "ray-test-plugins")
    return Registry(loaded)


@pytest.fixture(scope="module")
def cluster():
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
    cluster.wait_for_nodes()
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def started_on(folder):
    """Ray node ids of the shards that started (``test-hold`` notes each call)."""
    return {path.name.split("-")[1] for path in folder.glob("started-*")}


def test_a_removed_node_s_shards_complete_on_the_others(cluster, registry, tmp_path):
    cluster, workers = cluster
    folder = tmp_path / "barrier"
    folder.mkdir()
    text = TINY_SPEC.format(extra="").replace("n_test = 64", "n_test = 128")
    attack = f'[[attacks]]\nname = "test-hold"\nnorm = "linf"\neps = 0.1\nfolder = "{folder}"\n'
    text = text[:text.index("[[attacks]]")] + attack + text[text.index("[protocol]"):]
    spec = parse_spec(text, registry)
    (folder / "release").touch()  # the local reference run passes the barrier at once
    local = execute(spec, registry, tmp_path / "local", device="cpu", cache=tmp_path / "lc")
    for path in folder.iterdir():
        path.unlink()
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    for path in (tmp_path / "lc" / "models").iterdir():
        (cache / "models" / path.name).write_bytes(path.read_bytes())
    executor = registry.create("executors", "ray", workers=2)
    outcome = {}

    def run():
        try:
            outcome["report"] = execute(spec, registry, tmp_path / "out", device="cpu",
                                        cache=cache, executor=executor)
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    by_id = {node.node_id: node for node in workers}
    deadline = time.monotonic() + SAFETY
    while not started_on(folder) & set(by_id):  # a shard held on a worker node
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.01)
    [victim] = sorted(started_on(folder) & set(by_id))[:1]
    cluster.remove_node(by_id[victim])
    (folder / "release").touch()
    thread.join(SAFETY)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    assert comparable(outcome["report"]) == comparable(local)
    assert {r["cache"] for r in outcome["report"]["results"]} == {"computed"}
    assert len(list(folder.glob("started-*"))) > 4  # four shards, and the victim's again
    [path] = sets_dir(cache).glob("*.h5")
    with h5py.File(path, "r") as f:
        units = json.loads(f.attrs["provenance"])["units"]
    assert len(units) == 4 and not any(u["worker"].startswith(victim[:8]) for u in units)
