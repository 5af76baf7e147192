"""Runs and the adversarial-set cache: kill -9 and resume, warm reruns, `advx cache`, sharing."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from advx.cli import cli
from advx.store.format import read_set, sets_dir
from click.testing import CliRunner

from .conftest import TINY_SPEC

# 12 batches per set, so a kill lands part-way through one.
KILL_SPEC = TINY_SPEC.replace("n_test = 64", "n_test = 192").replace(
    "batch_size = 32", "batch_size = 16").replace("steps = 5", "steps = 10")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SAFETY = 900  # seconds: bounds a hung run only; the tests wait on progress and process exit


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def run_command(spec, out, cache):
    return [sys.executable, "-m", "advx.cli", "run", str(spec), "--out", str(out),
            "--cache", str(cache), "--no-progress"]


def comparable(report):
    """A report's results without what legitimately differs between runs (time, cache)."""
    rows = [{k: v for k, v in r.items() if k not in ("seconds", "cache")}
            for r in report["results"]]
    return rows, report["clean_accuracy"], report["worst_case"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of KILL_SPEC: its report, spec and cache (trained model inside)."""
    base = tmp_path_factory.mktemp("reference")
    spec = base / "spec.toml"
    spec.write_text(KILL_SPEC.format(extra=""))
    subprocess.run(run_command(spec, base / "out", base / "cache"), check=True, env=ENV,
                   capture_output=True)
    return spec, json.loads((base / "out" / "report.json").read_text()), base / "cache"


def recorded_batches(cache):
    """Complete sets, and completion records in partial sets not yet complete (read without
    waiting for locks)."""
    total = 0
    for path in sets_dir(cache).glob("*.partial.h5"):
        if path.with_name(path.name.replace(".partial", "")).exists():
            continue  # finished a moment ago; its partial file is about to go
        try:
            with h5py.File(path, "r", locking=False) as f:
                total += int(f["shards"]["done"][()].sum())
        except (OSError, KeyError):
            pass
    complete = len(list(sets_dir(cache).glob("*[0-9a-f].h5")))
    return complete, total


@pytest.mark.parametrize("kill_after", [(0, 1), (1, 4), (3, 11)],
                         ids=["first-batch", "second-set", "fourth-set-end"])
def test_killed_run_resumes_to_the_same_report(reference, tmp_path, kill_after):
    spec, expected, reference_cache = reference
    cache = tmp_path / "cache"
    shutil.copytree(reference_cache / "models", cache / "models")  # the model is trained
    process = subprocess.Popen(run_command(spec, tmp_path / "killed", cache), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sets, batches = kill_after
    deadline = time.monotonic() + SAFETY
    while process.poll() is None:  # wait for progress (or the run's end), not for a duration
        complete, recorded = recorded_batches(cache)
        if complete >= sets and recorded >= batches:
            break
        assert time.monotonic() < deadline, "the run made no progress in 15 minutes"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "report.json").exists()
    partial = {p.name: _records(p) for p in sets_dir(cache).glob("*.partial.h5")
               if not p.with_name(p.name.replace(".partial", "")).exists()}
    # The kill can land just after a set finished (the poll and the kill are not atomic);
    # only the first kill point, one batch into the first of 12, always leaves a partial set.
    assert partial or kill_after != (0, 1), "the kill should leave a partial set behind"

    subprocess.run(run_command(spec, tmp_path / "resumed", cache), check=True, env=ENV,
                   capture_output=True)
    report = json.loads((tmp_path / "resumed" / "report.json").read_text())
    assert comparable(report) == comparable(expected)
    origins = [(r["attack"], r["eps"], r["cache"]) for r in report["results"]]
    if partial:
        assert "resumed" in {o[-1] for o in origins}, origins
    for name, seconds in partial.items():  # stored shards were not recomputed
        stored = read_set(sets_dir(cache) / name.replace(".partial.h5", ".h5"))
        kept = dict(zip(stored.shards["start"].tolist(), stored.shards["seconds"].tolist()))
        assert all(kept[start] == value for start, value in seconds.items())
    unfinished = [p for p in sets_dir(cache).glob("*.partial.h5")
                  if not p.with_name(p.name.replace(".partial", "")).exists()]
    assert not unfinished  # (a partial beside its complete set is gc's to remove)
    assert invoke("cache", "verify", "--cache", cache).exit_code == 0


def _records(path):
    """start -> seconds of the shards a partial file records as done."""
    with h5py.File(path, "r", locking=False) as f:
        records = f["shards"]
        done = records["done"][()].astype(bool)
        return dict(zip(records["start"][()][done].tolist(),
                        records["seconds"][()][done].tolist()))


def _snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def test_warm_rerun_computes_and_writes_nothing(reference, tmp_path):
    spec, expected, reference_cache = reference
    cache = tmp_path / "cache"
    shutil.copytree(reference_cache, cache)
    before = _snapshot(cache)
    result = invoke("run", spec, "--out", tmp_path / "out", "--cache", cache, "--no-progress")
    assert result.exit_code == 0, result.output
    assert _snapshot(cache) == before
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {r["cache"] for r in report["results"]} == {"cache"}
    assert comparable(report) == comparable(expected)
    assert "| cache " in (tmp_path / "out" / "report.md").read_text()


def test_two_processes_sharing_a_cache(reference, tmp_path):
    spec, expected, reference_cache = reference
    cache = tmp_path / "cache"
    shutil.copytree(reference_cache / "models", cache / "models")
    processes = [subprocess.Popen(run_command(spec, tmp_path / f"out{i}", cache), env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i in range(2)]
    for p in processes:
        assert p.wait(SAFETY) == 0, p.stderr.read()
    reports = [json.loads((tmp_path / f"out{i}" / "report.json").read_text()) for i in range(2)]
    assert comparable(reports[0]) == comparable(reports[1]) == comparable(expected)
    assert invoke("cache", "verify", "--cache", cache).exit_code == 0
    assert len(list(sets_dir(cache).glob("*"))) == len(expected["results"])


# -- advx cache ----------------------------------------------------------------------------

@pytest.fixture
def cache_copy(reference, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(reference[2], cache)
    return cache, reference[1]


def test_cache_ls_lists_every_set(cache_copy):
    cache, report = cache_copy
    result = invoke("cache", "ls", "--cache", cache, "--json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.output)
    assert sorted(e["key"] for e in entries) == sorted(r["set_key"] for r in report["results"])
    for e in entries:
        assert e["status"] == "complete" and e["done"] == e["total"] == 192
        assert e["model"] == "blog-cnn" and e["attack"] in ("fgsm", "pgd")
        assert e["threat"].startswith("linf ") and e["size"] > 0 and e["created"]
    table = invoke("cache", "ls", "--cache", cache).output
    assert "done/total" in table and "192/192" in table


def test_cache_info_verify_rm_by_prefix(cache_copy):
    cache, report = cache_copy
    key = report["results"][0]["set_key"]
    info = json.loads(invoke("cache", "info", "--cache", cache, key[:8]).output)
    assert info["key"] == key
    provenance = info["files"][0]["provenance"]
    assert provenance["identity"]["attack"]["name"] == "fgsm"
    assert {"advx", "torch"} <= set(provenance["versions"]) and provenance["device"] == "cpu"
    path = sets_dir(cache) / f"{key}.h5"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    result = invoke("cache", "verify", "--cache", cache)
    assert result.exit_code == 1 and f"BAD  {key}.h5" in result.output
    assert invoke("cache", "rm", "--cache", cache, key[:10]).exit_code == 0
    assert not path.exists()
    assert invoke("cache", "verify", "--cache", cache).exit_code == 0


def test_cache_key_errors_exit_2(cache_copy):
    cache, _ = cache_copy
    assert invoke("cache", "info", "--cache", cache, "zzzz").exit_code == 2
    result = invoke("cache", "rm", "--cache", cache, "")
    assert result.exit_code == 2
    keys = sorted(p.name[:1] for p in sets_dir(cache).glob("*.h5"))
    shared = next((k for k in set(keys) if keys.count(k) > 1), None)
    if shared:  # an ambiguous prefix names the matches and asks for more
        result = invoke("cache", "info", "--cache", cache, shared)
        assert result.exit_code == 2 and "give more characters" in result.output


def test_cache_export_writes_npz_and_png(cache_copy, tmp_path):
    cache, report = cache_copy
    key = next(r["set_key"] for r in report["results"] if r["attack"] == "pgd")
    result = invoke("cache", "export", "--cache", cache, key[:12], tmp_path / "exp" / "set")
    assert result.exit_code == 0, result.output
    data = np.load(tmp_path / "exp" / "set.npz")
    stored = read_set(sets_dir(cache) / f"{key}.h5")
    assert np.array_equal(data["x_adv"], stored.arrays["x_adv"])
    assert data["x"].shape == data["x_adv"].shape
    assert np.abs(data["x_adv"] - data["x"]).max() <= 0.3 + 1e-6
    png = tmp_path / "exp" / "set.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 400 and image.shape[1] > 300 and image.std() > 0.05


def test_cache_gc_removes_outdated_and_junk(cache_copy):
    cache, report = cache_copy
    key = report["results"][0]["set_key"]
    with h5py.File(sets_dir(cache) / f"{key}.h5", "r+") as f:
        f.attrs["format_version"] = 0
    (sets_dir(cache) / "junk.h5").write_bytes(b"nope")
    (sets_dir(cache) / "stale.lock").write_bytes(b"")
    dry = invoke("cache", "gc", "--cache", cache, "--dry-run")
    assert "3 files to remove" in dry.output and (sets_dir(cache) / "junk.h5").exists()
    result = invoke("cache", "gc", "--cache", cache)
    assert result.exit_code == 0 and "3 files removed" in result.output
    assert len(list(sets_dir(cache).glob("*.h5"))) == len(report["results"]) - 1
    assert invoke("cache", "verify", "--cache", cache).exit_code == 0
