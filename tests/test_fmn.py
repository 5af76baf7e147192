"""FMN (Pintor et al., 2021): its bookkeeping on any input, and its strength against Foolbox 3's
FMN attacks (a test-only oracle, skipped when absent) on a briefly trained MNIST CNN.

Foolbox's FMN re-estimates the radius linearly at every step until a first adversarial is
found (advx only at the first step: see advx.plugins.attacks.fmn), and its L2 attack never
projects (3.3.4's projection factor is ``norms / norms``): medians differ for that reason.
adv_lib, the other peer, is not installable here.
"""

import advx
import pytest
import torch
from advx.testing import image_batches, threat_models
from hypothesis import given, settings
from hypothesis import strategies as st

from .small_cnn import mnist_small_cnn

N = 64
STEPS = 100
TOLERANCE = 1.10  # advx's median may exceed Foolbox's by at most 10%


class _Recording(torch.nn.Module):
    """A model that records every batch it is called on (the core's own final call too)."""

    def __init__(self, network):
        super().__init__()
        self.network, self.calls = network, []

    def forward(self, x):
        self.calls.append(x.detach().clone())
        return self.network(x)


def _network(seed, channels):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 5))


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_returns_the_smallest_adversarial_it_queried(data):
    """Whatever the inputs, norm and eps: a sample is fooled exactly when one of its queried
    iterates was adversarial inside the threat model, and then lies at the smallest distance
    of those (never farther than the best one seen); an unfooled one is x; the result stays
    in the box; every sample costs ``steps`` queries."""
    channels = data.draw(st.sampled_from((1, 3)), label="channels")
    x = data.draw(image_batches(channels=(channels,), sizes=(8,)), label="x")
    threat = data.draw(threat_models(bounded=False, targeted=st.booleans()), label="threat")
    model = _Recording(_network(data.draw(st.integers(0, 3), label="seed"), channels))
    with torch.no_grad():
        labels = model.network(x).argmax(1)
    targets = (labels + 1) % 5 if threat.targeted else None
    steps = data.draw(st.integers(1, 12), label="steps")
    result = advx.get_attack("fmn", steps=steps)(model, x, labels, threat, targets=targets)

    queried = model.calls[:-1]  # the core's check of the result is the last call
    assert len(queried) == steps
    with torch.no_grad():
        pred = torch.stack([model.network(q).argmax(1) for q in queried])
    hit = pred == targets if threat.targeted else pred != labels
    hit &= torch.stack([threat.contains(x, q) for q in queried])
    lengths = torch.stack([threat.distance(x, q) for q in queried])
    best = torch.where(hit, lengths, torch.inf).amin(0)
    assert torch.equal(result.success, hit.any(0))
    assert torch.equal(result.distance[result.success], best[result.success])
    assert torch.equal(result.x_adv[~result.success], x[~result.success])
    assert bool(advx.ThreatModel(norm=threat.norm).contains(x, result.x_adv).all())
    assert bool((result.queries == steps).all())


@pytest.fixture(scope="module")
def mnist():
    """A small CNN trained one epoch on 2,000 sample digits, as in test_differential_foolbox."""
    model, x, y, correct = mnist_small_cnn(N)
    return model, x, y, correct


def _distances(model, x, labels, x_adv, norm, targeted=False):
    """Per-sample distance in ``norm``, infinite where the example does not fool the model."""
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    fooled = pred == labels if targeted else pred != labels
    distance = advx.ThreatModel(norm).distance(x, x_adv)
    return torch.where(fooled, distance, torch.full_like(distance, torch.inf))


def _compare(norm, ours, theirs, correct):
    """Assert advx's median over correct digits is at most 10% above Foolbox's."""
    mine, peer = float(ours[correct].median()), float(theirs[correct].median())
    verdict = "advx is stronger" if mine < peer else "Foolbox is stronger"
    message = (f"fmn {norm}: advx median {mine:.4f} vs Foolbox {peer:.4f} ({verdict} by "
               f"{abs(mine / peer - 1):.1%}); advx fooled {int(ours[correct].isfinite().sum())},"
               f" Foolbox {int(theirs[correct].isfinite().sum())} of {int(correct.sum())}")
    assert mine <= TOLERANCE * peer, message


