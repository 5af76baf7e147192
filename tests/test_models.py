"""Built-in model plugins, the safe weight store and the model zoo (advx.get_model)."""

import copy
import os
import pathlib
import stat
import tempfile
import warnings

import advx
import attrs
import h5py
import pytest
import torch
from advx.kernel.errors import ParameterError, UnknownPluginError, UsageError
from advx.kernel.recipe import TrainRecipe
from advx.store.weights import load_weights, save_weights, weights_digest
from advx.train import zoo
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

BUILTIN_MODELS = {"blog-cnn": 3, "madry-cnn": 2, "classifier-a": 2}  # name -> conv layers
TINY = {"epochs": 1, "batch_size": 64}


@pytest.fixture(scope="module")
def registry():
    return advx.get_registry()


@pytest.fixture(scope="module")
def synthetic():
    return advx.get_dataset("synthetic", n_train=128, n_test=64)


def outputs(module, seed=0):
    x = torch.rand(4, *module.advx_input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return module(x)


def load(name="blog-cnn", dataset=None, **kwargs):
    module = advx.get_model(name, dataset, **kwargs)
    module.advx_input_shape = dataset.info.shape
    return module


class TestBuiltinModels:
    """Each built-in architecture builds for MNIST- and CIFAR-shaped inputs."""

    @pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
    @pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
    def test_builds_and_gives_logits(self, registry, name, shape):
        plugin = registry.create("models", name)
        module = plugin.build(advx.DatasetInfo(shape=shape, num_classes=10))
        x = torch.rand(5, *shape)
        assert module(x).shape == (5, 10)
        features = module.features(x)
        assert features.ndim == 2 and module.head(features).shape == (5, 10)
        assert len(module.conv_layers()) == BUILTIN_MODELS[name]
        assert not any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in module.modules())

    @pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
    def test_default_recipe_is_valid(self, registry, name):
        plugin = registry.create("models", name)
        assert zoo.resolve_recipe(plugin, None) == TrainRecipe.from_dict(plugin.default_recipe)

    def test_too_small_input_is_a_usage_error(self, registry):
        plugin = registry.create("models", "classifier-a")
        with pytest.raises(UsageError, match="classifier-a.*shape"):
            plugin.build(advx.DatasetInfo(shape=(1, 6, 6), num_classes=10))


small_modules = st.builds(
    lambda width, depth, norm: nn.Sequential(
        nn.Linear(3, width), *(nn.BatchNorm1d(width) for _ in range(norm)),
        *(nn.Linear(width, width) for _ in range(depth))),
    st.integers(1, 6), st.integers(0, 2), st.integers(0, 1))


def perturbed_copy(module):
    twin = copy.deepcopy(module)
    with torch.no_grad():
        for tensor in twin.state_dict().values():
            tensor.add_(1 if tensor.is_floating_point() else 3)
    return twin


