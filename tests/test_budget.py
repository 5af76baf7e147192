"""The core's propagation accounting (advx.kernel.budget) on tiny models and scripted attacks.

A scripted attack queries points the test chose, so every count, refusal and best distance
has a brute-force answer to compare with.
"""

import threading
import time

import advx
import attrs
import pytest
import torch
from advx.kernel.budget import rank_within, returned_worse
from hypothesis import given, settings
from hypothesis import strategies as st

N, SIDE, CLASSES = 5, 4, 3


def _model(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIDE * SIDE, CLASSES))


def _batch(model, n=N, seed=1):
    """Inputs in [0, 1] and the labels the model gives them (so x itself is no adversarial)."""
    x = torch.rand(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


@attrs.frozen(kw_only=True, eq=False)
class Scripted(advx.MinimizationAttack):
    """Queries ``points`` (k, N, ...) in one call, k rows per sample (declared), and returns
    ``returned`` (N, ...)."""

    name = "scripted"
    norms = frozenset({"l2", "linf"})

    points: torch.Tensor = attrs.field(metadata={"help": "the points queried"})
    returned: torch.Tensor = attrs.field(metadata={"help": "the points returned"})

    def run(self, model, x, y, threat, *, targets, rng):
        k = len(self.points)
        with torch.no_grad(), advx.for_samples(torch.arange(len(x)).repeat(k)):
            model(self.points.flatten(0, 1))
        return self.returned


@attrs.frozen(kw_only=True, eq=False)
class ScriptedFixed(Scripted, advx.FixedEpsilonAttack):
    """:class:`Scripted` as a fixed-eps attack."""

    name = "scripted-fixed"
    kind = "fixed-eps"


@attrs.frozen(kw_only=True, eq=False)
class Recorder(advx.FixedEpsilonAttack):
    """``steps`` gradient calls on the whole batch, then one call on two rows per sample;
    records every call's logits and input gradients in ``log``."""

    name = "recorder"
    norms = frozenset({"linf"})

    steps: int = attrs.field(default=3, metadata={"help": "gradient calls"})
    log: list = attrs.field(factory=list, metadata={"help": "(logits, gradient) per call"})

    def run(self, model, x, y, threat, *, targets, rng):
        for _ in range(self.steps):
            with torch.enable_grad():
                leaf = x.clone().requires_grad_(True)
                logits = model(leaf)
                grad, = torch.autograd.grad(logits.square().sum(), leaf)
            self.log.append((logits.detach(), grad))
        with torch.no_grad(), advx.for_samples(torch.arange(len(x)).repeat(2)):
            self.log.append((model(torch.cat([x, x])), None))
        return x.clone()


@attrs.frozen(kw_only=True, eq=False)
class Nesting(advx.FixedEpsilonAttack):
    """Runs ``inner`` on the samples ``index`` of its batch (declared), then queries the
    whole batch once."""

    name = "nesting"
    norms = frozenset({"linf"})

    inner: advx.Attack = attrs.field(metadata={"help": "the attack run on a subset"})
    index: torch.Tensor = attrs.field(metadata={"help": "the subset"})
    results: list = attrs.field(factory=list, metadata={"help": "the inner results"})

    def run(self, model, x, y, threat, *, targets, rng):
        with advx.for_samples(self.index):
            self.results.append(self.inner(model, x[self.index], y[self.index], threat))
        with torch.no_grad():
            model(x)
        return x.clone()


class TestRankWithin:
    """``rank_within`` numbers the rows of each sample in order of appearance."""

    @given(rows=st.lists(st.integers(0, 6), max_size=40))
    def test_matches_a_brute_force_count(self, rows):
        ranks = rank_within(torch.tensor(rows, dtype=torch.int64), 7)
        expected = [rows[:i].count(row) for i, row in enumerate(rows)]
        assert ranks.tolist() == expected


class TestBestDistance:
    """The ledger keeps per sample the closest queried adversarial inside the threat model."""

    @settings(max_examples=20, deadline=None)
    @given(k=st.integers(1, 4), seed=st.integers(0, 2 ** 16), norm=st.sampled_from(["l2", "linf"]),
           eps=st.sampled_from([None, 0.3, 0.6]))
    def test_equals_a_brute_force_minimum(self, k, seed, norm, eps):
        model = _model()
        x, y = _batch(model)
        generator = torch.Generator().manual_seed(seed)
        points = torch.rand(k, *x.shape, generator=generator)
        threat = advx.ThreatModel(norm=norm, eps=eps)
        result = Scripted(points=points, returned=x.clone())(model, x, y, threat)
        expected = torch.full((N,), float("inf"))
        with torch.no_grad():
            for point in points:
                adversarial = (model(point).argmax(1) != y) & threat.contains(x, point)
                distance = threat.distance(x, point)
                expected = torch.where(adversarial, torch.minimum(expected, distance), expected)
        torch.testing.assert_close(result.best_distance, expected)
        assert result.forwards.tolist() == [k] * N  # k declared rows per sample

    def test_a_rejected_answer_is_no_adversarial(self):
        """Behind a detector, a query the model rejects is no adversarial."""
        model = _model()
        x, y = _batch(model)
        with torch.no_grad():
            rejected = model(x).argmin(1)  # call it the reject output: never the label
        reject = rejected[0]
        model.advx_reject_index = int(reject)
        points = torch.rand(3, *x.shape, generator=torch.Generator().manual_seed(4))
        result = Scripted(points=points, returned=x.clone())(model, x, y,
                                                              advx.ThreatModel(norm="l2"))
        with torch.no_grad():
            preds = torch.stack([model(p).argmax(1) for p in points])
        hits = (preds != y) & (preds != reject)
        assert torch.equal(torch.isfinite(result.best_distance), hits.any(0))


class TestReturnedWorse:
    """``returned_worse`` for both kinds, from scripted attacks and from tensors."""

    def _adversarials(self):
        """A model, a batch, and two points per sample: ``near`` and ``far`` (far = x +
        1.7 (near - x)), both adversarial for every sample; every near closer than any far."""
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIDE * SIDE, 2))
        with torch.no_grad():
            model[1].weight.zero_()
            model[1].weight[1, 0] = 1.0  # class 1 when the first pixel exceeds the bias
            model[1].bias.copy_(torch.tensor([0.0, -0.5]))
        x = torch.full((N, 1, SIDE, SIDE), 0.1)
        near = x.clone()
        near[:, 0, 0, 0] = 0.52 + 0.02 * torch.arange(N)
        far = x + 1.7 * (near - x)
        return model, x, torch.zeros(N, dtype=torch.int64), near, far

    def test_minimisation_returning_the_farther(self):
        model, x, y, near, far = self._adversarials()
        threat = advx.ThreatModel(norm="l2")
        points = torch.stack([far, near])
        worse = Scripted(points=points, returned=far)(model, x, y, threat)
        assert worse.returned_worse("minimization").all()
        best = Scripted(points=points, returned=near)(model, x, y, threat)
        assert not best.returned_worse("minimization").any()
        torch.testing.assert_close(best.best_distance, best.distance)

    def test_minimisation_returning_no_adversarial(self):
        model, x, y, near, _ = self._adversarials()
        result = Scripted(points=near[None], returned=x.clone())(model, x, y,
                                                                 advx.ThreatModel(norm="l2"))
        assert result.returned_worse("minimization").all()

    def test_fixed_eps(self):
        """Fixed eps: worse only when it returns no adversarial after querying one within
        eps; an adversarial queried beyond eps does not count."""
        model, x, y, near, far = self._adversarials()
        eps = float((near - x).flatten(1).norm(dim=1).max()) * 1.01  # near inside, far not
        threat = advx.ThreatModel(norm="l2", eps=eps)
        assert ScriptedFixed(points=near[None], returned=x.clone())(
            model, x, y, threat).returned_worse("fixed-eps").all()
        assert not ScriptedFixed(points=far[None], returned=x.clone())(
            model, x, y, threat).returned_worse("fixed-eps").any()
        assert not ScriptedFixed(points=near[None], returned=near)(
            model, x, y, threat).returned_worse("fixed-eps").any()

    def test_from_tensors(self):
        success = torch.tensor([True, True, False, False, True])
        distance = torch.tensor([1.0, 1.0, 0.0, 0.0, 2.0])
        best = torch.tensor([1.0, 0.5, float("inf"), 0.7, 2.0 * (1 - 1e-7)])
        assert returned_worse("minimization", success, distance, best).tolist() == [
            False, True, False, True, False]
        assert returned_worse("fixed-eps", success, distance, best).tolist() == [
            False, False, False, True, False]