FOOLBOX_ATTACKS = {"l0": "L0FMNAttack", "l1": "L1FMNAttack", "l2": "L2FMNAttack",
                   "linf": "LInfFMNAttack"}


def _foolbox(norm, model, x, criterion):
    fb = pytest.importorskip("foolbox", reason="foolbox not installed")
    attack = getattr(fb.attacks, FOOLBOX_ATTACKS[norm])(steps=STEPS)
    return attack(fb.PyTorchModel(model, bounds=(0, 1)), x, criterion, epsilons=None)[1]


@pytest.mark.parametrize("norm", ["l2", "linf", "l1", "l0"])
def test_is_at_least_as_strong_as_foolbox(mnist, norm):
    """Same model, digits and steps; measured medians (advx / Foolbox, fooled of 53):
    l2 1.520 / 1.778 (53 / 53), linf 0.1174 / 0.1174 (53 / 53), l1 7.85 / 10.13 (53 / 42),
    l0 10 / 10 (53 / 53)."""
    model, x, y, correct = mnist
    theirs = _distances(model, x, y, _foolbox(norm, model, x, y), norm)
    result = advx.get_attack("fmn", steps=STEPS)(model, x, y, advx.ThreatModel(norm))
    ours = _distances(model, x, y, result.x_adv, norm)
    assert torch.equal(ours.isfinite(), result.success)
    _compare(norm, ours, theirs, correct)


def test_targeted_reaches_the_target_as_close_as_foolbox(mnist):
    """Targeted L2 toward ``y + 1``: every correct digit reaches its target, no farther than
    Foolbox's targeted FMN."""
    fb = pytest.importorskip("foolbox", reason="foolbox not installed")
    model, x, y, correct = mnist
    targets = (y + 1) % 10
    criterion = fb.criteria.TargetedMisclassification(targets)
    theirs = _distances(model, x, targets, _foolbox("l2", model, x, criterion), "l2", True)
    threat = advx.ThreatModel("l2", targeted=True)
    result = advx.get_attack("fmn", steps=STEPS)(model, x, y, threat, targets=targets)
    assert bool(result.success[correct].all())
    assert torch.equal(result.pred[result.success], targets[result.success])
    _compare("l2 targeted", _distances(model, x, targets, result.x_adv, "l2", True), theirs,
             correct)


def test_behind_a_detector_it_seeks_examples_that_are_not_rejected():
    """Rejection counts as the label (advx.fold_rejection): against a detector that rejects
    low-confidence inputs, the adaptive attack fools more samples than the naive one,
    whose smallest misclassified iterates lie just across the boundary, where it rejects."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
        x = torch.rand(200, 1, 4, 4)
    with torch.no_grad():
        classifier[1].weight.mul_(4)
        y = classifier(x).argmax(1)

    def low_confidence(inputs):
        return 10 * (1 - torch.softmax(classifier(inputs), 1).amax(1))

    threshold = float(torch.quantile(low_confidence(x).detach(), 0.95))
    fooled = {}
    for adaptive in (True, False):
        detected = advx.Detected(classifier, _Scorer(low_confidence), threshold, 3,
                                 adaptive=adaptive).eval()
        result = advx.get_attack("fmn", steps=50)(detected, x, y, advx.ThreatModel("l2"))
        fooled[adaptive] = float(result.success.float().mean())
    assert fooled[True] > fooled[False] + 0.2, fooled  # measured: 1.00 against 0.62


class _Scorer(torch.nn.Module):
    def __init__(self, score):
        super().__init__()
        self.score = score

    def forward(self, x):
        return self.score(x)
