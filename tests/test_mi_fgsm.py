"""MI-FGSM: against torchattacks and a plain reference loop, and its reduction to BIM."""

import advx
import pytest
import torch

from .small_cnn import train_toy_mlp

EPS = 0.2  # on the toy model below this leaves a mix of fooled and unfooled samples
STEPS = 10


@pytest.fixture(scope="module")
def toy():
    """``(model, x_test, y_test)``: a seeded MLP on the synthetic dataset, in eval mode."""
    data = advx.get_dataset("synthetic", size=10, n_train=1024, n_test=200, noise=0.2)
    return train_toy_mlp(*data.load("train"), *data.load("test"))


def _threat(norm="linf", eps=EPS, targeted=False):
    return advx.ThreatModel(norm=norm, eps=eps, targeted=targeted)


def _first_fooling(model, iterates, labels, targeted):
    """Per sample, the first of ``iterates`` (step counts 0..K) that fools the model, else
    the K-th, and whether any fools it: what an early-stopping attack returns."""
    with torch.no_grad():
        preds = torch.stack([model(it).argmax(1) for it in iterates])
    hits = preds == labels if targeted else preds != labels
    first = torch.where(hits.any(0), hits.int().argmax(0), len(iterates) - 1)
    return torch.stack(iterates)[first, torch.arange(len(labels))], hits.any(0)


def _reference_iterates(model, x, labels, *, norm, eps, step, decay, targeted):
    """Dong et al.'s iterates 0..STEPS, written out plainly (no early stop, one sample at a
    time for the norms, so that nothing is shared with the batched implementation)."""
    momentum, x_adv, iterates = torch.zeros_like(x), x.clone(), [x.clone()]
    for _ in range(STEPS):
        leaf = x_adv.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(model(leaf), labels, reduction="sum")
            grad = torch.autograd.grad(-loss if targeted else loss, leaf)[0]
        for i in range(len(x)):
            momentum[i] = decay * momentum[i] + grad[i] / grad[i].abs().sum()
            direction = momentum[i].sign() if norm == "linf" else (
                momentum[i] / momentum[i].norm())
            moved = x_adv[i] + step * direction
            if norm == "linf":
                moved = torch.minimum(torch.maximum(moved, x[i] - eps), x[i] + eps)
            else:
                delta = moved - x[i]
                moved = x[i] + delta * min(1.0, eps / float(delta.norm()))
            x_adv[i] = moved.clamp(0, 1)
        iterates.append(x_adv.clone())
    return iterates


class TestAgainstTorchattacks:
    """torchattacks 3.5's MIFGSM (a test-only oracle; skipped when absent), linf.

    torchattacks returns the final iterate, advx the first that fools the model, so
    torchattacks is run for every step count k = 0..K (each run is a prefix of the longest)
    and advx must equal, per sample, the iterate at the first k that fools the model, else the
    K-th.  torchattacks divides the gradient by its mean absolute value, advx by its L1 norm:
    the momenta differ by the constant factor d, so their signs agree.  The clamps differ in
    order (torchattacks clips x_adv - x to eps, then x + delta to the bounds), which changes
    coordinates by at most one float32 rounding: hence ``atol=1e-6``.
    """

    @pytest.mark.parametrize("targeted", [False, True])
    def test_equals_torchattacks_iterates(self, toy, targeted):
        torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed")
        model, x, y = toy
        alpha, decay = 0.02, 1.0
        targets = (y + 1) % 10
        iterates = []
        for k in range(STEPS + 1):
            peer = torchattacks.MIFGSM(model, eps=EPS, alpha=alpha, steps=k, decay=decay)
            if targeted:
                peer.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 10)
            iterates.append(peer(x, y))
        expected, hit = _first_fooling(model, iterates, targets if targeted else y, targeted)
        attack = advx.get_attack("mi-fgsm", steps=STEPS, step_size=alpha, decay=decay)
        result = attack(model, x, y, _threat(targeted=targeted),
                        targets=targets if targeted else None)
        assert 0 < int(hit.sum()) < len(x)  # both kinds of samples are compared
        torch.testing.assert_close(result.x_adv, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm, eps", [("linf", EPS), ("l2", 1.5)])
@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0])
def test_equals_the_reference_loop(toy, norm, eps, decay):
    model, x, y = toy
    step = 1.5 * eps / STEPS
    iterates = _reference_iterates(model, x, y, norm=norm, eps=eps, step=step, decay=decay,
                                   targeted=False)
    expected, hit = _first_fooling(model, iterates, y, False)
    attack = advx.get_attack("mi-fgsm", steps=STEPS, step_size=step, decay=decay)
    result = attack(model, x, y, _threat(norm, eps))
    assert 0 < int(hit.sum()) < len(x)
    torch.testing.assert_close(result.x_adv, expected, rtol=0, atol=1e-5)