class TestWeightStore:
    """HDF5 round trips, torch checkpoints, and everything the loader must refuse."""

    @given(small_modules, st.dictionaries(st.text(max_size=5), st.integers() | st.text()))
    def test_h5_round_trip_is_exact(self, module, metadata):
        module.get_submodule("0").weight.data[0, 0] = 1 / 3
        with tempfile.TemporaryDirectory() as folder:
            path = pathlib.Path(folder) / "w.h5"
            save_weights(module, path, metadata)
            twin = perturbed_copy(module)
            assert weights_digest(twin) != weights_digest(module)
            assert load_weights(twin, path) == metadata
            assert list(pathlib.Path(folder).iterdir()) == [path]
        for name, tensor in module.state_dict().items():
            got = twin.state_dict()[name]
            assert got.dtype == tensor.dtype and torch.equal(got, tensor)
        assert weights_digest(twin) == weights_digest(module)

    def test_bfloat16_and_scalar_tensors(self, tmp_path):
        module = nn.Linear(2, 2).to(torch.bfloat16)
        module.register_buffer("step", torch.tensor(7))
        save_weights(module, tmp_path / "w.h5", {})
        twin = nn.Linear(2, 2).to(torch.bfloat16)
        twin.register_buffer("step", torch.tensor(0))
        load_weights(twin, tmp_path / "w.h5")
        assert weights_digest(twin) == weights_digest(module)

    @pytest.mark.parametrize("wrap", [
        lambda sd: sd, lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ])
    @pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
    def test_torch_checkpoints(self, tmp_path, wrap, suffix):
        module = nn.Linear(3, 2)
        torch.save(wrap(module.state_dict()), tmp_path / f"w{suffix}")
        twin = nn.Linear(3, 2)
        assert load_weights(twin, tmp_path / f"w{suffix}") == {}
        assert weights_digest(twin) == weights_digest(module)

    def test_refuses_pickled_objects_without_running_them(self, tmp_path):
        marker = tmp_path / "pwned"
        torch.save({"weight": torch.zeros(2, 3), "payload": Payload(str(marker))},
                   tmp_path / "evil.pt")
        with pytest.raises(UsageError, match="never pickled objects"):
            load_weights(nn.Linear(3, 2, bias=False), tmp_path / "evil.pt")
        assert not marker.exists()
        torch.load(tmp_path / "evil.pt", weights_only=False)  # the file really is a payload
        assert marker.exists()

    def test_mismatched_keys_and_shapes_are_named(self, tmp_path):
        save_weights(nn.Sequential(nn.Linear(3, 2)), tmp_path / "w.h5", {})
        with pytest.raises(UsageError, match=r"missing: 1\.weight, 1\.bias.*unexpected: 0\."):
            load_weights(nn.Sequential(nn.Identity(), nn.Linear(3, 2)), tmp_path / "w.h5")
        with pytest.raises(UsageError, match=r"wrong shape: 0\.weight \(2, 3\) != \(4, 3\)"):
            load_weights(nn.Sequential(nn.Linear(3, 4)), tmp_path / "w.h5")

    @pytest.mark.parametrize("keep", [0, 100, 0.5, 0.9])
    def test_truncated_h5_is_a_usage_error(self, tmp_path, keep):
        path = tmp_path / "w.h5"
        save_weights(nn.Linear(64, 64), path, {"a": 1})
        data = path.read_bytes()
        path.write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])
        with pytest.raises(UsageError, match="corrupt or truncated"):
            load_weights(nn.Linear(64, 64), path)

    def test_foreign_and_future_files_are_refused(self, tmp_path):
        with h5py.File(tmp_path / "other.h5", "w") as f:
            f["x"] = [1, 2]
        with pytest.raises(UsageError, match="not an advx weights file"):
            load_weights(nn.Linear(1, 1), tmp_path / "other.h5")
        save_weights(nn.Linear(1, 1), tmp_path / "w.h5", {})
        with h5py.File(tmp_path / "w.h5", "a") as f:
            f.attrs["format_version"] = 99
        with pytest.raises(UsageError, match="version 99.*upgrade advx"):
            load_weights(nn.Linear(1, 1), tmp_path / "w.h5")
        (tmp_path / "garbage.pt").write_bytes(b"not a zip")
        with pytest.raises(UsageError, match="garbage.pt"):
            load_weights(nn.Linear(1, 1), tmp_path / "garbage.pt")

    def test_bad_paths(self, tmp_path):
        with pytest.raises(UsageError, match="does not exist"):
            load_weights(nn.Linear(1, 1), tmp_path / "nope.h5")
        (tmp_path / "w.npz").write_bytes(b"")
        with pytest.raises(UsageError, match=r"allowed: \.h5"):
            load_weights(nn.Linear(1, 1), tmp_path / "w.npz")

    def test_saved_file_honours_the_umask(self, tmp_path):
        umask = os.umask(0o022)
        try:
            save_weights(nn.Linear(1, 1), tmp_path / "w.h5", {})
        finally:
            os.umask(umask)
        assert stat.S_IMODE((tmp_path / "w.h5").stat().st_mode) == 0o644

    def test_failed_save_leaves_nothing(self, tmp_path, monkeypatch):
        def explode(*args):
            raise RuntimeError("disk full")

        monkeypatch.setattr("advx.store.weights._write", explode)
        with pytest.raises(RuntimeError):
            save_weights(nn.Linear(1, 1), tmp_path / "w.h5", {})
        assert list(tmp_path.iterdir()) == []


class Payload:
    """Unpickling this object creates a file: a stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


class TestModelKey:
    """The cache key is stable and changes with every input it digests."""

    def test_stable_and_sensitive(self, synthetic):
        registry = advx.get_registry()
        blog, madry = (registry.create("models", n) for n in ("blog-cnn", "madry-cnn"))

        def key(plugin=blog, dataset=synthetic, recipe=None, training=None):
            recipe = recipe or TrainRecipe()
            return zoo.weights_key(zoo.model_identity(plugin, recipe, training), dataset)

        assert key() == key(recipe=TrainRecipe())
        assert len(key()) == 64 and int(key(), 16) >= 0
        changed = [key(madry), key(dataset=attrs.evolve(synthetic, seed=1)),
                   key(dataset=attrs.evolve(synthetic, n_test=65)),
                   key(training=advx.get_defense("adversarial-training")),
                   key(training=advx.get_defense("adversarial-training", eps=0.2))]
        other = {"optimizer": "sgd", "lr": 0.5, "epochs": 9, "batch_size": 7,
                 "weight_decay": 0.1, "momentum": 0.5, "seed": 11, "lr_schedule": "cosine",
                 "holdout": 100}
        assert set(other) == {f.name for f in attrs.fields(TrainRecipe)}
        changed += [key(recipe=attrs.evolve(TrainRecipe(), **{k: v})) for k, v in other.items()]
        assert len({key(), *changed}) == len(changed) + 1


class TestResolveRecipe:
    """Overrides go over the plugin's default recipe, over the TrainRecipe defaults."""

    class Plugin:
        default_recipe = {"epochs": 7, "lr": 0.01}

    def test_layers(self):
        assert zoo.resolve_recipe(self.Plugin, None) == TrainRecipe(epochs=7, lr=0.01)
        assert zoo.resolve_recipe(self.Plugin, {"lr": 0.5, "seed": 2}) == TrainRecipe(
            epochs=7, lr=0.5, seed=2)
        given_recipe = TrainRecipe(epochs=1)
        assert zoo.resolve_recipe(self.Plugin, given_recipe) is given_recipe

    def test_errors(self):
        with pytest.raises(ParameterError, match="allowed"):
            zoo.resolve_recipe(self.Plugin, {"epoch": 3})
        with pytest.raises(UsageError, match="TrainRecipe or a dict"):
            zoo.resolve_recipe(self.Plugin, "fast")


