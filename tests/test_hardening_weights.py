"""Weights are verified: a digest on every advx weights file, declared sizes checked before
any tensor is read, damaged cached weights retrained, damaged checkpoints refused in one line."""

import pathlib
import warnings

import advx
import h5py
import pytest
import torch
from advx.cli import cli
from advx.kernel.errors import UsageError
from advx.store import weights
from advx.store.weights import DamagedWeightsError, load_weights, save_weights, weights_digest
from advx.store.weights_cache import cached_or_trained
from advx.train.builder import Builder
from click.testing import CliRunner
from torch import nn

TINY = {"epochs": 1, "batch_size": 64}


@pytest.fixture(scope="module")
def synthetic():
    return advx.get_dataset("synthetic", n_train=128, n_test=64)


def flip_bytes(path, tensor_index=0, count=4):
    """Flip ``count`` bytes of one stored tensor, in place (the HDF5 structure intact)."""
    with h5py.File(path, "r") as f:
        offset = f["state_dict"][str(tensor_index)].id.get_offset()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        data = bytearray(handle.read(count))
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in data))


def outputs(module, shape):
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return module(x)


def test_flipped_bytes_in_cached_weights_are_reported_and_retrained(synthetic, tmp_path):
    first = advx.get_model("blog-cnn", synthetic, recipe=TINY, cache=tmp_path)
    path = pathlib.Path(first.advx_metadata["path"])
    flip_bytes(path)
    with pytest.warns(UserWarning, match=f"retraining: cached weights '{path}'.*digest"):
        again = advx.get_model("blog-cnn", synthetic, recipe=TINY, cache=tmp_path)
    assert again.advx_metadata["source"] == "trained"
    shape = synthetic.info.shape
    assert torch.equal(outputs(first, shape), outputs(again, shape))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert advx.get_model("blog-cnn", synthetic, recipe=TINY,
                              cache=tmp_path).advx_metadata["source"] == "cache"


def test_flipped_bytes_in_a_checkpoint_stop_the_run(tmp_path):
    module = nn.Sequential(nn.Linear(3, 2))
    save_weights(module, tmp_path / "w.h5", {})
    flip_bytes(tmp_path / "w.h5")
    twin = nn.Sequential(nn.Linear(3, 2))
    before = weights_digest(twin)
    with pytest.raises(DamagedWeightsError, match=r"w\.h5.*do not match their digest"):
        load_weights(twin, tmp_path / "w.h5")
    assert weights_digest(twin) == before  # the module was not changed


def test_damaged_checkpoint_given_by_path_exits_2_in_one_line(synthetic, tmp_path):
    module = advx.get_model("blog-cnn", synthetic, train=False)
    save_weights(module, tmp_path / "ckpt.h5", {})
    flip_bytes(tmp_path / "ckpt.h5", tensor_index=2)
    spec = tmp_path / "spec.toml"
    spec.write_text(f"""
[dataset]
name = "synthetic"
n_train = 128
n_test = 64

[[models]]
name = "blog-cnn"
checkpoint = "{tmp_path / 'ckpt.h5'}"

[[attacks]]
name = "fgsm"
norm = "linf"
eps = 0.1
""")
    result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(tmp_path / "out"),
                                      "--cache", str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "ckpt.h5" in result.output
    assert "digest" in result.output and not (tmp_path / "out" / "report.json").exists()


def test_weights_without_digest_are_accepted_once_and_get_one(tmp_path):
    module = nn.Linear(3, 2)
    path = tmp_path / "models" / "k.h5"
    save_weights(module, path, {"note": 1})
    with h5py.File(path, "r+") as f:
        del f.attrs["digest"]  # as written by an advx before digests

    def train(module):
        raise AssertionError("retrained a file without digest")

    with pytest.warns(UserWarning, match="no digest.*accepted once"):
        twin, metadata, origin = cached_or_trained(nn.Linear(3, 2), path, train)
    assert origin == "cache" and metadata == {"note": 1}
    assert weights_digest(twin) == weights_digest(module)
    with h5py.File(path, "r") as f:
        assert f.attrs["digest"] == weights_digest(module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_or_trained(nn.Linear(3, 2), path, train)


def test_damaged_weights_of_a_defense_module_are_retrained(synthetic, tmp_path):
    builder = Builder(dataset=synthetic, registry=advx.get_registry(), cache_root=tmp_path)
    trained = []

    def train(module):
        trained.append(1)
        with torch.no_grad():
            module.weight.fill_(0.5)

    builder.cached({"test": 1}, lambda: nn.Linear(2, 2), train)
    path = next((tmp_path / "models").glob("*.h5"))
    flip_bytes(path)
    with pytest.warns(UserWarning, match="retraining"):
        module = builder.cached({"test": 1}, lambda: nn.Linear(2, 2), train)
    assert len(trained) == 2 and torch.all(module.weight == 0.5)


class Neighbours(nn.Module):
    """A module with a resizable buffer (its size comes from the data)."""

    advx_resizable = ("images",)

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.register_buffer("images", torch.zeros(3, 2))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        incoming = state_dict.get(prefix + "images")
        if incoming is not None:
            self.images = torch.empty_like(incoming)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def declare(path, index, shape, dtype="float32"):
    """Replace tensor ``index`` of the weights file by an unwritten dataset of ``shape``."""
    with h5py.File(path, "r+") as f:
        group = f["state_dict"]
        name, torch_dtype = group[str(index)].attrs["name"], group[str(index)].attrs["dtype"]
        del group[str(index)]
        dataset = group.create_dataset(str(index), shape=shape, dtype=dtype, chunks=True)
        dataset.attrs["name"], dataset.attrs["dtype"] = name, torch_dtype


@pytest.mark.parametrize("index, shape, dtype, problem", [
    (1, (2**20, 2**20), "float32", r"wrong shape: linear\.weight \(1048576, 1048576\)"),
    (0, (2**40, 2), "float32", r"larger than the file: images"),
    (0, (2**20, 2), "float32", r"larger than the file: images"),
    (2, (2,), "float64", r"stored as float64"),
])
def test_declared_sizes_are_checked_before_any_tensor_is_read(tmp_path, monkeypatch, index,
                                                              shape, dtype, problem):
    path = tmp_path / "w.h5"
    save_weights(Neighbours(), path, {})
    declare(path, index, shape, dtype)
    assert path.stat().st_size < 100_000

    def no_read(dataset):
        raise AssertionError("tensor data read before the declared sizes were checked")

    monkeypatch.setattr(weights, "_tensor", no_read)
    with pytest.raises(UsageError, match=problem):
        load_weights(Neighbours(), path)


def test_resizable_buffer_of_another_size_loads(tmp_path):
    module = Neighbours()
    module.images = torch.arange(10.0).reshape(5, 2)
    save_weights(module, tmp_path / "w.h5", {})
    twin = Neighbours()
    load_weights(twin, tmp_path / "w.h5")
    assert torch.equal(twin.images, module.images)


class Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


@pytest.mark.parametrize("content", ["payload", "garbage", "legacy-garbage"])
def test_checkpoint_errors_are_one_line_without_weights_only_advice(tmp_path, content):
    path = tmp_path / "w.pt"
    if content == "payload":
        torch.save({"weight": torch.zeros(2, 3), "x": Payload()}, path)
    elif content == "garbage":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        path.write_bytes(b"\x80\x02 not a pickle")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UsageError) as error:
            load_weights(nn.Linear(3, 2, bias=False), path)
    message = str(error.value)
    assert "\n" not in message and "weights_only" not in message and "w.pt" in message
    assert "never pickled objects" in message and not caught
