"""The estimated-gradient attack: estimates that match autograd, queries, budget, no backward."""

import advx
import pytest
import torch
from advx.plugins.attacks._estimation import estimating
from advx.plugins.attacks.estimated import EstimatedGradient
from advx.run.spec import SpecError, parse_spec
from advx.testing.networks import NoBackward, build_network, easy_eps, random_batch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .conftest import TINY_SPEC

CLASSES = 5


def smooth_mlp(dtype=torch.float64, seed=0):
    """A small softplus MLP on (N, 1, 4, 4) inputs: smooth, so autograd's gradient is the
    one every estimator converges to."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12),
                                      torch.nn.Softplus(), torch.nn.Linear(12, CLASSES))
    return network.to(dtype)


def true_and_estimated(model, x, weights, estimator, samples=1, sigma=1e-5):
    """Autograd's input gradient of <weights, model(x)> and the wrapper's estimate of it."""
    leaf = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad((model(leaf) * weights).sum(), leaf)
    leaf = x.clone().requires_grad_(True)
    wrapped = estimating(model, estimator, samples, sigma)
    (estimate,) = torch.autograd.grad((wrapped(leaf) * weights).sum(), leaf)
    return true, estimate


class Counting(torch.nn.Module):
    """Counts the rows the model evaluates (its queries); optionally refuses backward."""

    def __init__(self, network):
        super().__init__()
        self.network, self.rows = network, 0

    def forward(self, x):
        self.rows += len(x)
        return self.network(x)


def attack(inner, **params):
    return advx.get_attack("estimated-gradient", attack=inner, **params)


# -- the estimator -----------------------------------------------------------------------------

def test_finite_differences_match_autograd():
    """Central differences in float64 at sigma 1e-5: truncation ~sigma^2, rounding ~1e-16 /
    sigma, so 1e-8 is a tight bound."""
    x = torch.rand(7, 1, 4, 4, dtype=torch.float64)
    weights = torch.randn(7, CLASSES, dtype=torch.float64)
    true, estimate = true_and_estimated(smooth_mlp(), x, weights, "finite-differences")
    torch.testing.assert_close(estimate, true, rtol=0, atol=1e-8)


def test_finite_differences_in_float32_divide_by_the_rounded_step():
    """float32 inputs: dividing by the step as rounded keeps the estimate within 1e-3."""
    model = smooth_mlp(torch.float32)
    x = torch.rand(5, 1, 4, 4)
    weights = torch.randn(5, CLASSES)
    true, estimate = true_and_estimated(model, x, weights, "finite-differences", sigma=1e-2)
    torch.testing.assert_close(estimate, true, rtol=0, atol=1e-3)


def test_nes_with_many_samples_points_along_the_gradient():
    """For n antithetic pairs in d dimensions, NES's error has squared norm (d + 1) / n times
    the gradient's on a locally linear function, so its cosine with the gradient is about
    (1 + (d + 1) / n) ** -0.5: 0.996 for d = 16, n = 2000.  0.98 allows five times that
    squared error (its relative spread is about sqrt(2 / d) = 0.35)."""
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    weights = torch.randn(6, CLASSES, dtype=torch.float64)
    true, estimate = true_and_estimated(smooth_mlp(), x, weights, "nes", samples=2000,
                                        sigma=1e-3)
    cosine = torch.nn.functional.cosine_similarity(estimate.flatten(1), true.flatten(1))
    assert bool((cosine > 0.98).all()), cosine


def test_later_backward_passes_reuse_the_probes():
    """Several gradients of one forward pass (DeepFool, JSMA) cost one estimate's queries."""
    model = Counting(smooth_mlp())
    wrapped = estimating(model, "nes", 10, 1e-3)
    leaf = torch.rand(3, 1, 4, 4, dtype=torch.float64).requires_grad_(True)
    out = wrapped(leaf)
    first = torch.autograd.grad(out[:, 0].sum(), leaf, retain_graph=True)[0]
    second = torch.autograd.grad(out[:, 1].sum(), leaf)[0]
    assert model.rows == 3 + 3 * 2 * 10
    assert not torch.equal(first, second)


