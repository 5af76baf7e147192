"""A full disk or an unwritable cache, at any moment of a run: one line, exit 2, the cache
consistent, and the next run (with space) resumes to the report of an uninterrupted run.

Every byte advx writes into the cache goes through :func:`advx.store.atomic.write_at` (HDF5
never writes on disk: see advx.store.h5image), so a disk with a byte budget is injected there:
it writes what fits, then fails with the errno a real disk gives.
"""

import errno
import json
import os
import signal
import subprocess
import sys

import pytest
from advx.cli import cli
from advx.store import atomic, rows
from click.testing import CliRunner

SPEC = """
title = "disk"

[dataset]
name = "synthetic"
n_train = 64
n_test = 32

[[models]]
name = "blog-cnn"
train = { epochs = 1, batch_size = 32 }

[[attacks]]
name = "fgsm"
norm = "linf"
eps = [0.1, 0.3]

[protocol]
name = "robust-accuracy"
batch_size = 8
"""
REAL_WRITE_AT = atomic.write_at


class Disk:
    """``free`` bytes of room (None: unlimited); records the size of every write."""

    def __init__(self, free=None, code=errno.ENOSPC):
        self.free, self.code, self.writes = free, code, []

    def __call__(self, fd, data, offset):
        view = memoryview(data).cast("B")
        room = len(view) if self.free is None else max(0, self.free - sum(self.writes))
        REAL_WRITE_AT(fd, view[:room], offset)
        self.writes.append(min(room, len(view)))
        if room < len(view):
            raise OSError(self.code, os.strerror(self.code))


def run(spec, out, cache, disk, monkeypatch):
    monkeypatch.setattr(atomic, "write_at", disk)
    monkeypatch.setattr(rows, "write_at", disk)
    return CliRunner().invoke(cli, ["run", str(spec), "--out", str(out), "--cache", str(cache),
                                    "--no-progress"], catch_exceptions=False)


def comparable(out):
    report = json.loads((out / "report.json").read_text())
    rows_ = [{k: v for k, v in r.items() if k not in ("seconds", "cache")}
             for r in report["results"]]
    return rows_, report["clean_accuracy"], report["worst_case"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its report and the sizes of its writes, in order."""
    base = tmp_path_factory.mktemp("reference")
    spec = base / "spec.toml"
    spec.write_text(SPEC)
    disk = Disk()
    with pytest.MonkeyPatch.context() as monkeypatch:
        result = run(spec, base / "out", base / "cache", disk, monkeypatch)
    assert result.exit_code == 0, result.output
    return spec, comparable(base / "out"), disk.writes


# write 0: the weights; 1: the first partial set; 2-11: the first shard (5 result arrays,
# then its record); the last: the last complete set
MOMENTS = {"weights": lambda w: 1000, "partial-set": lambda w: w[0] + 1000,
           "first-rows": lambda w: sum(w[:2]) + 100, "record": lambda w: sum(w[:8]) + 4,
           "finalising": lambda w: sum(w[:-1]) + 1000}


@pytest.mark.parametrize("moment", MOMENTS)
def test_disk_full_is_one_line_and_the_next_run_resumes(reference, tmp_path, monkeypatch,
                                                        moment):
    spec, expected, writes = reference
    cache = tmp_path / "cache"
    result = run(spec, tmp_path / "full", cache, Disk(MOMENTS[moment](writes)), monkeypatch)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write"), result.output
    assert "the disk is full" in lines[0] and "Traceback" not in result.output
    assert not list(cache.rglob(".*.tmp"))  # no temporary file left behind
    verify = CliRunner().invoke(cli, ["cache", "verify", "--cache", str(cache)])
    assert verify.exit_code == 0, verify.output

    again = run(spec, tmp_path / "again", cache, Disk(), monkeypatch)
    assert again.exit_code == 0, again.output
    assert comparable(tmp_path / "again") == expected
    report = json.loads((tmp_path / "again" / "report.json").read_text())
    if moment == "finalising":  # every shard of the last set was stored: nothing recomputed
        assert report["results"][-1]["cache"] == "resumed"


@pytest.mark.parametrize("code, why", [(errno.EROFS, "read-only"),
                                       (errno.EACCES, "permission denied"),
                                       (errno.EDQUOT, "quota")])
def test_unwritable_cache_is_one_line(reference, tmp_path, monkeypatch, code, why):
    spec = reference[0]
    result = run(spec, tmp_path / "out", tmp_path / "cache", Disk(0, code), monkeypatch)
    assert result.exit_code == 2 and why in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


# Runs advx in a process where the kernel refuses files over LIMIT bytes from the moment the
# weights are saved (before that, imports may write caches of their own).
LIMITED = """
import resource, signal, sys
from advx.store import weights_cache
from advx.cli import main

limit, save = int(sys.argv.pop(1)), weights_cache.save_weights

def limited_save(*args):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return save(*args)

weights_cache.save_weights = limited_save
main()
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_weights_refused_by_the_kernel_in_a_real_process(reference, tmp_path):
    """A real process, a real refusal: a file size limit (``ulimit -f``) makes the kernel
    refuse the weights file (EFBIG, as ENOSPC would): exit 2, one line, no traceback, no
    crash; then a run without the limit completes with the reference report."""
    spec, expected, writes = reference
    args = ["run", str(spec), "--cache", str(tmp_path / "cache"), "--no-progress", "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    failed = subprocess.run([sys.executable, "-c", LIMITED, str(writes[0] // 2), *args,
                             str(tmp_path / "a")], env=env, capture_output=True, text=True)
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.strip().count("\n") == 0, failed.stderr
    assert "larger than allowed" in failed.stderr, failed.stderr
    assert not list((tmp_path / "cache").rglob("*.h5"))
    subprocess.run([sys.executable, "-m", "advx.cli", *args, str(tmp_path / "b")], env=env,
                   check=True, capture_output=True)
    assert comparable(tmp_path / "b") == expected
