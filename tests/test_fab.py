"""FAB (Croce & Hein, 2020): its projection, its bookkeeping, and torchattacks' FAB as oracle.

The differential tests run advx's fab and torchattacks' FAB (a test-only oracle; skipped when
absent) on the same briefly trained MNIST CNN, the same 64 test digits and the same steps,
restarts, alpha_max, eta and beta.  torchattacks' ``FAB.perturb`` keeps, per restart and
target class, only adversarials within its ``eps``, attacks only the samples not fooled yet
(so its multi-targeted mode returns the first target class that succeeds, not the closest),
and fails for L1 (it measures the distance for Linf and L2 only).  The oracle is therefore its
own search, ``attack_single_run`` (the smallest adversarial one run finds, whatever its
distance), and for FAB-T ``attack_single_run_targeted`` for each target class of its
``multi_targeted`` mode, keeping per sample the closest: the minimal-distance quantity FAB is
built for, compared by the median over correctly classified digits (an unfooled digit counts
as infinitely far).  Steps are 20 rather than 100 to keep this module within its time budget.
"""

import itertools

import advx
import pytest
import torch
from advx.plugins.attacks._fab_projection import lengths, project_onto_hyperplane
from hypothesis import given, settings
from hypothesis import strategies as st

from .small_cnn import mnist_small_cnn

N = 64
STEPS = 20
TOLERANCE = 1.10  # advx's median may exceed torchattacks' by at most 10%
PEER_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


# -- the projection onto a hyperplane in the box -------------------------------------------------

def _feasible_grid(p, w, c, bounds, points=21):
    """Points of the box on ``<w, q> = c`` (for 1 to 3 coordinates): every coordinate but one
    on a grid (plus p's own value), the remaining one solved for, kept where inside the box."""
    lower, upper = bounds
    found = []
    for solved in range(len(p)):
        if abs(float(w[solved])) < 1e-3:
            continue
        others = [j for j in range(len(p)) if j != solved]
        axes = [sorted({*torch.linspace(lower, upper, points).tolist(), float(p[j])})
                for j in others]
        for values in itertools.product(*axes):
            q = p.clone().double()
            q[others] = torch.tensor(values, dtype=torch.float64)
            rest = float((w.double()[others] * q[others]).sum())
            q[solved] = (float(c) - rest) / float(w[solved])
            if lower <= float(q[solved]) <= upper:
                found.append(q)
    return torch.stack(found) if found else None


@settings(max_examples=150, deadline=None)
@given(data=st.data(), norm=st.sampled_from(["linf", "l2", "l1"]),
       n=st.integers(1, 3))
def test_the_projection_is_the_closest_point_of_the_hyperplane_in_the_box(data, norm, n):
    """The move lands in the box; where the box meets the hyperplane it lands on it and no
    point of a brute-force grid over that intersection is closer; where it does not, it lands
    on the box point that comes closest to the hyperplane."""
    floats = st.floats(-2, 2, allow_nan=False, width=32)
    p = torch.tensor(data.draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)))
    w = torch.tensor(data.draw(st.lists(floats, min_size=n, max_size=n)))
    c = torch.tensor([data.draw(floats)])
    d = project_onto_hyperplane(norm, p[None], w[None], c, (0.0, 1.0))[0]
    q = p + d
    assert bool(((q >= -1e-6) & (q <= 1 + 1e-6)).all()), q
    residual = float(c - (w * p).sum())
    sign = 1.0 if residual >= 0 else -1.0
    reachable = float((w.abs() * torch.where(sign * w > 0, 1 - p, p)).sum())
    if abs(residual) > reachable + 1e-5:  # the box stops short: the closest box point
        assert abs(float(sign * (w * d).sum()) - reachable) <= 1e-4
        return
    assert abs(float((w * q).sum() - c)) <= 1e-4 * (1 + float(w.abs().sum()))
    grid = _feasible_grid(p, w, c, (0.0, 1.0))
    if grid is not None:
        nearest = float(lengths(norm, grid - p.double()).min())
        assert float(lengths(norm, d[None])[0]) <= nearest + 1e-4, (norm, nearest)


def test_a_hyperplane_already_reached_needs_no_move():
    p = torch.rand(4, 9)
    w = torch.randn(4, 9)
    c = (w * p).sum(1)
    for norm in ("linf", "l2", "l1"):
        d = project_onto_hyperplane(norm, p, w, c, (0.0, 1.0))
        assert float(d.abs().max()) <= 1e-6


# -- the attack on a briefly trained MNIST CNN ---------------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    """A small CNN trained one epoch on 2,000 sample digits, as in test_differential_foolbox."""
    model, x, y, correct = mnist_small_cnn(N)
    assert correct.float().mean() > 0.75
    return model, x, y, correct


def distances(model, norm, x, y, x_adv):
    """Per-sample distance of ``x_adv``, infinite where the model is not fooled."""
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    distance = advx.ThreatModel(norm).distance(x, x_adv)
    return torch.where(fooled, distance, torch.full_like(distance, float("inf")))


def compare(name, norm, ours, theirs, correct):
    """Assert advx's median is at most 10% above torchattacks'; the message says which is
    stronger."""
    mine, peer = float(ours[correct].median()), float(theirs[correct].median())
    verdict = ("equal" if mine == peer else "advx is stronger" if mine < peer
               else "torchattacks is stronger")
    message = (f"{name} {norm}: advx median {mine:.4f} vs torchattacks {peer:.4f} ({verdict}, "
               f"{mine / peer - 1:+.1%}); advx fooled "
               f"{int(ours[correct].isfinite().sum())}, torchattacks "
               f"{int(theirs[correct].isfinite().sum())} of {int(correct.sum())}")
    assert mine <= TOLERANCE * peer, message
    print(message)


