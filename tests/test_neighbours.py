"""The nearest-neighbour model: 1-NN predictions, logits, gradients and the weights cache."""

import warnings

import advx
import pytest
import torch
from advx.plugins.models.neighbours import TRAIN_BLOCK, balanced_subset

N_TRAIN = 300


@pytest.fixture(scope="module")
def data():
    return advx.get_dataset("synthetic", size=10, n_train=N_TRAIN, n_test=100, noise=0.3)


def _model(data, tmp_path, **params):
    return advx.get_model("nearest-neighbour", data, params=params, cache=tmp_path)


def _brute_force(x, images, labels):
    """The label of each input's nearest stored image, by explicit differences."""
    distances = ((x.flatten(1)[:, None] - images.flatten(1)[None]) ** 2).sum(2)
    return labels[distances.argmin(1)], distances


def test_classifies_its_training_points(data, tmp_path):
    model = _model(data, tmp_path)
    x, y = data.load("train")
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), y)
    assert model.images.shape == (N_TRAIN, 1, 10, 10)


def test_beats_chance_clearly_on_synthetic(data, tmp_path):
    x, y = data.load("test")
    with torch.no_grad():
        accuracy = (_model(data, tmp_path)(x).argmax(1) == y).float().mean()
    assert accuracy > 0.8  # chance is 0.1


def test_logits_are_minus_the_squared_distance_to_each_class(data, tmp_path):
    model = _model(data, tmp_path, scale=0.5)
    x, _ = data.load("test")
    predicted, distances = _brute_force(x, model.images, model.labels)
    with torch.no_grad():
        logits = model(x)
    assert torch.equal(logits.argmax(1), predicted)
    per_class = torch.stack([distances[:, model.labels == c].amin(1) for c in range(10)], 1)
    torch.testing.assert_close(logits, -0.5 * per_class, rtol=1e-5, atol=1e-4)


def test_blocks_over_the_stored_set_change_nothing(monkeypatch, data, tmp_path):
    # a block of 7 stored images: many blocks, a ragged last one, classes split across blocks
    model = _model(data, tmp_path)
    x, _ = data.load("test")
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr("advx.plugins.models.neighbours.TRAIN_BLOCK", 7)
        blocked = model(x)
    assert TRAIN_BLOCK > N_TRAIN
    torch.testing.assert_close(blocked, whole, rtol=1e-5, atol=1e-4)
    assert torch.equal(blocked.argmax(1), whole.argmax(1))


def test_gradients_flow_to_the_input(data, tmp_path):
    model = _model(data, tmp_path)
    x, y = data.load("test")
    leaf = x[:8].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(leaf), y[:8]).backward()
    assert bool(torch.isfinite(leaf.grad).all()) and leaf.grad.abs().sum() > 0
    # the gradient of -||x - t||^2 at the nearest image t of class c is -2 (x - t)
    leaf = x[:1].clone().requires_grad_(True)
    c = int(model(leaf).argmax(1))
    model(leaf)[0, c].backward()
    own = model.images[model.labels == c]
    nearest = own[((own - x[:1]) ** 2).flatten(1).sum(1).argmin()]
    torch.testing.assert_close(leaf.grad[0], -2 * (x[0] - nearest), rtol=1e-4, atol=1e-5)


def test_a_gradient_attack_fools_it(data, tmp_path):
    model = _model(data, tmp_path)
    x, y = data.load("test")
    result = advx.get_attack("pgd", steps=10)(model, x, y, advx.ThreatModel(norm="l2", eps=3.0))
    assert result.success.float().mean() > 0.5


class TestMaxTrain:
    """``max_train`` stores a seeded class-balanced subset, padded to a fixed row count."""

    def test_stores_a_balanced_seeded_subset(self, data, tmp_path):
        model = _model(data, tmp_path, max_train=50)
        counts = torch.bincount(model.labels, minlength=10)
        assert model.images.shape[0] == 50 and counts.tolist() == [5] * 10
        x, y = data.load("train")
        rows = ((x.flatten(1)[None] - model.images.flatten(1)[:, None]) ** 2).sum(2)
        stored = rows.argmin(1)
        assert torch.equal(y[stored], model.labels)  # every stored row is a training image
        assert len(stored.unique()) == 50
        again = _model(data, tmp_path / "other", max_train=50)
        assert torch.equal(again.images, model.images)
        reseeded = advx.get_model("nearest-neighbour", data, params={"max_train": 50},
                                  recipe={"seed": 1}, cache=tmp_path)
        assert not torch.equal(reseeded.images, model.images)

    def test_balanced_subset_takes_round_robin(self):
        labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 4)
        chosen = balanced_subset(labels, 8, 3, seed=0)
        assert torch.bincount(labels[chosen], minlength=3).tolist() == [3, 2, 3]
        assert torch.equal(chosen, chosen.sort().values) and len(chosen.unique()) == 8
        assert torch.equal(balanced_subset(labels, 20, 3, seed=0), torch.arange(12))

    def test_a_cap_above_the_split_pads_with_unused_rows(self, data, tmp_path):
        model = _model(data, tmp_path, max_train=N_TRAIN + 20)
        assert model.images.shape[0] == N_TRAIN + 20
        assert int((model.labels == -1).sum()) == 20
        x, y = data.load("train")
        with torch.no_grad():
            assert torch.equal(model(x).argmax(1), y)  # the zero rows are never nearest

    @pytest.mark.parametrize("value", [0, -3, 2.5, True])
    def test_invalid(self, value):
        with pytest.raises(advx.ParameterError):
            advx.get_registry().create("models", "nearest-neighbour", max_train=value)


def test_weights_round_trip_through_the_cache(data, tmp_path):
    first = _model(data, tmp_path, max_train=120)
    assert first.advx_metadata["source"] == "trained"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "cached weights unreadable" retraining
        second = _model(data, tmp_path, max_train=120)
    assert second.advx_metadata["source"] == "cache"
    x, _ = data.load("test")
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


def test_the_whole_split_round_trips_through_the_cache(data, tmp_path):
    _model(data, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _model(data, tmp_path).advx_metadata["source"] == "cache"


def test_untrained_is_a_seeded_random_classifier(data, tmp_path):
    model = advx.get_model("nearest-neighbour", data, train=False, cache=tmp_path)
    assert model.images.shape == (10, 1, 10, 10)
    assert torch.equal(model.labels, torch.arange(10))
    assert 0 <= float(model.images.min()) and float(model.images.max()) <= 1


def test_load_state_dict_resizes_the_stored_set(data, tmp_path):
    trained = _model(data, tmp_path)
    fresh = advx.get_model("nearest-neighbour", data, train=False, cache=tmp_path)
    fresh.load_state_dict(trained.state_dict())
    x, _ = data.load("test")
    with torch.no_grad():
        assert torch.equal(fresh(x), trained(x))
