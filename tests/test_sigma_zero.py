"""sigma-zero, the minimal-L0 attack of Cinà et al. (2025): its pieces, properties that hold
on any small network and input, and its strength on a briefly trained MNIST CNN against
adv_lib's sigma_zero (a test-only oracle; skipped when absent) and advx's other L0 attacks."""

import importlib.util
import math
import os

import advx
import pytest
import torch
from advx.plugins.attacks.sigma_zero import SigmaZero, smooth_l0
from advx.testing.networks import build_network
from advx.testing.strategies import image_batches
from hypothesis import given, settings
from hypothesis import strategies as st

from .small_cnn import mnist_small_cnn

N = 64
STEPS = 100
TOLERANCE = 1.25  # advx's median L0 may exceed adv_lib's by at most 25%


@pytest.fixture(scope="module")
def mnist():
    """A small CNN trained one epoch on 2,000 sample digits, as in the Foolbox differential
    tests; 64 test digits and which of them it classifies correctly."""
    model, x, y, correct = mnist_small_cnn(N)
    return model, x, y, correct


@pytest.fixture(scope="module")
def ours(mnist):
    model, x, y, _ = mnist
    result = advx.get_attack("sigma-zero", steps=STEPS)(model, x, y, advx.ThreatModel("l0"))
    return l0_distances(model, x, y, result.x_adv)


def l0_distances(model, x, y, x_adv):
    """Per-sample count of changed pixels, infinite where the model is not fooled."""
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    distance = (x_adv != x).flatten(1).sum(1).to(x.dtype)
    return torch.where(fooled, distance, torch.full_like(distance, math.inf))


def median(distances, correct):
    return float(distances[correct].median())


# -- the pieces ------------------------------------------------------------------------------

def test_smooth_l0_counts_large_components_as_one():
    delta = torch.tensor([[0.0, 1.0, -0.5, 1e-4]])
    assert smooth_l0(delta, 1e-3).item() == pytest.approx(1 / 1.001 + 0.25 / 0.251 + 1e-5,
                                                          rel=1e-3)


def test_step_size_is_cosine_annealed_to_a_tenth():
    attack = SigmaZero(steps=10, lr=2.0)
    etas = [attack._eta(step) for step in range(10)]
    assert etas[0] == 2.0 and etas[5] == pytest.approx(1.1)
    assert all(a > b for a, b in zip(etas, etas[1:])) and etas[-1] > 0.2


@pytest.mark.parametrize("params", [{"steps": 0}, {"lr": 0}, {"sigma": -1},
                                    {"threshold": math.nan}, {"threshold_factor": -0.1}])
def test_invalid_parameters(params):
    with pytest.raises(advx.ParameterError):
        advx.get_attack("sigma-zero", **params)


# -- properties on any small network and input -----------------------------------------------

@settings(max_examples=25, deadline=None)
@given(x=image_batches(max_n=4, sizes=(8,)), kind=st.sampled_from(["mlp", "conv", "linear"]),
       targeted=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_returns_the_sparsest_adversarial_it_queried(x, kind, targeted, seed):
    model = build_network(kind, x.shape[1])
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (len(x),), generator=generator)
    targets = (y + torch.randint(1, 10, (len(x),), generator=generator)) % 10
    threat = advx.ThreatModel("l0", targeted=targeted)
    result = advx.get_attack("sigma-zero", steps=15)(model, x, y, threat,
                                                     targets=targets if targeted else None)
    changed = (result.x_adv != x).any(1).flatten(1).sum(1)  # pixels with a changed channel
    assert torch.equal(result.distance, changed.to(result.distance.dtype))
    unfooled = ~result.success
    assert torch.equal(result.x_adv[unfooled], x[unfooled])  # nothing found: x itself
    # Never worse than the sparsest adversarial the core saw it query.
    assert not bool(result.returned_worse("minimization").any())


# -- strength on a trained CNN ---------------------------------------------------------------

def _adv_lib_sigma_zero():
    """adv_lib's sigma_zero, loaded from its file (its attacks package imports torchvision)."""
    spec = importlib.util.find_spec("adv_lib")
    if spec is None:
        pytest.skip("adv_lib not installed")
    path = os.path.join(os.path.dirname(spec.origin), "attacks", "sigma_zero.py")
    module_spec = importlib.util.spec_from_file_location("_adv_lib_sigma_zero", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.sigma_zero


def test_as_sparse_as_adv_lib(mnist, ours):
    """adv_lib's port of the authors' code takes Adam steps; advx takes the paper's plain
    normalised steps.  Same loss, threshold rule and defaults, same number of steps."""
    peer = _adv_lib_sigma_zero()
    model, x, y, correct = mnist
    theirs = l0_distances(model, x, y, peer(model, x, y, num_steps=STEPS))
    mine, peer_median = median(ours, correct), median(theirs, correct)
    verdict = ("as sparse" if mine == peer_median else
               "advx is stronger" if mine < peer_median else "adv_lib is stronger")
    assert mine <= TOLERANCE * peer_median, (
        f"sigma-zero: advx median L0 {mine:g} vs adv_lib {peer_median:g} ({verdict}); advx "
        f"fooled {int(ours[correct].isfinite().sum())}, adv_lib "
        f"{int(theirs[correct].isfinite().sum())} of {int(correct.sum())}")


@pytest.mark.parametrize("name", ["salt-and-pepper", "pointwise"])
def test_sparser_than_the_decision_attacks(mnist, ours, name):
    model, x, y, correct = mnist
    result = advx.get_attack(name)(model, x, y, advx.ThreatModel("l0"))
    theirs = l0_distances(model, x, y, result.x_adv)
    mine, other = median(ours, correct), median(theirs, correct)
    assert mine < other, f"sigma-zero median L0 {mine:g} vs {name} {other:g}"


def test_targeted_reaches_the_target(mnist):
    model, x, y, correct = mnist
    targets = (y + 1) % 10
    threat = advx.ThreatModel("l0", targeted=True)
    result = advx.get_attack("sigma-zero", steps=STEPS)(model, x, y, threat, targets=targets)
    assert result.success.float().mean() > 0.9
    assert bool((result.pred[result.success] == targets[result.success]).all())
    assert float(result.distance[result.success].median()) < 40
