"""TrainRecipe, the training loop, accuracy, the cache paths and the progress bar."""

import advx
import attrs
import pytest
import torch
from advx.cli.progress import progress_bar, progress_factory
from advx.kernel.errors import ParameterError, UsageError
from advx.kernel.recipe import TrainRecipe
from advx.store.paths import cache_root, models_dir
from advx.train.loop import (
    evaluate_accuracy,
    make_optimizer,
    make_scheduler,
    resolve_device,
    train_model,
)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

recipes = st.builds(
    TrainRecipe,
    optimizer=st.sampled_from(["adam", "sgd"]),
    lr=st.floats(1e-6, 10.0),
    epochs=st.integers(1, 100),
    batch_size=st.integers(1, 4096),
    weight_decay=st.floats(0.0, 1.0),
    momentum=st.floats(0.0, 0.999),
    seed=st.integers(0, 2**32),
    lr_schedule=st.sampled_from(["constant", "cosine"]),
)


@pytest.fixture(scope="module")
def synthetic():
    return advx.get_dataset("synthetic", n_train=96, n_test=32)


def small_net(info, seed=0):
    torch.manual_seed(seed)
    c, h, w = info.shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(16, info.num_classes))


class TestTrainRecipe:
    """Validation and construction from dicts."""

    def test_defaults(self):
        assert attrs.asdict(TrainRecipe()) == {
            "optimizer": "adam", "lr": 1e-3, "epochs": 5, "batch_size": 128,
            "weight_decay": 0.0, "momentum": 0.9, "seed": 0, "lr_schedule": "constant",
            "holdout": 0}

    @pytest.mark.parametrize("field, value", [
        ("optimizer", "rmsprop"), ("lr", 0), ("lr", -1e-3), ("lr", "fast"), ("epochs", 0),
        ("epochs", 1.5), ("epochs", True), ("batch_size", 0), ("batch_size", -8),
        ("weight_decay", -0.1), ("momentum", 1.0), ("momentum", -0.5), ("seed", -1),
        ("seed", "zero"), ("lr_schedule", "step"),
    ])
    def test_rejects_bad_values_naming_the_field(self, field, value):
        with pytest.raises(ParameterError, match=field):
            TrainRecipe(**{field: value})
        with pytest.raises(ParameterError, match=field):
            TrainRecipe.from_dict({field: value})

    def test_unknown_key_lists_allowed_keys(self):
        with pytest.raises(ParameterError) as info:
            TrainRecipe.from_dict({"epochs": 2, "learning_rate": 0.1})
        message = str(info.value)
        assert "learning_rate" in message
        assert all(name in message for name in ("optimizer", "lr", "batch_size", "seed"))

    def test_adversary_points_to_the_defense(self):
        with pytest.raises(ParameterError, match="adversarial-training"):
            TrainRecipe.from_dict({"adversary": {"name": "pgd"}})

    def test_non_mapping_is_refused(self):
        with pytest.raises(ParameterError, match="table"):
            TrainRecipe.from_dict([("epochs", 2)])

    def test_from_dict_updates_the_base(self):
        base = TrainRecipe(epochs=3, lr=0.1, optimizer="sgd")
        recipe = TrainRecipe.from_dict({"seed": 7}, base=base)
        assert recipe == attrs.evolve(base, seed=7)
        assert TrainRecipe.from_dict({}) == TrainRecipe()

    @given(recipes)
    def test_dict_round_trip(self, recipe):
        assert TrainRecipe.from_dict(attrs.asdict(recipe)) == recipe


class TestTrainModel:
    """The training loop: deterministic, learning, returning an eval-mode module."""

    @pytest.mark.parametrize("optimizer, schedule", [("adam", "constant"), ("sgd", "cosine")])
    def test_same_seed_same_weights(self, synthetic, optimizer, schedule):
        recipe = TrainRecipe(epochs=2, batch_size=32, optimizer=optimizer, lr=0.01, seed=3,
                             lr_schedule=schedule)
        first = train_model(small_net(synthetic.info), synthetic, recipe, )
        second = train_model(small_net(synthetic.info), synthetic, recipe, )
        assert not first.training
        for a, b in zip(first.state_dict().values(), second.state_dict().values()):
            assert torch.equal(a, b)
        other = train_model(small_net(synthetic.info), synthetic, attrs.evolve(recipe, seed=4),
                            )
        assert not torch.equal(first[1].weight, other[1].weight)

    def test_learns_and_keeps_global_rng(self, synthetic):
        x, y = synthetic.load("test")
        module = small_net(synthetic.info)
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        train_model(module, synthetic, TrainRecipe(epochs=5, batch_size=16, lr=3e-3))
        assert torch.equal(torch.rand(3), expected)
        assert evaluate_accuracy(module, x, y) > 0.8

    def test_progress_bar_shows_loss(self, synthetic, capsys):
        train_model(small_net(synthetic.info), synthetic, TrainRecipe(epochs=1, batch_size=48),
                    label="tiny-net", progress=progress_bar)
        err = capsys.readouterr().err
        assert "train tiny-net epoch 1/1" in err and "loss" in err


