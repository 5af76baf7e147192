"""The built-in gradient attacks: hand-computed cases, strength orderings and a peer oracle."""

import advx
import pytest
import torch

from .small_cnn import train_toy_mlp

EPS = 0.2  # on the toy model below this leaves a mix of fooled and unfooled samples


@pytest.fixture(autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only add synchronisation cost
    yield
    torch.set_num_threads(previous)


def _toy_data():
    """Small learnable images: the ``synthetic`` dataset, or inline blobs where it is absent."""
    try:
        data = advx.get_dataset("synthetic", size=10, n_train=1024, n_test=200, noise=0.2)
        return data.load("train"), data.load("test")
    except advx.UnknownPluginError:
        generator = torch.Generator().manual_seed(0)
        templates = (torch.rand(10, 1, 10, 10, generator=generator) > 0.7).float()

        def sample(n):
            y = torch.randint(0, 10, (n,), generator=generator)
            noise = 0.2 * torch.randn(n, 1, 10, 10, generator=generator)
            return (templates[y] + noise).clamp(0, 1), y

        return sample(1024), sample(200)


@pytest.fixture(scope="module")
def toy():
    """``(model, x_test, y_test)``: an MLP trained for about a second, in eval mode."""
    torch.set_num_threads(1)
    (x, y), (x_test, y_test) = _toy_data()
    return train_toy_mlp(x, y, x_test, y_test)


def _linf(eps=EPS, targeted=False):
    return advx.ThreatModel(norm="linf", eps=eps, targeted=targeted)


def _robust_accuracy(result):
    return 1 - result.success.float().mean().item()


class TestFGSM:
    """FGSM takes exactly one signed (linf) or normalised (l2) step of length eps."""

    @staticmethod
    def _two_class_linear():
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
        with torch.no_grad():
            model[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.0, 0.5], [-1.0, 1.0, 0.0, -0.5]]))
        return model

    @pytest.mark.parametrize("targeted", [False, True])
    def test_hand_computed_linf_step(self, targeted):
        # Two classes: the CE gradient is p_other * (W_other - W_true), so the step is
        # eps * sign(W_other - W_true) = [-1, 1, 0, -1] for y = 0 and its negative for y = 1.
        # Targeting the other class descends CE(target) along the same direction.
        x = torch.tensor([[0.0625, 0.5, 0.75, 0.9375], [0.5, 0.0625, 0.25, 0.9375]])
        x = x.view(2, 1, 1, 4)
        y = torch.tensor([0, 1])
        targets = 1 - y if targeted else None
        result = advx.get_attack("fgsm")(self._two_class_linear(), x, y, _linf(0.125, targeted),
                                         targets=targets)
        expected = torch.tensor([[0.0, 0.625, 0.75, 0.8125], [0.625, 0.0, 0.25, 1.0]])
        assert torch.equal(result.x_adv, expected.view(2, 1, 1, 4))
        assert result.queries.tolist() == [1, 1]

    def test_l2_step_has_length_eps_when_unclipped(self, toy):
        model, x, y = toy
        x = x[:20] * 0.5 + 0.25  # far enough from the bounds that nothing is clipped
        threat = advx.ThreatModel(norm="l2", eps=0.1)
        result = advx.get_attack("fgsm")(model, x, y[:20], threat)
        torch.testing.assert_close(result.distance, torch.full((20,), 0.1), rtol=1e-5, atol=0)


class TestBIM:
    """BIM: iterative FGSM from x, default step 1.25 eps / steps, targeted mode."""

    def test_targeted_reaches_the_target_more_often_than_chance(self, toy):
        model, x, y = toy
        generator = torch.Generator().manual_seed(1)
        targets = (y + torch.randint(1, 10, y.shape, generator=generator)) % 10
        result = advx.get_attack("bim")(model, x, y, _linf(targeted=True), targets=targets)
        assert result.success.float().mean() > 0.2  # chance is 0.1
        assert bool((result.pred[result.success] == targets[result.success]).all())

    def test_default_step_follows_kurakin(self, toy):
        model, x, y = toy
        default = advx.get_attack("bim", steps=8)(model, x, y, _linf())
        explicit = advx.get_attack("bim", steps=8, step_size=1.25 * EPS / 8)(model, x, y, _linf())
        assert torch.equal(default.x_adv, explicit.x_adv)

    def test_is_pgd_without_random_start(self, toy):
        model, x, y = toy
        bim = advx.get_attack("bim", steps=7, step_size=0.03)(model, x, y, _linf())
        pgd = advx.get_attack("pgd", steps=7, step_size=0.03, random_start=False)
        assert torch.equal(bim.x_adv, pgd(model, x, y, _linf()).x_adv)


