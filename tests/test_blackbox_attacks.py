"""The score- and decision-based attacks on a small CNN trained on the MNIST sample.

Budgets here are far below the papers' defaults to keep the module fast; the contract suite
(tests/test_attack_contract.py) runs the defaults on tiny networks.
"""

import advx
import attrs
import pytest
import torch
from advx.kernel.random import SampleStreams
from advx.plugins.attacks._gradients import ascent_step, objective_gradient, projection_onto
from advx.plugins.attacks.boundary import blended_start
from advx.testing import AttackContract
from advx.testing.contract import build_network, random_batch

from .small_cnn import train_small_cnn


@pytest.fixture(scope="module")
def mnist():
    """``(model, x, y, x_weak, y_weak)``: a CNN trained ~3 s, 16 test images it classifies
    correctly, and the 24 correct ones (of 500) it is least confident about."""
    data = advx.get_dataset("mnist")
    (x, y), (x_test, y_test) = data.load("train"), data.load("test")
    x, y, x_test, y_test = x[:4000], y[:4000], x_test[:500], y_test[:500]
    model = train_small_cnn(x, y, widths=(8, 16), kernel=5, padding=0, epochs=2, batch=100,
                            lr=1e-2)
    with torch.no_grad():
        probability = model(x_test).softmax(1)
    correct = probability.argmax(1) == y_test
    assert correct.float().mean() > 0.85
    confidence = torch.where(correct, probability[torch.arange(len(y_test)), y_test], 2.0)
    weak = confidence.argsort()[:24]
    first = correct.nonzero().squeeze(1)[:16]
    return model, x_test[first], y_test[first], x_test[weak], y_test[weak]


def _l0(eps=None, targeted=False):
    return advx.ThreatModel(norm="l0", eps=eps, targeted=targeted)


# -- one-pixel --------------------------------------------------------------------------------

@pytest.mark.parametrize("pixels, fooled_at_least", [(1, 8), (5, 12)])
def test_one_pixel_fools_weak_samples_within_n_pixels(mnist, pixels, fooled_at_least):
    model, *_, x, y = mnist
    attack = advx.get_attack("one-pixel", population=50, iterations=20)
    result = attack(model, x, y, _l0(pixels))
    assert int(result.success.sum()) >= fooled_at_least  # measured: 14 and 18 of 24
    changed = (result.x_adv != x).any(1).flatten(1).sum(1)
    assert int(changed.max()) <= pixels
    fooled_early = result.success & (result.queries < 50 * 21)
    assert bool(fooled_early.any())  # fooled samples stop early
    assert bool((result.queries[~result.success] == 50 * 21).all())


def test_one_pixel_budget_is_exact(mnist):
    model, *_, x, y = mnist
    attack = advx.get_attack("one-pixel", population=20, iterations=100, queries=130)
    result = attack(model, x, y, _l0(1))
    assert int(result.queries.max()) == 130  # 20 + 5 * 20 + a last partial generation of 10
    assert bool((result.queries[~result.success] == 130).all())
    assert bool((result.queries % 10 == 0).all())


def test_one_pixel_targeted_reports_the_target(mnist):
    model, *_, x, y = mnist
    targets = (y + 1) % 10
    attack = advx.get_attack("one-pixel", population=30, iterations=10)
    result = attack(model, x, y, _l0(5, targeted=True), targets=targets)
    assert bool((result.pred[result.success] == targets[result.success]).all())


# -- boundary ---------------------------------------------------------------------------------

def test_boundary_shrinks_the_start_and_stays_adversarial(mnist):
    model, x, y, *_ = mnist
    threat = advx.ThreatModel(norm="l2")
    queries = torch.zeros(len(x), dtype=torch.int64)
    rng = SampleStreams.from_seed(3, len(x))
    start, walking = blended_start(model, x, y, threat, queries, rng, draws=100,
                                   search_steps=10)
    # uniform noise is misclassified for nearly every digit within 100 draws (measured: 15
    # of 16 with these streams; a digit without a start is returned as x, unwalked)
    assert len(walking) >= len(x) - 2
    result = advx.get_attack("boundary", queries=1500)(model, x, y, threat, seed=3)
    assert bool(result.success[walking].all())
    start_median = float(threat.distance(x[walking], start[walking]).median())
    final_median = float(result.distance[walking].median())
    assert final_median < 0.8 * start_median  # measured: 9.08 -> 5.87
    assert bool((result.distance <= threat.distance(x, start) + 1e-5).all())
    assert bool((result.queries[walking] == 1500).all())


