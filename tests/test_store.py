"""The adversarial-set store: exact round trips, stable keys, resume, corruption, locking."""

import json
import multiprocessing
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest
from advx.store.format import (
    CorruptSetError,
    arrays_digest,
    read_set,
    set_key,
    sets_dir,
)
from advx.store.lock import SetLock, is_locked
from advx.store.obtain import obtain_set, parts
from advx.store.writer import SetWriter, missing_ranges
from hypothesis import given
from hypothesis import strategies as st

IDENTITY = {
    "model": {"plugin": "blog-cnn", "weights_sha256": "ab" * 32},
    "defenses": [],
    "dataset": {"identity": {"name": "mnist", "sha256": "cd" * 32}, "split": "test",
                "indices": [0, 100]},
    "attack": {"plugin": "pgd", "params": {"steps": 40, "step_size": None, "restarts": 1}},
    "threat": {"norm": "linf", "eps": 0.3, "bounds": [0.0, 1.0], "targeted": False},
    "target": None,
    "seed": 0,
}


def make_results(n, shape, dtype, seed=0):
    """Deterministic per-row results, so any batch can be recomputed identically."""
    rng = np.random.default_rng(seed)
    return {"x_adv": rng.random((n, *shape)).astype(dtype),
            "success": rng.random(n) > 0.5,
            "distance": rng.random(n).astype(dtype),
            "pred": rng.integers(0, 10, n).astype(np.int64),
            "queries": rng.integers(0, 1000, n).astype(np.int64)}


def layout_of(results):
    return {name: (a.dtype, a.shape[1:]) for name, a in results.items()}


def inputs_for(n):
    return {"y": np.arange(n, dtype=np.int64) % 10, "indices": np.arange(n, dtype=np.int64),
            "targets": np.full(n, -1, dtype=np.int64)}


def obtain(root, results, batch_size, key="k" * 64, calls=None):
    n = len(results["pred"])

    def compute(start, stop, state):
        if calls is not None:
            calls.append(start)
        return {name: a[start:stop] for name, a in results.items()}

    return obtain_set(root, key, inputs=inputs_for(n), layout=layout_of(results),
                      batch_size=batch_size, provenance={"identity": {"note": "test"}},
                      compute_rows=compute)


# -- round trips and keys ------------------------------------------------------------------

@given(n=st.integers(0, 40), batch_size=st.integers(1, 17),
       shape=st.sampled_from([(1, 4, 4), (3, 5, 2), (7,), (2, 1, 3, 3)]),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]))
def test_round_trip_is_exact(tmp_path_factory, n, batch_size, shape, dtype):
    root = tmp_path_factory.mktemp("cache")
    results = make_results(n, shape, dtype)
    obtained = obtain(root, results, batch_size)
    assert obtained.origin == "computed"
    stored = read_set(obtained.stored.path)
    for name, array in results.items():
        assert stored.arrays[name].dtype == array.dtype
        assert np.array_equal(stored.arrays[name], array), name
    assert np.array_equal(stored.arrays["indices"], np.arange(n))
    assert stored.shards["start"].tolist() == list(range(0, n, batch_size))


def test_complete_file_is_chunked_and_compressed(tmp_path):
    stored = obtain(tmp_path, make_results(30, (1, 8, 8), np.float32), 10).stored
    with h5py.File(stored.path, "r") as f:
        assert f["x_adv"].compression == "gzip" and f["x_adv"].chunks is not None
        assert f.attrs["format"] == "advx-adversarial-set" and f.attrs["complete"]
        assert json.loads(f.attrs["provenance"])["identity"] == {"note": "test"}
        assert f["shards"]["stop"][()].tolist() == [10, 20, 30]


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path, value


def _changed(identity, path):
    copy = json.loads(json.dumps(identity))
    node = copy
    for part in path[:-1]:
        node = node[part]
    old = node[path[-1]]
    node[path[-1]] = (not old if isinstance(old, bool) else "other" if old is None
                      else old + 1 if isinstance(old, int | float) else old + "x")
    return copy


