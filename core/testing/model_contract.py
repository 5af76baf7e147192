"""The model contract: tests every model plugin must pass, for plugin authors to subclass.

In your plugin's test suite::

    from advx.testing import ModelContract

    class TestMyNet(ModelContract):
        model_name = "my-net"
        shapes = ((1, 28, 28),)    # the input shapes it supports (default: MNIST and CIFAR)
"""

import typing

import advx
import torch

from ..kernel.dataset import DatasetInfo
from ..kernel.recipe import TrainRecipe
from ..store.weights import load_weights, save_weights
from ..train.builder import Builder
from ..train.zoo import build_seeded
from .plugin_checks import check_declaration, check_parameters, tiny_synthetic


class ModelContract:
    """Base class of the model contract suite; set ``model_name`` (and ``model_params``,
    ``shapes``); override :meth:`make_model` for an unregistered class."""

    model_name: typing.ClassVar[str | None] = None
    model_params: typing.ClassVar[dict] = {}
    shapes: typing.ClassVar[tuple] = ((1, 28, 28), (3, 32, 32))
    num_classes: typing.ClassVar[int] = 10

    def make_model(self):
        return advx.get_registry().create("models", self.model_name, **self.model_params)

    def build(self, shape=None, seed=0):
        info = DatasetInfo(shape=tuple(shape or self.shapes[0]), num_classes=self.num_classes)
        return build_seeded(self.make_model(), info, seed)

    def inputs(self, n, shape=None, seed=0):
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(n, *(shape or self.shapes[0]), generator=generator)

    def test_declares_what_it_is(self):
        check_declaration(type(self.make_model()), advx.ModelPlugin)

    def test_parameters_are_described(self):
        check_parameters(type(self.make_model()))

    def test_default_recipe_is_a_recipe(self):
        TrainRecipe.from_dict(type(self.make_model()).default_recipe)

    def test_builds_a_module_giving_logits_for_each_shape(self):
        for shape in self.shapes:
            module = self.build(shape).eval()
            assert isinstance(module, torch.nn.Module)
            with torch.no_grad():
                out = module(self.inputs(3, shape))
            assert out.shape == (3, self.num_classes), shape
            assert bool(torch.isfinite(out).all())

    def test_build_is_seeded(self):
        """Built under one seed, the module's weights are equal; under another they differ."""
        first, again, other = self.build(seed=0), self.build(seed=0), self.build(seed=1)
        state = first.state_dict()
        assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
        assert any(not torch.equal(v, other.state_dict()[k]) for k, v in state.items()
                   if v.is_floating_point())

    def test_eval_passes_keep_samples_independent(self):
        """In eval mode a sample's logits do not depend on the rest of its batch (with the
        small-batch padding every run applies)."""
        module = advx.InvariantBatches(self.build().eval())
        x = self.inputs(12, seed=2)
        rows = torch.tensor([0, 4, 11])
        with torch.no_grad():
            assert torch.equal(module(x)[rows], module(x[rows]))

    def test_trains_and_round_trips_its_weights(self, tmp_path):
        """One epoch of the plugin's training (``train``: the standard loop unless the plugin
        overrides it) changes the weights, which the weights store saves and loads back
        exactly (without unpickling)."""
        shape = self.shapes[0]
        data = tiny_synthetic(size=shape[1], n_train=64, n_test=8)
        if data.info.shape != tuple(shape):
            data = advx.get_dataset("synthetic", n_train=64, n_test=8, size=shape[1],
                                    channels=shape[0])
        module, initial = self.build(shape), self.build(shape).state_dict()
        builder = Builder(data, advx.get_registry(), cache_root=tmp_path / "cache")
        self.make_model().train(module, TrainRecipe(epochs=1, batch_size=32), builder)
        assert any(not torch.equal(initial[k], v) for k, v in module.state_dict().items())
        save_weights(module, tmp_path / "w.h5", {"note": "contract"})
        loaded = self.build(shape, seed=3)
        load_weights(loaded, tmp_path / "w.h5")
        for k, v in module.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k]), k
