"""CW-L2, CW-Linf, DeepFool and DDN on a small CNN trained briefly on the MNIST sample."""

import functools

import advx
import pytest
import torch
from advx.plugins.attacks._margin import margin
from advx.plugins.attacks.cw import _TanhBox
from hypothesis import given, settings
from hypothesis import strategies as st

from .small_cnn import mnist_small_cnn

N = 64
# Budgets that keep this module fast; cw-l2's default is 9 rounds of 100 steps.
CW_L2 = {"steps": 100, "binary_search_steps": 5}
UNBOUNDED_L2 = advx.ThreatModel(norm="l2")


@functools.cache
def trained_mnist_cnn():
    """``(model, x, y)``: a small CNN trained one epoch on 2,000 sample digits (~2 s, ~86%
    test accuracy), and the first N test digits.  Cached: the differential tests reuse it."""
    return mnist_small_cnn(N)[:3]


def correct_mask(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) == y


def median_distance(result, mask):
    """Median over the samples of ``mask``; unsuccessful samples count as infinitely far."""
    inf = torch.full_like(result.distance, float("inf"))
    return float(torch.where(result.success, result.distance, inf)[mask].median())


@pytest.fixture(scope="module")
def mnist():
    model, x, y = trained_mnist_cnn()
    correct = correct_mask(model, x, y)
    assert correct.float().mean() > 0.75
    return model, x, y, correct


@pytest.fixture(scope="module")
def unbounded(mnist):
    """Each minimisation attack's untargeted result on the batch, computed once."""
    model, x, y, _ = mnist
    attacks = {"cw-l2": advx.get_attack("cw-l2", **CW_L2), "ddn": advx.get_attack("ddn"),
               "deepfool": advx.get_attack("deepfool")}
    return {name: attack(model, x, y, UNBOUNDED_L2) for name, attack in attacks.items()}


@pytest.fixture(scope="module")
def pgd_baseline(mnist):
    return pgd_minimal_eps(*mnist[:3])


def pgd_minimal_eps(model, x, y):
    """Per sample the smallest eps on a 0.1 grid at which PGD-L2 (10 steps) fools the model."""
    best = torch.full((len(x),), float("inf"))
    for eps in torch.arange(3.0, 0.05, -0.1).tolist():
        result = advx.get_attack("pgd", steps=10, random_start=False)(
            model, x, y, advx.ThreatModel(norm="l2", eps=eps))
        best = torch.where(result.success, eps, best)
    return best


def fgsm_line_search(model, x, y):
    """Per sample the smallest L2 distance along the clipped normalised CE gradient that fools."""
    leaf = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(leaf), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, leaf)
    direction = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    best = torch.full((len(x),), float("inf"))
    with torch.no_grad():
        for length in torch.arange(8.0, 0.0, -0.05).tolist():
            x_adv = (x + length * direction).clamp(0, 1)
            fooled = model(x_adv).argmax(1) != y
            best = torch.where(fooled, (x_adv - x).flatten(1).norm(dim=1), best)
    return best


class TestUnbounded:
    """Without eps every attack fools (nearly) every correctly classified digit, closely."""

    @pytest.mark.parametrize("name", ["cw-l2", "ddn", "deepfool"])
    def test_fools_nearly_all(self, mnist, unbounded, name):
        *_, correct = mnist
        assert unbounded[name].success[correct].float().mean() >= 0.95

    @pytest.mark.parametrize("name", ["cw-l2", "ddn"])
    def test_smaller_than_pgd_minimal_eps(self, mnist, unbounded, pgd_baseline, name):
        *_, correct = mnist
        baseline = float(pgd_baseline[correct].median())
        ours = median_distance(unbounded[name], correct)
        assert ours < baseline, f"{name} median L2 {ours:.3f} >= PGD's minimal eps {baseline:.3f}"

    def test_deepfool_smaller_than_fgsm_line_search(self, mnist, unbounded):
        model, x, y, correct = mnist
        baseline = float(fgsm_line_search(model, x, y)[correct].median())
        ours = median_distance(unbounded["deepfool"], correct)
        assert ours < baseline, f"deepfool median L2 {ours:.3f} >= FGSM's {baseline:.3f}"

    def test_deepfool_linf_fools_all(self, mnist):
        model, x, y, correct = mnist
        result = advx.get_attack("deepfool")(model, x, y, advx.ThreatModel(norm="linf"))
        assert bool(result.success[correct].all())
        assert float(result.distance[correct].median()) < 0.3

    def test_queries(self, unbounded):
        assert bool((unbounded["cw-l2"].queries == 5 * 100 + 1).all())
        assert bool((unbounded["ddn"].queries == 100).all())
        deepfool = unbounded["deepfool"].queries
        assert bool((deepfool >= 1).all()) and bool((deepfool <= 2 * 50 + 1).all())

    def test_eps_makes_far_results_failures(self, mnist, unbounded):
        model, x, y, correct = mnist
        eps = median_distance(unbounded["ddn"], correct)
        result = advx.get_attack("ddn")(model, x, y, advx.ThreatModel(norm="l2", eps=eps))
        assert bool((result.distance <= eps * (1 + 1e-5) + 1e-6).all())
        assert 0.3 < result.success[correct].float().mean() < 1