def test_key_is_sensitive_to_every_field():
    base = set_key(IDENTITY)
    paths = list(_leaves(IDENTITY))
    assert len(paths) >= 15
    for path, _ in paths:
        assert set_key(_changed(IDENTITY, path)) != base, path
    assert set_key({**IDENTITY, "defenses": ["binarize"]}) != base


def test_key_is_stable_across_processes():
    code = ("import json, sys; from advx.store.format import set_key; "
            "print(set_key(json.loads(sys.stdin.read())))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(IDENTITY),
                         capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "7"})
    assert out.stdout.strip() == set_key(IDENTITY)
    reordered = dict(reversed(list(IDENTITY.items())))
    assert set_key(reordered) == set_key(IDENTITY)


# -- resume and corruption -----------------------------------------------------------------

def _partial(root, results, batch_size, done):
    """A partial file with the batches in ``done`` written, as a killed run leaves it."""
    n = len(results["pred"])
    writer = SetWriter(sets_dir(root), "k" * 64, inputs_for(n), {"identity": {"note": "test"}})
    writer.open(layout_of(results))
    for index in done:
        start = index * batch_size
        stop = min(start + batch_size, n)
        writer.write_rows(start, stop, {k: a[start:stop] for k, a in results.items()},
                          seconds=1.5)
    writer.close()
    return writer.path


def test_resume_computes_only_missing_batches(tmp_path):
    results = make_results(50, (1, 4, 4), np.float32)
    _partial(tmp_path, results, 10, done=[0, 1, 3])
    calls = []
    obtained = obtain(tmp_path, results, 10, calls=calls)
    assert calls == [20, 40]
    assert obtained.origin == "resumed" and obtained.reused_batches == 3
    assert obtained.stored.shards["seconds"][[0, 1, 3]].tolist() == [1.5, 1.5, 1.5]
    assert np.array_equal(obtained.stored.arrays["x_adv"], results["x_adv"])
    assert not (sets_dir(tmp_path) / f"{'k' * 64}.partial.h5").exists()


def test_resume_with_another_batch_size_fills_the_gaps(tmp_path):
    """Shards of a killed run with batches of 10 are kept by a run with batches of 7, which
    computes only the rows no shard covers."""
    results = make_results(50, (1, 4, 4), np.float32)
    _partial(tmp_path, results, 10, done=[0, 1, 3])
    calls = []
    obtained = obtain(tmp_path, results, 7, calls=calls)
    assert calls == [20, 27, 40, 47]
    assert obtained.stored.shards["start"].tolist() == [0, 10, 20, 27, 30, 40, 47]
    for name, array in results.items():
        assert np.array_equal(obtained.stored.arrays[name], array), name


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 10)), max_size=6),
       st.integers(1, 12))
def test_missing_ranges_and_parts_cover_exactly_the_gaps(shards, batch_size):
    n = 35
    covered, disjoint = np.zeros(n, bool), []
    for start, size in shards:
        stop = min(start + size, n)
        if start < stop and not covered[start:stop].any():
            covered[start:stop] = True
            disjoint.append((start, stop))
    gaps = missing_ranges(sorted(disjoint), n)
    filled = covered.copy()
    for start, stop in parts(gaps, batch_size):
        assert 0 < stop - start <= batch_size and not filled[start:stop].any()
        filled[start:stop] = True
    assert filled.all()


def test_torn_batch_is_recomputed_not_trusted(tmp_path):
    results = make_results(30, (1, 4, 4), np.float32)
    path = _partial(tmp_path, results, 10, done=[0, 1])
    with h5py.File(path, "r+") as f:  # data damaged after its completion record was written
        f["x_adv"][12] = 0.5
    calls = []
    obtained = obtain(tmp_path, results, 10, calls=calls)
    assert calls == [10, 20]
    assert np.array_equal(obtained.stored.arrays["x_adv"], results["x_adv"])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip-byte", "incomplete"])