def test_boundary_budget_and_eps_stop(mnist):
    model, x, y, *_ = mnist
    result = advx.get_attack("boundary", queries=40)(model, x, y, advx.ThreatModel(norm="l2"))
    assert int(result.queries.max()) == 40  # 1 clean check + draws + 10 blend steps + walk
    assert bool((result.queries[result.success] == 40).all())
    # Samples whose 29 allowed noise draws all failed have no start: x, 30 queries.
    assert bool((result.queries[~result.success] == 30).all())
    far = advx.ThreatModel(norm="l2", eps=20.0)  # every noise start is already within eps
    result = advx.get_attack("boundary", queries=500)(model, x, y, far)
    assert int(result.success.sum()) >= 15  # one digit's noise draws all look like it
    # no walk: decided at the start (1 clean check, at most 100 noise draws, 10 blend steps)
    assert bool((result.queries[result.success] <= 1 + 100 + 10).all())


def test_boundary_targeted_without_start_returns_x():
    model = build_network("conv", 1)
    x, y, targets = random_batch(n=8)
    threat = advx.ThreatModel(norm="l2", targeted=True)
    result = advx.get_attack("boundary", queries=200, init_draws=3)(model, x, y, threat,
                                                                    targets=targets)
    unchanged = (result.x_adv == x).flatten(1).all(1)
    assert bool((result.success | unchanged).all())
    assert bool((result.pred[result.success] == targets[result.success]).all())


# -- salt-and-pepper and pointwise ------------------------------------------------------------

def test_pointwise_is_sparser_than_its_salt_and_pepper_start(mnist):
    model, x, y, *_ = mnist
    start = advx.get_attack("salt-and-pepper", steps=100)(model, x, y, _l0(), seed=1)
    result = advx.get_attack("pointwise", init_steps=100)(model, x, y, _l0(), seed=1)
    assert bool(start.success.all()) and bool(result.success.all())
    assert bool((result.distance <= start.distance).all())  # same seed: the same start
    assert float(result.distance.median()) < 0.25 * float(start.distance.median())  # 20 vs 186


def test_pointwise_budget_and_binary_search(mnist):
    model, x, y, *_ = mnist
    capped = advx.get_attack("pointwise", queries=60)(model, x, y, _l0(), seed=1)
    assert int(capped.queries.max()) <= 60 and bool(capped.success.all())
    plain = advx.get_attack("pointwise", init_steps=60)(model, x, y, _l0(), seed=2)
    searched = advx.get_attack("pointwise", init_steps=60, search_steps=4)(model, x, y, _l0(),
                                                                           seed=2)
    assert torch.equal(plain.distance, searched.distance)  # the search keeps L0 ...
    l2 = advx.ThreatModel(norm="l2")
    assert bool((l2.distance(x, searched.x_adv) <= l2.distance(x, plain.x_adv) + 1e-6).all())
    assert bool(searched.success.all())  # ... and lowers L2 while staying adversarial


def test_salt_and_pepper_gets_sparser_with_more_draws_and_only_moves_pixels_far(mnist):
    model, x, y, *_ = mnist
    few = advx.get_attack("salt-and-pepper", steps=30)(model, x, y, _l0(), seed=0)
    many = advx.get_attack("salt-and-pepper", steps=300)(model, x, y, _l0(), seed=0)
    assert bool(many.success.all())
    assert float(many.distance.sum()) < 0.8 * float(few.distance.sum())
    assert int(few.queries.max()) <= 31 and int(many.queries.max()) <= 301
    change = (many.x_adv - x).abs()
    assert bool((change[change > 0] >= 0.5).all())  # no pixel bought for a small change
    assert bool(((many.x_adv == 0) | (many.x_adv == 1) | (change == 0)).all())


# -- noise baselines --------------------------------------------------------------------------