@pytest.mark.parametrize("name, params", [("cw-l2", CW_L2), ("ddn", {})])
def test_targeted_reaches_the_target(mnist, name, params):
    model, x, y, correct = mnist
    x, y = x[:32][correct[:32]], y[:32][correct[:32]]
    targets = (y + 1 + torch.arange(len(y)) % 9) % 10
    threat = advx.ThreatModel(norm="l2", targeted=True)
    result = advx.get_attack(name, **params)(model, x, y, threat, targets=targets)
    assert result.success.float().mean() >= 0.95
    assert torch.equal(result.pred[result.success], targets[result.success])


@pytest.mark.parametrize("name, norm", [("deepfool", "l2"), ("deepfool", "linf"),
                                        ("ddn", "l2"), ("cw-l2", "l2")])
def test_already_misclassified_inputs_cost_nothing(mnist, name, norm):
    model, x, y, _ = mnist
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 10  # labels the model gets wrong on every input
    params = {"steps": 2, "binary_search_steps": 1} if name == "cw-l2" else {}
    result = advx.get_attack(name, **params)(model, x, wrong, advx.ThreatModel(norm=norm))
    assert bool(result.success.all())
    assert torch.equal(result.x_adv, x)
    if name == "deepfool":
        assert bool((result.queries == 1).all())  # one forward pass, no gradient


class TestCarliniWagnerL2:
    """Pixels exactly on a bound must be able to move (torchattacks' atanh bug)."""

    def test_tanh_space_gradient_is_nonzero_on_the_bounds(self):
        box = _TanhBox((0.0, 1.0))
        x = torch.tensor([0.0, 1.0, 0.5])
        w = box.to_w(x).requires_grad_(True)
        assert bool(torch.isfinite(w).all())
        (grad,) = torch.autograd.grad(box.to_x(w).sum(), w)
        assert bool((grad > 0).all())
        torch.testing.assert_close(box.to_x(w).detach(), x, atol=1e-4, rtol=0)

    def test_moves_pixels_exactly_on_the_bounds(self, mnist):
        model, x, y, _ = mnist
        x = (x[:32] > 0.5).to(x.dtype)  # binarised: every pixel is exactly 0 or 1
        keep = correct_mask(model, x, y[:32])
        x, y = x[keep], y[:32][keep]
        result = advx.get_attack("cw-l2", steps=50, binary_search_steps=3)(
            model, x, y, UNBOUNDED_L2)
        assert result.success.float().mean() >= 0.9
        change = (result.x_adv - x).abs()
        assert bool((change[x == 0] > 0.1).any()) and bool((change[x == 1] > 0.1).any())

    def test_confidence_is_reached(self, mnist):
        model, x, y, correct = mnist
        x, y = x[:16][correct[:16]], y[:16][correct[:16]]
        attack = advx.get_attack("cw-l2", steps=50, binary_search_steps=3, confidence=2.0)
        result = attack(model, x, y, UNBOUNDED_L2)
        with torch.no_grad():
            margins = margin(model(result.x_adv), y, targeted=False)
        assert result.success.float().mean() >= 0.9
        assert bool((margins[result.success] >= 2.0 - 1e-4).all())


class TestCarliniWagnerLinf:
    """PGD on the margin: with kappa > 0 results lie kappa past the boundary."""

    THREAT = advx.ThreatModel(norm="linf", eps=0.3)

    # Every digit here can reach a margin of ~2.9 inside the ball; a success short of an
    # unreachable kappa is still returned (it is adversarial), so kappa stays below that.
    @settings(max_examples=6, deadline=None)
    @given(kappa=st.floats(0.25, 2.5), seed=st.integers(0, 2**16))
    def test_successes_reach_the_confidence(self, mnist, kappa, seed):
        model, x, y, _ = mnist
        x, y = x[:32], y[:32]
        result = advx.get_attack("cw-linf", steps=50, confidence=kappa)(
            model, x, y, self.THREAT, seed=seed)
        with torch.no_grad():
            margins = margin(model(result.x_adv), y, targeted=False)
        assert result.success.float().mean() > 0.8
        assert bool((margins[result.success] >= kappa - 1e-4).all())

    def test_confidence_raises_the_margin(self, mnist):
        model, x, y, correct = mnist
        medians = []
        for kappa in (0.0, 10.0):
            result = advx.get_attack("cw-linf", confidence=kappa)(model, x, y, self.THREAT)
            assert bool(result.success[correct].all())
            with torch.no_grad():
                medians.append(float(margin(model(result.x_adv), y, False)[correct].median()))
        assert medians[0] < 1.0 and medians[1] > 5.0, medians

    def test_targeted_and_restarts(self, mnist):
        model, x, y, correct = mnist
        targets = (y + 3) % 10
        threat = advx.ThreatModel(norm="linf", eps=0.15, targeted=True)
        single = advx.get_attack("cw-linf", steps=20)(model, x, y, threat, targets=targets)
        several = advx.get_attack("cw-linf", steps=20, restarts=3)(
            model, x, y, threat, targets=targets)
        assert bool((several.success >= single.success).all())
        assert bool((several.pred[several.success] == targets[several.success]).all())