def test_damaged_complete_file_is_detected_and_recomputed(tmp_path, damage):
    results = make_results(40, (1, 6, 6), np.float32)
    path = obtain(tmp_path, results, 10).stored.path
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not an hdf5 file" * 10)
    elif damage == "flip-byte":
        with h5py.File(path, "r+") as f:
            f["pred"][3] = f["pred"][3] + 1
    else:
        with h5py.File(path, "r+") as f:
            f.attrs["complete"] = False
    with pytest.raises(CorruptSetError):
        read_set(path)
    calls = []
    obtained = obtain(tmp_path, results, 10, calls=calls)
    assert obtained.origin == "computed" and calls == [0, 10, 20, 30]
    assert np.array_equal(read_set(path).arrays["pred"], results["pred"])


def test_unreadable_partial_file_is_discarded(tmp_path):
    results = make_results(20, (1, 4, 4), np.float32)
    directory = sets_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / f"{'k' * 64}.partial.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    calls = []
    obtain(tmp_path, results, 10, calls=calls)
    assert calls == [0, 10]


def test_cache_hit_writes_nothing(tmp_path):
    results = make_results(20, (1, 4, 4), np.float32)
    obtain(tmp_path, results, 10)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    calls = []
    obtained = obtain(tmp_path, results, 10, calls=calls)
    assert obtained.origin == "cache" and calls == []
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_digest_covers_content():
    results = make_results(10, (1, 2, 2), np.float32)
    changed = {**results, "distance": results["distance"].copy()}
    changed["distance"][0] += 1
    assert arrays_digest(results) != arrays_digest(changed)
    assert arrays_digest(results, 0, 5) != arrays_digest(results, 5, 10)


# -- concurrency ---------------------------------------------------------------------------

SAFETY = 600  # seconds: bounds a hang only; every wait below ends on progress


def _worker(root, log_path, barrier):
    results = make_results(30, (1, 4, 4), np.float32)
    calls = []

    def compute(start, stop, state):
        calls.append(start)
        return {name: a[start:stop] for name, a in results.items()}

    barrier.wait(SAFETY)  # all three start together, whatever their import took
    obtained = obtain_set(root, "c" * 64, inputs=inputs_for(30), layout=layout_of(results),
                          batch_size=10, provenance={"identity": {"note": "test"}},
                          compute_rows=compute)
    with open(log_path, "a") as log:
        log.write(json.dumps({"origin": obtained.origin, "calls": calls}) + "\n")


def test_concurrent_writers_compute_once_and_agree(tmp_path):
    context = multiprocessing.get_context("spawn")
    log = tmp_path / "log.jsonl"
    barrier = context.Barrier(3)
    workers = [context.Process(target=_worker, args=(tmp_path, log, barrier)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(SAFETY)
        if w.exitcode is None:
            w.kill()
        assert w.exitcode == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(e["origin"] for e in entries) == ["cache", "cache", "computed"]
    assert sum(len(e["calls"]) for e in entries) == 3
    stored = read_set(sets_dir(tmp_path) / f"{'c' * 64}.h5")
    assert np.array_equal(stored.arrays["x_adv"], make_results(30, (1, 4, 4), np.float32)["x_adv"])
    assert sorted(p.name for p in sets_dir(tmp_path).iterdir()) == [f"{'c' * 64}.h5"]


def test_lock_is_exclusive_and_removed(tmp_path):
    """The holder lets go only when told; the waiter must get the lock after that, never
    before (an order of events, not a duration)."""
    path = tmp_path / "x.lock"
    code = ("import sys; from advx.store.lock import SetLock\n"
            "with SetLock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert is_locked(path)
    waiting, told, acquired = threading.Event(), threading.Event(), []

    def wait_for_lock():
        with SetLock(path, on_wait=waiting.set):
            acquired.append(told.is_set())

    waiter = threading.Thread(target=wait_for_lock)
    waiter.start()
    assert waiting.wait(SAFETY)  # it found the lock held and waits
    told.set()
    holder.stdin.write("release\n")
    holder.stdin.flush()
    waiter.join(SAFETY)
    assert holder.wait(SAFETY) == 0
    assert acquired == [True]  # it got the lock only after the holder was told to let go
    assert not path.exists()