def _peer(model, norm, **params):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed")
    return torchattacks.FAB(model, norm=PEER_NORMS[norm], steps=STEPS, n_restarts=1,
                            alpha_max=0.1, eta=1.05, beta=0.9, **params)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_fab_is_at_least_as_strong_as_torchattacks(mnist, norm):
    """Measured: equal medians (linf 0.1193, l2 1.5037, l1 7.8777; 53 of 53 fooled)."""
    model, x, y, correct = mnist
    theirs = distances(model, norm, x, y, _peer(model, norm).attack_single_run(x, y))
    result = advx.get_attack("fab", steps=STEPS)(model, x, y, advx.ThreatModel(norm))
    ours = distances(model, norm, x, y, result.x_adv)
    assert bool(ours[correct].isfinite().all())
    compare("fab", norm, ours, theirs, correct)


def test_fab_t_is_at_least_as_strong_as_torchattacks_multi_targeted(mnist):
    """Three target classes (torchattacks: ``n_classes = 4``, i.e. its target classes 2 to 4,
    the second to fourth most likely), l2.  Measured: equal medians (1.5037); torchattacks'
    own ``perturb`` (first success at eps 1000) gives 1.5361."""
    model, x, y, correct = mnist
    peer = _peer(model, "l2", multi_targeted=True, n_classes=4, eps=1000.0)
    theirs = torch.full((N,), float("inf"))
    for target_class in range(2, 5):
        peer.target_class = target_class
        found = distances(model, "l2", x, y, peer.attack_single_run_targeted(x, y))
        theirs = torch.minimum(theirs, found)
    result = advx.get_attack("fab", steps=STEPS, target_classes=3)(
        model, x, y, advx.ThreatModel("l2"))
    compare("fab-t", "l2", distances(model, "l2", x, y, result.x_adv), theirs, correct)


def test_more_restarts_and_targets_never_give_a_worse_example(mnist):
    """Later runs only replace an example by a closer one: a second restart and a second
    target class never lengthen a sample's distance; queries count 1 + 2 steps per run."""
    model, x, y, correct = mnist
    x, y, correct = x[:16], y[:16], correct[:16]
    threat = advx.ThreatModel("linf", eps=0.3)
    runs = {}
    for params in ({"restarts": 1}, {"restarts": 2}, {"target_classes": 1},
                   {"target_classes": 2}):
        runs[tuple(params.items())] = advx.get_attack("fab", steps=5, **params)(
            model, x, y, threat)
    for fewer, more in ((("restarts", 1), ("restarts", 2)),
                        (("target_classes", 1), ("target_classes", 2))):
        short, long = runs[(fewer,)], runs[(more,)]
        dist = {k: torch.where(r.success, r.distance, torch.inf) for k, r in
                ((fewer, short), (more, long))}
        assert bool((dist[more] <= dist[fewer]).all()), (fewer, more)
    single = runs[(("target_classes", 2),)]
    assert torch.equal(single.queries, torch.where(correct, 1 + 2 * 2 * 5, 1))
    assert bool((single.distance[~correct] == 0).all())  # already misclassified: x itself


def test_targeted_fab_reaches_the_targets(mnist):
    model, x, y, correct = mnist
    targets = (y + 1) % 10
    result = advx.get_attack("fab", steps=STEPS)(
        model, x, y, advx.ThreatModel("l2", targeted=True), targets=targets)
    reached = result.success[correct].float().mean()
    assert reached >= 0.9, f"only {float(reached):.0%} of the digits reached their target"
    assert torch.equal(result.pred[result.success], targets[result.success])


def test_fab_t_does_not_depend_on_the_batch(mnist):
    model, x, y, _ = mnist
    model = advx.InvariantBatches(model)
    seeds = advx.derive_seeds(torch.arange(12), 5)
    attack = advx.get_attack("fab", steps=3, restarts=2, target_classes=2)
    threat = advx.ThreatModel("l1", eps=20.0)
    whole = attack(model, x[:12], y[:12], threat, seed=seeds)
    rows = torch.tensor([2, 7, 11])
    part = attack(model, x[rows], y[rows], threat, seed=seeds[rows])
    assert torch.equal(whole.x_adv[rows], part.x_adv)
    assert torch.equal(whole.queries[rows], part.queries)


def test_target_classes_refuse_a_targeted_threat_model(mnist):
    model, x, y, _ = mnist
    with pytest.raises(advx.UsageError, match="target_classes"):
        advx.get_attack("fab", target_classes=3)(
            model, x, y, advx.ThreatModel("l2", targeted=True), targets=(y + 1) % 10)


class _LowConfidence(torch.nn.Module):
    """A detector's score: high where the classifier is unsure."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return 10 * (1 - torch.softmax(self.classifier(x), 1).amax(1))


def test_fab_crosses_to_a_class_the_detector_accepts():
    """Behind a detector, a rejected example is no success: with the rejection folded into
    the label, FAB aims at the boundaries of the other classes and fools nearly every input
    (measured: 100%; 63% when the rejection is not folded)."""
    torch.manual_seed(1)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    with torch.no_grad():
        classifier[1].weight.mul_(4)
    x = torch.rand(100, 1, 4, 4)
    y = classifier(x).argmax(1)
    scorer = _LowConfidence(classifier)
    threshold = float(torch.quantile(scorer(x).detach(), 0.95))
    detected = advx.Detected(classifier, scorer, threshold, 3).eval()
    with torch.no_grad():
        accepted = detected(x).argmax(1) == y
    result = advx.get_attack("fab", steps=STEPS)(detected, x, y, advx.ThreatModel("l2"))
    rate = float(result.success[accepted].float().mean())
    assert rate >= 0.9, f"fab fooled only {rate:.0%} of the accepted inputs"