class TestReductionToBIM:
    """With decay 0 the momentum is the L1-normalised gradient alone."""

    def test_linf_equals_bim_bit_for_bit(self, toy):
        # sign(g / ||g||_1) == sign(g) exactly: dividing by a positive normal number keeps
        # every sign (the floor on the norm keeps quotients finite and zeros zero).
        model, x, y = toy
        mi = advx.get_attack("mi-fgsm", steps=STEPS, step_size=0.03, decay=0)
        bim = advx.get_attack("bim", steps=STEPS, step_size=0.03)
        ours, theirs = mi(model, x, y, _threat()), bim(model, x, y, _threat())
        assert torch.equal(ours.x_adv, theirs.x_adv)
        assert torch.equal(ours.queries, theirs.queries)

    def test_l2_equals_bim_up_to_rounding(self, toy):
        # (g / ||g||_1) / ||g / ||g||_1||_2 is g / ||g||_2 up to float rounding only.
        model, x, y = toy
        mi = advx.get_attack("mi-fgsm", steps=STEPS, step_size=0.2, decay=0)
        bim = advx.get_attack("bim", steps=STEPS, step_size=0.2)
        threat = _threat("l2", 1.5)
        ours, theirs = mi(model, x, y, threat), bim(model, x, y, threat)
        torch.testing.assert_close(ours.x_adv, theirs.x_adv, rtol=0, atol=1e-5)

    def test_momentum_changes_the_iterates(self, toy):
        model, x, y = toy
        with_momentum = advx.get_attack("mi-fgsm", steps=STEPS, step_size=0.03)
        without = advx.get_attack("mi-fgsm", steps=STEPS, step_size=0.03, decay=0)
        assert not torch.equal(with_momentum(model, x, y, _threat()).x_adv,
                               without(model, x, y, _threat()).x_adv)


def test_default_step_size_is_eps_over_steps(toy):
    model, x, y = toy
    default = advx.get_attack("mi-fgsm", steps=4)(model, x, y, _threat())
    explicit = advx.get_attack("mi-fgsm", steps=4, step_size=EPS / 4)(model, x, y, _threat())
    assert torch.equal(default.x_adv, explicit.x_adv)


def test_targeted_reaches_the_target_more_often_than_chance(toy):
    model, x, y = toy
    targets = (y + torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(1))) % 10
    result = advx.get_attack("mi-fgsm")(model, x, y, _threat(targeted=True), targets=targets)
    assert result.success.float().mean() > 0.2  # chance is 0.1
    assert bool((result.pred[result.success] == targets[result.success]).all())


def test_queries_count_the_passes_until_fooled(toy):
    model, x, y = toy
    # a step of eps / 4: samples fooled in the first steps leave at the check after step 5
    result = advx.get_attack("mi-fgsm", steps=STEPS, step_size=EPS / 4)(model, x, y, _threat())
    assert int(result.queries.max()) == STEPS and int(result.queries.min()) < STEPS
    assert bool((result.queries[~result.success] == STEPS).all())


def test_zero_gradient_does_not_move():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    x = torch.full((2, 1, 2, 2), 0.5)
    y = torch.zeros(2, dtype=torch.int64)
    result = advx.get_attack("mi-fgsm")(model, x, y, _threat())
    assert torch.equal(result.x_adv, x)


@pytest.mark.parametrize("params", [{"steps": 0}, {"step_size": 0}, {"decay": -0.5}])
def test_invalid_parameters(params):
    with pytest.raises(advx.ParameterError):
        advx.get_attack("mi-fgsm", **params)