@settings(max_examples=15, deadline=None)
@given(pixels=hnp.arrays("float64", (4, 16), elements=st.floats(0, 1)),
       rows=st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True),
       estimator=st.sampled_from(("nes", "finite-differences")))
def test_the_estimate_at_a_point_does_not_depend_on_the_batch(pixels, rows, estimator):
    """A row's estimate is the same, bit for bit, in any batch holding it (its directions
    are seeded by its content), and finite differences match autograd at any point."""
    x = torch.from_numpy(pixels).view(4, 1, 4, 4)
    weights = torch.randn(4, CLASSES, dtype=torch.float64)
    model = advx.InvariantBatches(smooth_mlp())
    true, whole = true_and_estimated(model, x, weights, estimator, samples=8)
    index = torch.tensor(rows)
    _, part = true_and_estimated(model, x[index], weights[index], estimator, samples=8)
    assert torch.equal(whole[index], part)
    if estimator == "finite-differences":
        torch.testing.assert_close(whole, true, rtol=0, atol=1e-8)


def test_the_wrapper_never_runs_the_models_backward():
    """Gradients reach the input, none reach the model (NoBackward raises if one did)."""
    network = smooth_mlp()
    wrapped = estimating(NoBackward(network), "nes", 4, 1e-3)
    leaf = torch.rand(2, 1, 4, 4, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(wrapped(leaf).sum(), leaf)
    assert grad.abs().sum() > 0
    assert all(p.grad is None for p in network.parameters())


# -- the attack --------------------------------------------------------------------------------

def test_kind_norms_and_modes_follow_the_inner_attack():
    ddn = attack({"name": "ddn", "steps": 5})
    assert ddn.kind == "minimization" and ddn.supported_norms() == {"l2"}
    assert attack({"name": "deepfool"}).supports_targeted is False
    assert attack({"name": "pgd"}).per_sample_eps is True
    assert type(ddn).access == "score" and type(ddn).kind == "fixed-eps"
    with pytest.raises(advx.UsageError, match="does not support norm 'linf'"):
        ddn.check_threat(advx.ThreatModel(norm="linf", eps=0.1))


@pytest.mark.parametrize("inner", [{"name": "square"}, {"name": "estimated-gradient"}])
def test_only_gradient_attacks_are_wrapped(inner):
    with pytest.raises(advx.ParameterError, match="must be a gradient attack"):
        attack(inner)


def test_queries_are_exact_for_one_gradient_pass_and_bound_the_real_ones():
    """fgsm, and pgd with early stopping: every pass takes a gradient, so the counts are the
    rows the model really evaluated (it also sees the core's final prediction pass), and are
    the same for a sample whatever its batch.  With restarts, a comparison pass without a
    gradient is charged a whole estimate: the counts bound the real ones."""
    x, y, _ = random_batch(n=8)
    threat = advx.ThreatModel(norm="linf", eps=0.1)
    model = Counting(advx.InvariantBatches(build_network("mlp", 1)))
    result = attack({"name": "fgsm"}, samples=6)(model, x, y, threat)
    assert torch.equal(result.queries, torch.full((8,), 1 + 2 * 6))
    assert model.rows == 8 * (1 + 2 * 6) + 8

    model.rows, seeds = 0, torch.arange(8)
    pgd = attack({"name": "pgd", "steps": 12}, samples=6, sigma=0.01)
    whole = pgd(model, x, y, advx.ThreatModel(norm="linf", eps=0.3), seed=seeds)
    assert int(whole.queries.sum()) == model.rows - 8
    assert len(set(whole.queries.tolist())) > 1, "no sample stopped early"
    rows = torch.tensor([0, 3, 5])
    part = pgd(model, x[rows], y[rows], advx.ThreatModel(norm="linf", eps=0.3),
               seed=seeds[rows])
    assert torch.equal(whole.queries[rows], part.queries)
    assert torch.equal(whole.x_adv[rows], part.x_adv)

    model.rows = 0
    restarted = attack({"name": "pgd", "steps": 3, "restarts": 2}, samples=6)
    result = restarted(model, x, y, advx.ThreatModel(norm="linf", eps=0.01), seed=seeds)
    assert int(result.queries.sum()) > model.rows - 8 > 0


def test_a_budget_below_the_bound_is_refused_up_front():
    too_many = attack({"name": "pgd", "steps": 40}, samples=50, budget=4000)
    with pytest.raises(advx.UsageError, match=r"up to 4040 queries per sample .*budget = 4000"):
        too_many.check_threat(advx.ThreatModel(norm="linf", eps=0.1))
    attack({"name": "pgd", "steps": 40}, samples=50, budget=4040).check_threat(
        advx.ThreatModel(norm="linf", eps=0.1))
    extra = ('[[attacks]]\nname = "estimated-gradient"\nnorm = "l2"\neps = 1.0\n'
             'attack = { name = "ddn", steps = 50 }\nsamples = 50\nbudget = 2000\n')
    with pytest.raises(SpecError, match=r"attacks\[2\].*'ddn' may spend up to 5050"):
        parse_spec(TINY_SPEC.format(extra=extra), advx.get_registry(), source="spec.toml")


def test_finite_differences_are_checked_against_the_budget_with_the_image_size():
    """The spec cannot know the image size: the run refuses before its first query."""
    fd = attack({"name": "fgsm"}, estimator="finite-differences", budget=100)
    threat = advx.ThreatModel(norm="linf", eps=0.1)
    fd.check_threat(threat)  # 1 + 2 x elements fits for small images
    model = Counting(build_network("mlp", 1))
    x, y, _ = random_batch(n=2)
    with pytest.raises(advx.UsageError, match="up to 129 queries .*differences over 64 elements"):
        fd(model, x, y, threat)
    assert model.rows == 0


def test_a_budget_needs_a_known_inner_attack():
    """A plugin's gradient attack runs on estimates, but without a known bound no budget."""
    EstimatedGradient(attack=_Unknown()).check_threat(advx.ThreatModel(norm="linf", eps=0.1))
    unknown = EstimatedGradient(attack=_Unknown(), budget=10 ** 6)
    with pytest.raises(advx.UsageError, match="budget needs a bound on the passes"):
        unknown.check_threat(advx.ThreatModel(norm="linf", eps=0.1))


class _Unknown(advx.FixedEpsilonAttack):
    """A gradient attack the wrapper has no bound for."""

    name = "unknown"
    norms = frozenset({"linf"})


def test_pgd_through_estimates_fools_an_easy_model_without_its_gradient():
    """With a ball covering the box, PGD on NES estimates fools a linear model it can only
    query (its backward raises)."""
    x, _, _ = random_batch(n=16)
    network = build_network("linear", 1)
    with torch.no_grad():
        y = network(x).argmax(1)
    threat = advx.ThreatModel(norm="linf", eps=easy_eps("linf", 1))
    result = attack({"name": "pgd", "steps": 10}, samples=20)(NoBackward(network), x, y, threat)
    assert result.success.float().mean() >= 0.9


def test_pgd_on_finite_differences_fools_as_many_as_pgd_on_autograd():
    """On a ReLU network (linear around almost every point) central differences give the
    gradient, so PGD on them fools (nearly) the samples PGD on autograd's gradient fools;
    NES with 20 pairs in 64 dimensions fools some."""
    x, _, _ = random_batch(n=32, seed=1)
    network = build_network("conv", 1)
    with torch.no_grad():
        y = network(x).argmax(1)
    threat = advx.ThreatModel(norm="linf", eps=0.1)
    exact = advx.get_attack("pgd", steps=10)(network, x, y, threat, seed=0)
    differences = attack({"name": "pgd", "steps": 10}, estimator="finite-differences")
    estimated = differences(NoBackward(network), x, y, threat, seed=0)
    assert int(estimated.success.sum()) >= int(exact.success.sum()) - 1
    nes = attack({"name": "pgd", "steps": 10}, samples=20)(network, x, y, threat, seed=0)
    assert bool(nes.success.any())