class TestDeepFool:
    """The overshoot scales the total perturbation, as in the reference code and Foolbox."""

    @staticmethod
    def _bilinear():
        """Two classes on 2-pixel inputs: logit 1 is x2 + 4 x1 (x2 - 0.5) - 0.9, logit 0 is 0.

        From (0.05, 0.3) the first step lowers x1 below 0 (clipped); the second raises it.
        """
        class Bilinear(torch.nn.Module):
            def forward(self, x):
                u = x.flatten(1)
                h = u[:, 1] + 4 * u[:, 0] * (u[:, 1] - 0.5) - 0.9
                return torch.stack([torch.zeros_like(h), h], 1)

        return Bilinear()

    @staticmethod
    def _reference(model, x, overshoot, on_total):
        """Per-sample DeepFool for two classes; overshoot on the total or on each step."""
        x_adv, total = x.clone(), torch.zeros_like(x)
        for _ in range(50):
            leaf = x_adv.clone().requires_grad_(True)
            logits = model(leaf)
            if logits.argmax(1).item() != 0:
                break
            (grad,) = torch.autograd.grad(logits[0, 1] - logits[0, 0], leaf)
            length = grad.norm() + 1e-8
            step = ((logits[0, 0] - logits[0, 1]).detach() / length + 1e-4) / length * grad
            total += step
            moved = x + (1 + overshoot) * total if on_total else x_adv + (1 + overshoot) * step
            x_adv = moved.clamp(0, 1)
        return x_adv

    @pytest.mark.parametrize("overshoot", [0.02, 0.3])
    def test_overshoot_scales_the_total(self, overshoot):
        model = self._bilinear()
        x = torch.tensor([0.05, 0.3]).view(1, 1, 1, 2)
        y = torch.tensor([0])
        result = advx.get_attack("deepfool", overshoot=overshoot)(model, x, y, UNBOUNDED_L2)
        on_total = self._reference(model, x, overshoot, on_total=True)
        per_step = self._reference(model, x, overshoot, on_total=False)
        assert bool(result.success.all())
        torch.testing.assert_close(result.x_adv, on_total, atol=1e-6, rtol=0)
        assert not torch.allclose(on_total, per_step, atol=1e-3)

    def test_linear_model_one_step_to_the_boundary(self):
        """On an affine model the first step lands exactly (1 + overshoot) past the boundary."""
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        with torch.no_grad():
            model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]))
            model[1].bias.zero_()
        x = torch.tensor([[0.6, 0.3, 0.1, 0.1]]).view(1, 1, 2, 2)
        result = advx.get_attack("deepfool", overshoot=0.1)(model, x, torch.tensor([0]),
                                                              UNBOUNDED_L2)
        # Class 1: |0.6 - 0.3| / sqrt(2) = 0.2121 beats class 2: 0.4 / sqrt(3) = 0.2309.
        expected = 1.1 * (0.3 / 2 ** 0.5 + 1e-4)
        torch.testing.assert_close(result.distance, torch.tensor([expected]), atol=1e-6, rtol=0)
        assert result.pred.tolist() == [1] and result.queries.tolist() == [2]  # 1 step, 1 check

    def test_candidates_limit_the_classes(self, mnist):
        model, x, y, correct = mnist
        two = advx.get_attack("deepfool", candidates=2)(model, x, y, UNBOUNDED_L2)
        every = advx.get_attack("deepfool")(model, x, y, UNBOUNDED_L2)
        assert two.success[correct].float().mean() >= 0.9
        assert median_distance(every, correct) <= median_distance(two, correct) * 1.05


@pytest.mark.parametrize("name, params", [
    ("deepfool", {"candidates": 1}),
    ("deepfool", {"overshoot": -0.1}), ("deepfool", {"steps": 0}),
    ("cw-l2", {"lr": 0}), ("cw-l2", {"confidence": -1}), ("cw-l2", {"binary_search_steps": 0}),
    ("cw-linf", {"restarts": 2, "random_start": False}), ("cw-linf", {"step_size": 0}),
    ("ddn", {"gamma": 1.0}), ("ddn", {"init_epsilon": 0}), ("ddn", {"steps": 1.5}),
])
def test_invalid_parameters(name, params):
    with pytest.raises(advx.ParameterError):
        advx.get_attack(name, **params)