class TestPGD:
    """PGD: random starts inside the ball, restarts never weaker, stronger than FGSM."""

    def test_restarts_are_never_weaker_per_sample(self, toy):
        model, x, y = toy
        params = {"steps": 10, "rel_step_size": 0.25}
        single = advx.get_attack("pgd", **params)(model, x, y, _linf(), seed=3)
        several = advx.get_attack("pgd", restarts=4, **params)(model, x, y, _linf(), seed=3)
        assert bool((several.success >= single.success).all())
        assert several.success.sum() > single.success.sum()  # the extra restarts found some
        neither = ~several.success
        loss = torch.nn.functional.cross_entropy
        with torch.no_grad():
            kept = loss(model(several.x_adv[neither]), y[neither], reduction="none")
            first = loss(model(single.x_adv[neither]), y[neither], reduction="none")
        assert bool((kept >= first - 1e-5).all())
        assert bool((several.queries >= single.queries).all())
        assert several.queries.max() == 4 * 11 and single.queries.max() == 10

    def test_stronger_than_fgsm(self, toy):
        # Madry's default step (eps/30) lets 40 steps travel only 1.33 eps from a random start,
        # which on this nearly linear model can trail FGSM's jump to the corner; a larger step
        # (2.5 eps / steps, Madry's CIFAR rule) is the fair comparison.
        model, x, y = toy
        fgsm = advx.get_attack("fgsm")(model, x, y, _linf())
        pgd = advx.get_attack("pgd", rel_step_size=2.5 / 40)(model, x, y, _linf())
        assert _robust_accuracy(pgd) <= _robust_accuracy(fgsm)
        assert bool((pgd.success | ~fgsm.success).float().mean() > 0.9)

    @pytest.mark.parametrize("norm, eps", [("linf", EPS), ("l2", 1.5)])
    def test_seed_drives_the_random_start(self, toy, norm, eps):
        model, x, y = toy
        threat = advx.ThreatModel(norm=norm, eps=eps)
        attack = advx.get_attack("pgd", steps=2)
        first, again, other = (attack(model, x, y, threat, seed=s).x_adv for s in (1, 1, 2))
        assert torch.equal(first, again) and not torch.equal(first, other)

    def test_rel_step_size_scales_with_eps(self, toy):
        model, x, y = toy
        relative = advx.get_attack("pgd", steps=5, rel_step_size=0.1, random_start=False)
        absolute = advx.get_attack("pgd", steps=5, step_size=0.1 * EPS, random_start=False)
        assert torch.equal(relative(model, x, y, _linf()).x_adv,
                           absolute(model, x, y, _linf()).x_adv)

    @pytest.mark.parametrize("params", [{"steps": 0}, {"steps": 2.5}, {"step_size": -0.1},
                                        {"rel_step_size": 0}, {"restarts": 0},
                                        {"restarts": 2, "random_start": False}])
    def test_invalid_parameters(self, params):
        with pytest.raises(advx.ParameterError):
            advx.get_attack("pgd", **params)


class TestAgainstTorchattacks:
    """Differential tests against torchattacks 3.5 (a test-only oracle; skipped when absent).

    torchattacks' PGD returns the final iterate, advx's the first iterate that fools the model.
    So torchattacks is run for every step count k = 0..K (without random start each run is a
    prefix of the longest one): for each sample advx must equal torchattacks' iterate at the
    first k that fools the model, or the K-th iterate if none does. Both use CE loss (sum vs
    mean only rescales the gradient, not its sign) and the same clamp order.
    """

    def test_fgsm_equals_torchattacks(self, toy):
        torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed")
        model, x, y = toy
        ours = advx.get_attack("fgsm")(model, x, y, _linf()).x_adv
        assert torch.equal(ours, torchattacks.FGSM(model, eps=EPS)(x, y))

    @pytest.mark.parametrize("targeted", [False, True])
    def test_pgd_equals_torchattacks_iterates(self, toy, targeted):
        torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed")
        model, x, y = toy
        steps, alpha = 10, 0.02
        targets = (y + 1) % 10
        labels = targets if targeted else y
        iterates = []
        for k in range(steps + 1):
            peer = torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=k, random_start=False)
            if targeted:
                peer.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 10)
            iterates.append(peer(x, y))
        with torch.no_grad():
            preds = torch.stack([model(it).argmax(1) for it in iterates])
        hits = preds == labels if targeted else preds != labels
        first = torch.where(hits.any(0), hits.int().argmax(0), steps)
        expected = torch.stack(iterates)[first, torch.arange(len(x))]
        attack = advx.get_attack("pgd", steps=steps, step_size=alpha, random_start=False)
        threat = _linf(targeted=targeted)
        result = attack(model, x, y, threat, targets=targets if targeted else None)
        assert 0 < int(hits.any(0).sum()) < len(x)  # both kinds of samples are compared
        torch.testing.assert_close(result.x_adv, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name, travel", [("pgd", 2.5), ("bim", 1.25)])
def test_default_step_size_travels_a_fixed_multiple_of_eps(toy, name, travel):
    model, x, y = toy
    params = {"random_start": False} if name == "pgd" else {}
    default = advx.get_attack(name, steps=4, **params)
    explicit = advx.get_attack(name, steps=4, step_size=travel * EPS / 4, **params)
    assert torch.equal(default(model, x, y, _linf()).x_adv, explicit(model, x, y, _linf()).x_adv)
    other = advx.get_attack(name, steps=4, step_size=0.5 * travel * EPS / 4, **params)
    assert not torch.equal(default(model, x, y, _linf()).x_adv, other(model, x, y, _linf()).x_adv)
