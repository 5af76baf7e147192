"""A set is the same whatever computed it: any batch size, any split into shards (per-sample
random streams, batch-invariant passes), and older formats are reported and recomputed."""

import json
import shutil
from pathlib import Path

import advx
import attrs
import h5py
import numpy as np
import pytest
import torch
from advx.cli import cli
from advx.kernel.random import SampleStreams, derive, mix64, seeds_for
from advx.plugins.protocols import curve_search
from advx.run import pipeline
from advx.run.execute import execute
from advx.run.spec import parse_spec
from advx.store.format import FORMAT_VERSION, OutdatedSetError, read_set, sets_dir
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

ARCHIVES = Path(__file__).parent / "data" / "archives"

SPEC = """
[dataset]
name = "synthetic"
n_train = 256
n_test = 80

[[models]]
name = "blog-cnn"
train = {{ epochs = 2, batch_size = 64 }}

[[attacks]]
name = "pgd"
norm = "linf"
eps = 0.1
steps = 6
restarts = 2

[[attacks]]
name = "square"
norm = "l2"
eps = 1.0
queries = 60

[[attacks]]
name = "salt-and-pepper"
norm = "l0"
steps = 40

[protocol]
name = "robust-accuracy"
batch_size = {batch_size}
"""


def _run(tmp_path, name, batch_size, cache=None):
    registry = advx.get_registry()
    spec = parse_spec(SPEC.format(batch_size=batch_size), registry)
    cache = cache or tmp_path / f"cache-{name}"
    report = execute(spec, registry, tmp_path / name, device="cpu", cache=cache)
    return report, cache


def _sets(report, cache):
    return {r["set_key"]: read_set(sets_dir(cache) / f"{r['set_key']}.h5").arrays
            for r in report["results"]}


@pytest.fixture(scope="module")
def by_batch(tmp_path_factory):
    """The sets of one spec run with batches of 64 on one thread and of 7 on four (the
    machine's matrix products split rows among threads: the sets must not notice)."""
    tmp_path = tmp_path_factory.mktemp("invariance")
    runs, threads = {}, torch.get_num_threads()
    try:
        for size, count in ((64, 1), (7, 4)):
            torch.set_num_threads(count)
            cache = tmp_path / f"cache-b{size}"
            if runs:  # the same trained weights (training itself is not thread-invariant)
                shutil.copytree(runs[64][1] / "models", cache / "models")
            runs[size] = _run(tmp_path, f"b{size}", size, cache)
    finally:
        torch.set_num_threads(threads)
    return runs


def test_sets_are_bit_identical_for_any_batch_size(by_batch):
    (big, big_cache), (small, small_cache) = by_batch[64], by_batch[7]
    assert [r["set_key"] for r in big["results"]] == [r["set_key"] for r in small["results"]]
    big_sets, small_sets = _sets(big, big_cache), _sets(small, small_cache)
    for key, arrays in big_sets.items():
        for name, array in arrays.items():
            assert array.tobytes() == small_sets[key][name].tobytes(), (key[:12], name)
    assert sum(r["robust_accuracy"] < r["n"] for r in big["results"])  # attacks did something


def test_curve_sweeps_are_bit_identical_for_any_batch_size(tmp_path, by_batch):
    """The guided search's pilot comes from the whole set and each probe is seeded per sample,
    so a sweep does not depend on the batch size either."""
    registry = advx.get_registry()
    text = SPEC.format(batch_size="{size}").replace('name = "robust-accuracy"', 'name = "curve"')
    text = text.replace("eps = 0.1\nsteps = 6\nrestarts = 2", "eps = [0.05, 0.1, 0.15, 0.2, 0.3]"
                        "\nsteps = 5")
    sets = []
    for size in (64, 7):
        cache = tmp_path / f"cache{size}"
        shutil.copytree(by_batch[64][1] / "models", cache / "models")
        spec = parse_spec(text.replace("{size}", str(size)), registry)
        spec = attrs.evolve(spec, attacks=spec.attacks[:1])
        report = execute(spec, registry, tmp_path / f"c{size}", device="cpu", cache=cache)
        (curve, _) = report["curves"]
        assert curve["method"] == "guided bisection"
        correct = round(report["clean_accuracy"]["blog-cnn"] * report["dataset"]["n"])
        assert correct >= 2 * curve_search.PILOT  # enough for a pilot: the guide is used
        sets.append(read_set(sets_dir(cache) / f"{curve['set_key']}.h5").arrays)
    for name, array in sets[0].items():
        assert array.tobytes() == sets[1][name].tobytes(), name


def test_two_shards_merged_give_the_same_set(by_batch, tmp_path, monkeypatch):
    """A run killed after its first shard of 30 rows, resumed with batches of 17: the merged
    set equals the one computed whole."""
    (big, big_cache) = by_batch[64]
    cache = tmp_path / "cache"
    shutil.copytree(big_cache / "models", cache / "models")
    compute, calls = pipeline.AttackOnce.compute, []

    def killed_after_one_shard(self, job, start, stop, state):
        calls.append((start, stop))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return compute(self, job, start, stop, state)

    monkeypatch.setattr(pipeline.AttackOnce, "compute", killed_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "killed", 30, cache)
    monkeypatch.setattr(pipeline.AttackOnce, "compute", compute)
    resumed, _ = _run(tmp_path, "resumed", 17, cache)
    assert resumed["results"][0]["cache"] == "resumed"
    first = read_set(sets_dir(cache) / f"{resumed['results'][0]['set_key']}.h5")
    assert first.shards["start"].tolist() == [0, 30, 47, 64]
    merged, whole = _sets(resumed, cache), _sets(big, big_cache)
    for key, arrays in whole.items():
        for name, array in arrays.items():
            assert array.tobytes() == merged[key][name].tobytes(), (key[:12], name)