class TestBudget:
    """Refused rows get zero logits cut from the graph and zero gradients."""

    def test_refused_logits_and_gradients_are_zero(self):
        model = _model()
        x, y = _batch(model)
        attack = Recorder()
        result = attack(model, x, y, advx.ThreatModel(norm="linf", eps=0.1), budget=3)
        (logits1, grad1), (logits2, grad2), (logits3, grad3), (twice, _) = attack.log
        # forward 1, backward 2, forward 3: served; backward 4 and everything after: refused.
        assert logits1.abs().sum(1).gt(0).all() and grad1.flatten(1).abs().sum(1).gt(0).all()
        assert logits2.abs().sum(1).gt(0).all()
        assert not grad2.any() and not logits3.any() and not grad3.any() and not twice.any()
        assert result.forwards.tolist() == [2] * N and result.backwards.tolist() == [1] * N
        assert result.out_of_budget.all()

    def test_rows_of_one_sample_are_served_in_order(self):
        """Two rows per sample in one call with one propagation left: the first is served."""
        model = _model()
        x, y = _batch(model)
        attack = Recorder(steps=0)
        result = attack(model, x, y, advx.ThreatModel(norm="linf", eps=0.1), budget=1)
        logits = attack.log[0][0]
        assert logits[:N].abs().sum(1).gt(0).all() and not logits[N:].any()
        assert result.forwards.tolist() == [1] * N and result.out_of_budget.all()

    def test_within_budget_nothing_changes(self):
        model = _model()
        x, y = _batch(model)
        free, limited = Recorder(), Recorder()
        threat = advx.ThreatModel(norm="linf", eps=0.1)
        free(model, x, y, threat)
        result = limited(model, x, y, threat, budget=8)  # 3 x 2 + 2 rows per sample
        assert not result.out_of_budget.any()
        for (a, b), (c, d) in zip(free.log, limited.log):
            assert torch.equal(a, c) and (b is None or torch.equal(b, d))