class TestLoadModel:
    """Train once and cache, load checkpoints, build seeded untrained models."""

    def test_trains_then_loads_from_cache(self, synthetic, tmp_path, monkeypatch):
        first = load(dataset=synthetic, recipe=TINY, cache=tmp_path)
        assert not first.training and first.advx_metadata["source"] == "trained"
        assert 0 <= first.advx_metadata["test_accuracy"] <= 1
        assert [p.suffix for p in (tmp_path / "models").iterdir()] == [".h5"]

        def no_training(*args, **kwargs):
            raise AssertionError("trained again instead of loading the cache")

        monkeypatch.setattr("advx.train.builder.train_model", no_training)
        second = load(dataset=synthetic, recipe=TINY, cache=tmp_path)
        assert second.advx_metadata["source"] == "cache"
        assert second.advx_metadata["recipe"] == attrs.asdict(
            zoo.resolve_recipe(advx.get_registry().create("models", "blog-cnn"), TINY))
        assert torch.equal(outputs(first), outputs(second))
        with pytest.raises(AssertionError, match="trained again"):
            load(dataset=synthetic, recipe={**TINY, "seed": 1}, cache=tmp_path)

    def test_corrupt_cache_is_retrained(self, synthetic, tmp_path):
        first = load(dataset=synthetic, recipe=TINY, cache=tmp_path)
        path = pathlib.Path(first.advx_metadata["path"])
        path.write_bytes(path.read_bytes()[:200])
        with pytest.warns(UserWarning, match="retraining"):
            again = load(dataset=synthetic, recipe=TINY, cache=tmp_path)
        assert again.advx_metadata["source"] == "trained"
        assert torch.equal(outputs(first), outputs(again))

    @pytest.mark.parametrize("suffix", [".pt", ".h5"])
    def test_checkpoint(self, synthetic, tmp_path, suffix):
        source = load(dataset=synthetic, recipe={**TINY, "seed": 5}, train=False)
        with torch.no_grad():
            source.head.bias.add_(0.5)
        path = tmp_path / f"ckpt{suffix}"
        if suffix == ".pt":
            torch.save(source.state_dict(), path)
        else:
            save_weights(source, path, {"note": "hand-made"})
        loaded = load(dataset=synthetic, checkpoint=path, cache=tmp_path / "unused")
        assert torch.equal(outputs(source), outputs(loaded))
        assert loaded.advx_metadata["source"] == "checkpoint"
        assert not (tmp_path / "unused").exists()
        with pytest.raises(UsageError, match="missing"):
            load("madry-cnn", dataset=synthetic, checkpoint=path)

    def test_untrained_is_seeded(self, synthetic):
        a = load("classifier-a", dataset=synthetic, train=False)
        b = load("classifier-a", dataset=synthetic, train=False)
        c = load("classifier-a", dataset=synthetic, train=False, recipe={"seed": 1})
        assert torch.equal(outputs(a), outputs(b))
        assert not torch.equal(outputs(a), outputs(c))
        assert not a.training and a.advx_metadata["source"] == "untrained"

    def test_bad_names_and_inputs(self, synthetic):
        with pytest.raises(UnknownPluginError, match="blog-cnn"):
            advx.get_model("blog-cnm", synthetic, train=False)
        with pytest.raises(ParameterError, match="no parameter width"):
            advx.get_model("blog-cnn", synthetic, params={"width": 2}, train=False)
        with pytest.raises(UnknownPluginError, match="synthetic"):
            advx.get_model("blog-cnn", "synthetc", train=False)

    def test_get_model_delegates(self, tmp_path):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            module = advx.get_model("blog-cnn", "synthetic", train=False, cache=tmp_path)
        assert module(torch.rand(2, 1, 28, 28)).shape == (2, 10)