def test_an_older_format_is_listed_as_such_and_recomputed(tmp_path):
    (archived,) = (ARCHIVES / "v1").glob("*.h5")
    directory = sets_dir(tmp_path)
    directory.mkdir(parents=True)
    shutil.copy(archived, directory / archived.name)
    with h5py.File(directory / archived.name, "r") as f:
        assert int(f.attrs["format_version"]) == 1 < FORMAT_VERSION
    listing = json.loads(CliRunner().invoke(cli, ["cache", "ls", "--cache", str(tmp_path),
                                                  "--json"]).output)
    assert [(e["status"], e["key"]) for e in listing] == [("outdated", archived.stem)]
    assert "an older format (version 1" in listing[0]["problem"]
    with pytest.raises(OutdatedSetError, match="older format"):
        read_set(directory / archived.name)
    # a request for that key recomputes the set and replaces the old file
    from advx.store.obtain import obtain_set

    results = {"x_adv": np.zeros((6, 1, 4, 4), np.float32), "success": np.zeros(6, bool),
               "distance": np.zeros(6, np.float32), "pred": np.zeros(6, np.int64),
               "queries": np.zeros(6, np.int64)}
    inputs = {"y": np.arange(6), "indices": np.arange(6), "targets": np.full(6, -1)}
    obtained = obtain_set(tmp_path, archived.stem, inputs=inputs, batch_size=3, provenance={},
                          layout={k: (v.dtype, v.shape[1:]) for k, v in results.items()},
                          compute_rows=lambda a, b, state: {k: v[a:b] for k, v in
                                                            results.items()})
    assert obtained.origin == "computed"
    with h5py.File(directory / archived.name, "r") as f:
        assert int(f.attrs["format_version"]) == FORMAT_VERSION


# -- the per-sample streams ------------------------------------------------------------

_MASK = (1 << 64) - 1


def _reference_mix(z):
    """SplitMix64's output function in Python integers (mod 2**64): the tensor version must
    agree on any device, which it does only if int64 multiplication wraps."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


@given(st.lists(st.integers(0, _MASK), min_size=1, max_size=20))
def test_mix64_equals_the_reference(values):
    signed = torch.tensor([v - (1 << 64) if v >= 1 << 63 else v for v in values])
    assert [int(v) & _MASK for v in mix64(signed)] == [_reference_mix(v) for v in values]


def _reference_hash32(z):
    z &= 0xFFFFFFFF
    z ^= z >> 16
    z = (z * 0x7FEB352D) & 0xFFFFFFFF
    z ^= z >> 15
    z = (z * 0x846CA68B) & 0xFFFFFFFF
    return z ^ (z >> 16)


def _reference_words(seed, draw, count):
    """Draw number ``draw`` of the stream of ``seed``, in Python integers."""
    key = _reference_mix((seed + (draw + 1) * 0x9E3779B97F4A7C15) & _MASK)
    low, high = key & 0xFFFFFFFF, key >> 32
    return [_reference_hash32(_reference_hash32((low + j * 0x9E3779B9) & 0xFFFFFFFF) ^ high)
            for j in range(count)]


@given(st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=8), st.integers(1, 40))
def test_the_streams_equal_the_reference_generator(seeds, count):
    """The tensor code (int64 keys, int32 words, modular narrowing) computes exactly the
    generator the docstring describes, whatever the device's integer quirks."""
    streams = SampleStreams(torch.tensor(seeds))
    for draw in range(3):
        words = streams.words(count)
        expected = [[_reference_words(s, draw, count)[j] for j in range(count)] for s in seeds]
        assert [[w & 0xFFFFFFFF for w in row] for row in words.tolist()] == expected


@given(st.integers(0, 2**62), st.integers(2, 40), st.data())
def test_a_samples_draws_depend_on_its_own_stream_alone(seed, n, data):
    """Draws for a subset of the samples equal the same rows of draws for all of them, and
    earlier draws of other samples change nothing."""
    index = torch.tensor(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1))))
    whole, part = SampleStreams.from_seed(seed, n), SampleStreams(seeds_for(seed, n)[index])
    whole.select(index[:1]).rand(3)  # another draw of one of them ...
    part.select(torch.tensor([0])).rand(3)  # ... is a draw of that sample's stream in both
    whole.rand(2)  # all samples draw: the subset draws too
    part.rand(2)
    assert torch.equal(whole.select(index).randn(5), part.randn(5))
    assert torch.equal(whole.select(index).randint(0, 7, 4), part.randint(0, 7, 4))


def test_streams_are_uniform_and_uncorrelated():
    streams = SampleStreams.from_seed(0, 4000)
    u, v = streams.rand(1).squeeze(1).double(), streams.rand(1).squeeze(1).double()
    assert abs(float(u.mean()) - 0.5) < 0.02 and abs(float(u.var()) - 1 / 12) < 0.005
    assert abs(float(torch.corrcoef(torch.stack([u, v]))[0, 1])) < 0.05
    neighbours = torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1]
    assert abs(float(neighbours)) < 0.05  # adjacent samples' streams are independent
    normal = SampleStreams.from_seed(1, 2000).randn(10).double()
    assert abs(float(normal.mean())) < 0.02 and abs(float(normal.std()) - 1) < 0.02
    counts = torch.bincount(SampleStreams.from_seed(2, 1000).randint(0, 5, 20).flatten())
    assert int(counts.min()) > 3600 and int(counts.max()) < 4400
    assert not torch.equal(derive(torch.tensor([1]), 2), derive(torch.tensor([2]), 1))