@pytest.mark.parametrize("name, norm, eps", [("gaussian-noise", "l2", 3.0),
                                             ("uniform-noise", "linf", 0.3)])
def test_noise_stays_within_eps_and_more_draws_only_help(mnist, name, norm, eps):
    model, *_, x, y = mnist
    threat = advx.ThreatModel(norm=norm, eps=eps)
    one = advx.get_attack(name)(model, x, y, threat, seed=4)
    many = advx.get_attack(name, repeats=20)(model, x, y, threat, seed=4)
    assert bool((one.distance <= eps * (1 + 1e-5)).all())
    assert bool((many.distance <= eps * (1 + 1e-5)).all())
    assert bool((one.queries == 1).all()) and int(many.queries.max()) <= 20
    assert bool((many.success >= one.success).all())  # the first draw is shared
    assert bool((many.queries[one.success] == 1).all())


# -- every attack -----------------------------------------------------------------------------

SMALL = {"one-pixel": ({"population": 10, "iterations": 3}, "l0", 3),
         "boundary": ({"queries": 100}, "l2", None),
         "pointwise": ({"init_steps": 20}, "l0", None),
         "salt-and-pepper": ({"steps": 40}, "l0", None),
         "gaussian-noise": ({"repeats": 3}, "l2", 2.0),
         "uniform-noise": ({"repeats": 3}, "linf", 0.2)}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_output_other_seed_differs(mnist, name):
    model, x, y, *_ = mnist
    params, norm, eps = SMALL[name]
    attack = advx.get_attack(name, **params)
    threat = advx.ThreatModel(norm=norm, eps=eps)
    first, again, other = (attack(model, x, y, threat, seed=s) for s in (5, 5, 6))
    assert torch.equal(first.x_adv, again.x_adv)
    assert torch.equal(first.queries, again.queries)
    assert not torch.equal(first.x_adv, other.x_adv)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_any_bounds(name):
    """On inputs in [-1, 3] every attack stays in the bounds and changes something."""
    params, norm, eps = SMALL[name]
    x, y, _ = random_batch(n=6, channels=3)
    x = 4 * x - 1
    network = build_network("conv", 3)
    model = torch.nn.Sequential(_Affine(), network)
    threat = advx.ThreatModel(norm=norm, eps=None if eps is None else 4 * eps,
                              bounds=(-1, 3))
    result = advx.get_attack(name, **params)(model, x, y, threat)
    assert float(result.x_adv.min()) >= -1 and float(result.x_adv.max()) <= 3
    assert bool((result.queries > 0).all())


class _Affine(torch.nn.Module):
    def forward(self, x):
        return (x + 1) / 4


# -- the contract's new check catches an attack that reads gradients --------------------------

@attrs.frozen(kw_only=True)
class _Peeking(advx.FixedEpsilonAttack):
    """Claims score access but takes an FGSM step."""

    name = "peeking"
    norms = frozenset({"linf"})
    access = "score"

    def run(self, model, x, y, threat, *, targets, rng):
        grad, _ = objective_gradient(model, x, y, threat.targeted)
        x_adv = ascent_step("linf", projection_onto(threat, x), x, grad, threat.eps)
        return x_adv, torch.ones(len(x), dtype=torch.int64)


class _Honest(_Peeking):
    """The same attack declared with gradient access."""

    access = "gradient"


def _contract(cls):
    class Contract(AttackContract):
        def make_attack(self):
            return cls()

    return Contract()


def test_contract_catches_a_black_box_attack_that_reads_gradients():
    with pytest.raises(AssertionError, match="backward"):
        _contract(_Peeking).test_black_box_never_reads_gradients(("linf", False))
    with pytest.raises(pytest.skip.Exception):
        _contract(_Honest).test_black_box_never_reads_gradients(("linf", False))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builtin_black_box_attacks_pass_the_new_contract_check(name):
    params, norm, _ = SMALL[name]
    contract = type("C", (AttackContract,), {"attack_name": name, "attack_params": params})()
    cls = type(contract.make_attack())
    for targeted in (False, True) if cls.supports_targeted else (False,):
        contract.test_black_box_never_reads_gradients((norm, targeted))
