"""The defense contract: tests every defense must pass, for plugin authors to subclass.

In your plugin's test suite::

    from advx.testing import DefenseContract

    class TestMyDetector(DefenseContract):
        defense_name = "my-detector"
        defense_params = {"fpr": 0.05}

The tests build the defense around a small seeded network on 8x8 synthetic images, with the
core's build context (a throwaway cache), and check what any defense must keep: the model's
shape and batch independence, determinism, a gradient where it is adaptive, and per kind the
preprocessor's bounds, the detector's calibration and the training defense's training.
"""

import typing

import advx
import attrs
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from ..train.builder import Builder
from .networks import NUM_CLASSES, build_network, random_batch
from .plugin_checks import check_declaration, check_parameters, tiny_synthetic
from .strategies import image_batches


class DefenseContract:
    """Base class of the defense contract suite; set ``defense_name`` (and
    ``defense_params``); override :meth:`make_defense` for an unregistered class."""

    defense_name: typing.ClassVar[str | None] = None
    defense_params: typing.ClassVar[dict] = {}

    def make_defense(self):
        return advx.get_defense(self.defense_name, **self.defense_params)

    holdout: typing.ClassVar[int] = 40  # validation samples of the tiny training split

    def context(self, cache, adaptive=True):
        """The build context a run gives the defense (a cache of its own under ``cache``),
        with :attr:`holdout` validation samples."""
        builder = Builder(tiny_synthetic(n_train=96 + self.holdout), advx.get_registry(), "cpu",
                          cache)
        return builder.for_entry(adaptive, self.holdout)

    def defended(self, cache, adaptive=True):
        """The defense applied to a seeded conv network (trained weights aside)."""
        defense = self.make_defense()
        if isinstance(defense, advx.TrainingDefense):
            pytest.skip("a training defense changes weights, not the module")
        module = defense.apply(build_network("conv", 1).eval(), self.context(cache, adaptive))
        return advx.InvariantBatches(module).eval()

    # -- the class ---------------------------------------------------------------------------

    def test_declares_what_it_is(self):
        """A kebab-case name, a docstring, a kind, and presets that build."""
        cls = type(self.make_defense())
        check_declaration(cls, advx.Defense)
        assert isinstance(cls.kind, str) and cls.kind
        for preset in cls.presets:
            assert isinstance(advx.get_defense(cls.name, preset=preset), cls), preset

    def test_parameters_are_described(self):
        check_parameters(type(self.make_defense()))

    # -- the defended module -----------------------------------------------------------------

    def test_gives_logits_and_maybe_a_reject_output(self, tmp_path):
        """N x classes logits (one more, the reject output, behind a detector), finite."""
        module = self.defended(tmp_path)
        x, _, _ = random_batch(n=5)
        with torch.no_grad():
            out = module(x)
        rejected = advx.reject_index(module)
        assert rejected in (None, NUM_CLASSES)
        assert out.shape == (5, NUM_CLASSES + (rejected is not None))
        assert bool(torch.isfinite(out).all())

    def test_keeps_samples_independent(self, tmp_path):
        """A sample's output does not depend on the other samples of its batch."""
        module = self.defended(tmp_path)
        x, _, _ = random_batch(n=12, seed=1)
        rows = torch.tensor([0, 5, 11])
        with torch.no_grad():
            assert torch.equal(module(x)[rows], module(x[rows]))

    def test_is_deterministic(self, tmp_path):
        """Built twice (the second time from the cache it filled), the defended model gives
        the same outputs; so does the same module twice."""
        x, _, _ = random_batch(n=6, seed=2)
        first, second = self.defended(tmp_path), self.defended(tmp_path)
        with torch.no_grad():
            assert torch.equal(first(x), second(x)) and torch.equal(first(x), first(x))

    def test_has_a_gradient_where_adaptive(self, tmp_path):
        """With adaptive gradients the input gradient of the loss exists, is finite and not
        zero everywhere: white-box attacks can adapt to the defense."""
        module = self.defended(tmp_path, adaptive=True)
        x, y, _ = random_batch(n=8, seed=3)
        x = x.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(module(x), y)
        assert loss.requires_grad, "the defended model cuts the gradient"
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        assert grad is not None, "the defended model cuts the gradient"
        assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0

    # -- per kind ----------------------------------------------------------------------------

    @settings(max_examples=10, deadline=None,
              suppress_health_check=[HealthCheck.differing_executors])
    @given(x=image_batches(channels=(1, 3), sizes=(8,)))
    def test_a_preprocessor_keeps_shape_dtype_and_bounds(self, x):
        defense = self.make_defense()
        if not isinstance(defense, advx.Preprocessor):
            pytest.skip("not a preprocessor")
        out = defense.transform(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert bool(((out >= 0) & (out <= 1)).all())

    def test_a_detector_is_calibrated_at_its_false_positive_rate(self, tmp_path):
        defense = self.make_defense()
        if not isinstance(defense, advx.Detector):
            pytest.skip("not a detector")
        module = self.defended(tmp_path)
        x, _ = self.context(tmp_path).validation()
        with torch.no_grad():
            rejected = module(x).argmax(1) == advx.reject_index(module)
        assert float(rejected.float().mean()) <= defense.fpr + 1e-9

    def test_a_training_defense_trains_deterministically(self, tmp_path):
        defense = self.make_defense()
        if not isinstance(defense, advx.TrainingDefense):
            pytest.skip("not a training defense")
        recipe = defense.recipe(advx.TrainRecipe(epochs=1, batch_size=32))
        assert isinstance(recipe, advx.TrainRecipe)
        recipe = attrs.evolve(recipe, epochs=1, batch_size=32)  # the defense's, but short
        trained = []
        for _ in range(2):
            start = build_network("conv", 1)
            module = defense.train(start, recipe, self.context(tmp_path)) or start
            trained.append(module)
            assert not module.training
        initial = build_network("conv", 1).state_dict()
        assert any(not torch.equal(initial[k], v) for k, v in trained[0].state_dict().items())
        for k, v in trained[0].state_dict().items():
            assert torch.equal(v, trained[1].state_dict()[k]), k