class TestNesting:
    """An attack run inside another's on a subset counts for both."""

    def test_inner_attack_counts_for_both(self):
        model = _model()
        x, y = _batch(model)
        index = torch.tensor([0, 3, 4])
        outer = Nesting(inner=advx.get_attack("pgd", steps=3, random_start=False),
                        index=index)
        result = outer(model, x, y, advx.ThreatModel(norm="linf", eps=1e-3))
        inner = outer.results[0]
        assert inner.forwards.tolist() == [3] * 3 and inner.backwards.tolist() == [3] * 3
        forwards = torch.ones(N, dtype=torch.int64)  # the outer's own pass on the batch
        # The inner attack's propagations, and its core's prediction pass on its results.
        forwards[index] += inner.forwards + 1
        backwards = torch.zeros(N, dtype=torch.int64)
        backwards[index] += inner.backwards
        assert torch.equal(result.forwards, forwards)
        assert torch.equal(result.backwards, backwards)


class _Slow(torch.nn.Module):
    """A linear model that sleeps in every pass, so that two threads' passes interleave."""

    def __init__(self):
        super().__init__()
        self.network = _model()

    def forward(self, x):
        time.sleep(0.002)
        return self.network(x)


def test_two_threads_do_not_mix_counts():
    """Two threads attack one module at once: each call counts its own propagations."""
    model = _Slow()
    x, y = _batch(model)
    calls = {"a": (Scripted(points=torch.rand(2, *x.shape), returned=x.clone()), 2),
             "b": (Scripted(points=torch.rand(5, *x.shape), returned=x.clone()), 5)}
    results, start = {}, threading.Barrier(2)

    def attack(name):
        scripted, _ = calls[name]
        start.wait()
        for repeat in range(10):
            results[name, repeat] = scripted(model, x, y, advx.ThreatModel(norm="l2"))

    threads = [threading.Thread(target=attack, args=(name,)) for name in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for (name, _), result in results.items():
        assert result.forwards.tolist() == [calls[name][1]] * N, name


def test_a_budget_below_one_is_refused():
    model = _model()
    x, y = _batch(model)
    with pytest.raises(advx.UsageError, match="budget"):
        Recorder()(model, x, y, advx.ThreatModel(norm="linf", eps=0.1), budget=0)
