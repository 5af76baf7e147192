"""apgd-t, AutoAttack's targeted APGD: its targets, its refusal of targeted threat models, its
per-sample accounting, and a differential test against torchattacks' APGDT (a test-only
oracle; skipped when absent)."""

import advx
import pytest
import torch
from advx.plugins.attacks.apgd_t import ranked_targets
from hypothesis import given
from hypothesis import strategies as st

from .small_cnn import mnist_small_cnn

N = 64
STEPS = 20  # both libraries: 20 Auto-PGD steps per target class (AutoAttack uses 100)
TOLERANCE = 3  # success counts of the two libraries may differ by 3 of 64 digits (~5 points)


@pytest.fixture(scope="module")
def mnist():
    """A small CNN trained one epoch on 2,000 sample digits, as in the Foolbox differential
    tests, and 64 test digits."""
    return mnist_small_cnn(N)[:3]


@given(st.integers(4, 12), st.integers(1, 15), st.integers(0, 2**31 - 1), st.booleans())
def test_targets_are_the_most_likely_other_classes(classes, count, seed, with_reject):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, classes, generator=generator)
    y = torch.randint(0, classes, (5,), generator=generator)
    reject = classes - 1 if with_reject else None
    ranked = ranked_targets(logits, y, count, reject)
    assert ranked.shape == (5, min(count, classes - 1 - with_reject))
    assert not bool((ranked == y.unsqueeze(1)).any())
    if reject is not None:
        assert not bool((ranked == reject).any())
    chosen = logits.gather(1, ranked)
    assert bool((chosen[:, :-1] >= chosen[:, 1:]).all())  # most likely first
    for row in range(5):  # no class left out scores above the last one taken
        left = set(range(classes)) - set(ranked[row].tolist()) - {int(y[row]), reject}
        assert all(logits[row, c] <= chosen[row, -1] for c in left)


def test_a_targeted_threat_model_is_pointed_to_apgd_dlr():
    attack = advx.get_attack("apgd-t")
    with pytest.raises(advx.UsageError, match="apgd-dlr"):
        attack.check_threat(advx.ThreatModel("linf", eps=0.1, targeted=True))


def test_needs_four_classes():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(advx.UsageError, match="at least 4 classes"):
        advx.get_attack("apgd-t", steps=2)(model, x, y, advx.ThreatModel("linf", eps=0.1))


@pytest.mark.parametrize("name, params", [
    ("apgd-t", {"steps": 5, "target_classes": 3, "restarts": 2}),
    ("apgd-ce", {"steps": 5, "restarts": 3}),
    ("apgd-dlr", {"steps": 5, "restarts": 3}),
])
def test_runs_on_subsets_are_charged_to_their_samples(mnist, name, params):
    """A well classified digit twice, the first copy under a wrong label (fooled from the
    start): the second copy's runs on the unfooled samples must be counted for it, not for
    its twin (the nearest clean input, which undeclared rows would be charged to)."""
    model, x, y = mnist
    with torch.no_grad():
        first = int((model(x).argmax(1) == y).nonzero()[0])
    digit = x[first:first + 1]
    x = torch.cat([digit, digit, x[:5]])
    y = torch.cat([(y[first:first + 1] + 1) % 10, y[first:first + 1], y[:5]])
    result = advx.get_attack(name, **params)(model, x, y, advx.ThreatModel("linf", eps=0.05))
    assert torch.equal(result.forwards, result.queries)
    assert int(result.queries[1]) > int(result.queries[0])


def _torchattacks_success(model, x, y, norm, eps):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed")
    peer = torchattacks.APGDT(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps,
                              steps=STEPS, n_restarts=1, n_classes=10)
    with torch.random.fork_rng(devices=[]):  # it seeds the global generator
        x_adv = peer(x, y)
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("linf", 0.2), ("l2", 1.0)])
def test_success_matches_torchattacks(mnist, norm, eps):
    model, x, y = mnist
    theirs = _torchattacks_success(model, x, y, norm, eps)
    result = advx.get_attack("apgd-t", steps=STEPS)(model, x, y, advx.ThreatModel(norm, eps=eps))
    mine, peer = int(result.success.sum()), int(theirs.sum())
    verdict = ("as strong" if mine == peer else
               "advx is stronger" if mine > peer else "torchattacks is stronger")
    assert abs(mine - peer) <= TOLERANCE, (
        f"apgd-t {norm} eps {eps}: advx fooled {mine} of {N}, torchattacks' APGDT {peer} "
        f"({verdict})")
