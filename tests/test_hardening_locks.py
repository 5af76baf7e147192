"""`advx cache rm` and `advx cache gc` never break a running computation, and concurrent runs
train a model once. Threads stand for processes: ``flock`` locks taken through separate file
descriptors exclude each other within one process too. Every wait is on progress (events);
SAFETY only bounds a hang and cannot fail a slow machine."""

import logging
import threading

import numpy as np
import torch
from advx.cli import cli
from advx.store.format import sets_dir
from advx.store.obtain import obtain_set
from advx.store.weights_cache import cached_or_trained, lock_path
from click.testing import CliRunner
from torch import nn

SAFETY = 600  # seconds; only a hang gets there
KEY = "e" * 64


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def results(n):
    rng = np.random.default_rng(0)
    return {"x_adv": rng.random((n, 1, 2, 2)).astype(np.float32), "success": rng.random(n) > .5,
            "distance": rng.random(n).astype(np.float32),
            "pred": rng.integers(0, 10, n).astype(np.int64),
            "queries": rng.integers(0, 9, n).astype(np.int64)}


def compute_in_thread(root, started, release, outcome):
    """Compute the set KEY of 20 rows in batches of 5; after the first batch is stored, set
    ``started`` and wait for ``release``."""
    data = results(20)

    def compute(start, stop, state):
        if start > 0:
            started.set()
            assert release.wait(SAFETY)
        return {name: a[start:stop] for name, a in data.items()}

    def target():
        outcome.append(obtain_set(
            root, KEY, inputs={"y": np.zeros(20, np.int64), "indices": np.arange(20),
                               "targets": np.full(20, -1)},
            layout={name: (a.dtype, a.shape[1:]) for name, a in data.items()},
            batch_size=5, provenance={"identity": {}}, compute_rows=compute))

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_rm_and_gc_leave_a_set_being_computed_alone(tmp_path):
    started, release, outcome = threading.Event(), threading.Event(), []
    thread = compute_in_thread(tmp_path, started, release, outcome)
    try:
        assert started.wait(SAFETY)
        directory = sets_dir(tmp_path)
        leftover = directory / f".{KEY}.h5.0123.tmp"  # as a finishing writer leaves it
        leftover.write_bytes(b"")
        (directory / f"{'f' * 64}.lock").write_bytes(b"")  # a killed run's: stale
        rm = invoke("cache", "rm", "--cache", tmp_path, KEY[:8])
        assert rm.exit_code == 2 and "is in use" in rm.output, rm.output
        assert rm.output.count("\n") == 1
        gc = invoke("cache", "gc", "--cache", tmp_path)
        assert gc.exit_code == 0, gc.output
        assert f"kept {leftover.name}" in gc.output and "1 file removed" in gc.output
        assert leftover.exists() and (directory / f"{KEY}.partial.h5").exists()
        assert (directory / f"{KEY}.lock").exists()
    finally:
        release.set()
        thread.join(SAFETY)
    assert outcome and outcome[0].origin == "computed"
    assert invoke("cache", "verify", "--cache", tmp_path).exit_code == 0
    assert invoke("cache", "rm", "--cache", tmp_path, KEY[:8]).exit_code == 0
    assert not list(directory.glob(f"{KEY}*"))


class Signal(logging.Handler):
    """Sets ``event`` when the advx logger emits a message containing ``text``."""

    def __init__(self, text, event):
        super().__init__()
        self.text, self.event = text, event

    def emit(self, record):
        if self.text in record.getMessage():
            self.event.set()


def test_concurrent_runs_train_a_model_once(tmp_path):
    path = tmp_path / "models" / "k.h5"
    training, waiting, release = threading.Event(), threading.Event(), threading.Event()
    trained, outcomes = [], []

    def train(module):
        trained.append(threading.current_thread().name)
        training.set()
        assert release.wait(SAFETY)
        with torch.no_grad():
            module.weight.fill_(0.25)
        return module, {"trained_by": threading.current_thread().name}

    def run():
        outcomes.append(cached_or_trained(nn.Linear(2, 2), path, train, what="linear"))

    handler = Signal("waiting for another process training linear", waiting)
    logging.getLogger("advx").addHandler(handler)
    first, second = threading.Thread(target=run), threading.Thread(target=run)
    try:
        first.start()
        assert training.wait(SAFETY)
        assert lock_path(path).exists()
        second.start()
        assert waiting.wait(SAFETY)  # the second run waits for the first one's training
    finally:
        release.set()
        first.join(SAFETY)
        second.join(SAFETY)
        logging.getLogger("advx").removeHandler(handler)
    assert trained == [first.name]
    assert sorted(origin for _, _, origin in outcomes) == ["cache", "trained"]
    assert all(torch.all(module.weight == 0.25) for module, _, _ in outcomes)
    assert all(metadata == {"trained_by": first.name} for _, metadata, _ in outcomes)
    assert not lock_path(path).exists()