class TestEvaluateAccuracy:
    """Accuracy of a fixed classifier, batching, modes and errors."""

    class Constant(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x.flatten(1)[:, 0].long(), 3).float()

    @given(st.lists(st.integers(0, 2), min_size=1, max_size=40), st.integers(1, 50))
    def test_counts_matches(self, labels, batch_size):
        y = torch.tensor(labels)
        x = torch.zeros(len(labels), 1, 2, 2)
        x[::2, 0, 0, 0] = 2  # predicts 2 on even rows, 0 on odd rows
        predicted = torch.where(torch.arange(len(y)) % 2 == 0, 2, 0)
        got = evaluate_accuracy(self.Constant(), x, y, batch_size=batch_size)
        assert got == pytest.approx((predicted == y).float().mean().item())

    def test_restores_training_mode(self):
        module = self.Constant().train()
        evaluate_accuracy(module, torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long))
        assert module.training

    def test_empty_input_is_refused(self):
        with pytest.raises(UsageError, match="at least one"):
            evaluate_accuracy(self.Constant(), torch.zeros(0, 1, 2, 2), torch.zeros(0))


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="auto"):
        resolve_device("tpu-please")


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ADVX_CACHE", raising=False)
    assert cache_root() == type(tmp_path)("data_cache")
    monkeypatch.setenv("ADVX_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "given") == tmp_path / "given"
    assert models_dir(tmp_path) == tmp_path / "models"


def test_progress_bar(capsys):
    with progress_factory(False)("nothing shown", 3) as advance:
        advance()
        advance(2, status="x")
    assert "nothing shown" not in capsys.readouterr().err
    assert progress_factory(False) is advx.no_progress and progress_factory(True) is progress_bar
    with progress_bar("counting", 4) as advance:
        advance()
        advance(3, status="done!")
    err = capsys.readouterr().err
    assert "counting" in err and "4/4" in err and "done!" in err


def test_cosine_schedule_anneals_to_zero(synthetic):
    module = small_net(synthetic.info)
    recipe = TrainRecipe(epochs=2, batch_size=40, lr=0.1, lr_schedule="cosine")
    optimizer = make_optimizer(module, recipe)
    scheduler = make_scheduler(optimizer, recipe, total_steps=6)
    rates = []
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(0, abs=1e-12)
    constant = make_optimizer(module, attrs.evolve(recipe, lr_schedule="constant"))
    steady = make_scheduler(constant, attrs.evolve(recipe, lr_schedule="constant"), 6)
    constant.step()
    steady.step()
    assert constant.param_groups[0]["lr"] == 0.1


# -- adversarial training (the adversarial-training defense) -------------------------------

def test_adversarial_training_raises_robust_accuracy(tmp_path):
    """PGD adversarial training on synthetic data: PGD-10 at linf 0.3 goes from ~0% to far
    above it, clean accuracy stays high."""
    data = advx.get_dataset("synthetic", n_train=512, n_test=256)
    base = {"epochs": 3, "batch_size": 64}
    defense = advx.get_defense("adversarial-training", eps=0.3, steps=5, step_size=0.15)
    natural = advx.get_model("blog-cnn", data, recipe=base, cache=tmp_path)
    robust = advx.get_model("blog-cnn", data, recipe=base, training=defense, cache=tmp_path)
    x, y = data.load("test")
    threat = advx.ThreatModel(norm="linf", eps=0.3)
    accuracy = {}
    for name, model in (("natural", natural), ("robust", robust)):
        result = advx.get_attack("pgd", steps=10)(model, x, y, threat)
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        robust_now = clean & ~result.success
        accuracy[name] = (float(clean.float().mean()), float(robust_now.float().mean()))
    assert accuracy["robust"][0] >= 0.9
    assert accuracy["natural"][1] <= 0.1 and accuracy["robust"][1] >= accuracy["natural"][1] + 0.25


def test_adversarial_training_uses_the_registry_it_is_given(tmp_path):
    """The training adversary comes from the run's registry, not a global one: a registry
    whose "pgd" is another attack trains with that attack."""
    from advx.host.pluginmanager import add_plugin, load_plugins
    from advx.host.registry import Registry

    seen = []

    @attrs.frozen(kw_only=True)
    class CountingPGD(advx.FixedEpsilonAttack):
        """Records each call, then leaves the batch as it is."""

        name = "pgd"
        norms = frozenset({"linf", "l2"})
        steps: int = attrs.field(default=1, metadata={"help": "ignored"})
        step_size: float = attrs.field(default=0.1, metadata={"help": "ignored"})
        random_start: bool = attrs.field(default=True, metadata={"help": "ignored"})

        def run(self, model, x, y, threat, *, targets, rng):
            seen.append(len(x))
            return x.clone()

    module = __import__("types").ModuleType("counting")
    module.advx_register_attacks = advx.hookimpl(lambda register: register(CountingPGD))
    loaded = load_plugins()
    loaded.pm.unregister(name="builtin-attacks")
    add_plugin(loaded, module, "counting")
    registry = Registry(loaded)
    data = advx.get_dataset("synthetic", n_train=64, n_test=16)
    defense = registry.create("defenses", "adversarial-training", epochs=1)
    advx.get_model("blog-cnn", data, recipe={"batch_size": 32}, training=defense,
                   cache=tmp_path, registry=registry)
    assert seen == [32, 32]
