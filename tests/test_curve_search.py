"""The sweep's threshold search (guided bisection, merged probes) and per-sample eps."""

import math

import advx
import pytest
import torch
from advx.kernel.attack import AttackResult
from advx.kernel.errors import UsageError
from advx.kernel.protocol import SetJob
from advx.kernel.random import seeds_for
from advx.kernel.threat import project_delta
from advx.plugins.protocols import curve_search
from advx.plugins.protocols.curves import GuidedSweep
from advx.store.inventory import summary
from hypothesis import given, settings
from hypothesis import strategies as st

from .small_cnn import train_small_cnn


class _Monotone:
    """Fools a sample exactly from the grid eps its first pixel names (its true threshold);
    with ``per_sample_eps`` it takes a per-sample eps, as the sweep's merged probes need."""

    def __init__(self, grid, per_sample_eps):
        self.grid, self.per_sample_eps, self.calls = grid, per_sample_eps, 0

    def __call__(self, model, x, y, threat, *, targets=None, seed=None, budget=None):
        self.calls += 1
        truth = x[:, 0, 0, 0].long()
        eps = threat.eps if threat.per_sample else torch.full((len(y),), threat.eps)
        at = torch.tensor(self.grid + [math.inf], dtype=torch.float64)[truth]
        fallen = eps.double() >= at - 1e-6
        pred = torch.where(fallen, (y + 1) % 10, y)
        return AttackResult(x_adv=x, success=fallen, distance=torch.where(fallen, eps, 0.0),
                            pred=pred, queries=torch.ones_like(y))


def sweep(attack, x, y, grid, logits, batch_size=None):
    """The rows of a guided sweep of ``attack`` over ``grid``, computed in parts of
    ``batch_size`` rows (all at once by default), as the run computes them."""
    unbounded = advx.ThreatModel(norm="linf")
    job = SetJob(model=None, attack=attack, threat=unbounded, x=x, y=y,
                 targets=torch.full_like(y, -1), seeds=seeds_for(0, len(y)),
                 clean_logits=logits, device=torch.device("cpu"))
    method = GuidedSweep(grid)
    state = method.prepare(job)
    size = batch_size or len(y)
    parts = [method.compute(job, s, min(s + size, len(y)), state) for s in range(0, len(y), size)]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=150), st.integers(2, 30),
       st.sampled_from(["informative", "random", "inverted"]), st.booleans(), st.integers(0, 99))
def test_the_search_finds_every_threshold_whatever_the_guide(truths, k, guide, merged, noise):
    """Under monotonicity the thresholds are exact, with a good, useless or misleading guide,
    and no sample takes more than GUIDED_PROBES + ceil(log2(K + 1)) probes."""
    grid = [round(0.01 * (i + 1), 4) for i in range(k)]
    truth = torch.tensor(truths).clamp_max(k)
    n = len(truth)
    x, y = truth.double().view(-1, 1, 1, 1), torch.zeros(n, dtype=torch.long)
    generator = torch.Generator().manual_seed(noise)
    margin = {"informative": (truth + 1).double() * (1 + 0.3 * torch.rand(n, generator=generator,
                                                                           dtype=torch.float64)),
              "random": torch.rand(n, generator=generator, dtype=torch.float64) + 0.01,
              "inverted": 1.0 / (truth + 1).double()}[guide]
    logits = torch.zeros(n, 10, dtype=torch.float64)
    logits[:, 0] = margin
    wrong = truth % 7 == 6
    logits[wrong, 3] = margin[wrong] + 1  # a few misclassified clean: never probed
    attack = _Monotone(grid, merged)
    found = sweep(attack, x, y, grid, logits, batch_size=37)
    correct = logits.argmax(1) == y
    threshold = torch.where(found["pred"] != y,
                            curve_search.certified(curve_search.allowances(grid, "linf"),
                                                   found["distance"]), k)
    assert torch.where(correct, threshold, 0).tolist() == torch.where(correct, truth, 0).tolist()
    probes = found["queries"]
    assert int(probes.max()) <= curve_search.GUIDED_PROBES + math.ceil(math.log2(k + 1))
    assert bool((probes[~correct] == 0).all())


def test_a_good_guide_saves_probes_and_merged_probes_save_calls():
    k, n = 30, 400
    grid = [round(0.01 * (i + 1), 4) for i in range(k)]
    truth = torch.randint(0, k + 1, (n,), generator=torch.Generator().manual_seed(0))
    x, y = truth.double().view(-1, 1, 1, 1), torch.zeros(n, dtype=torch.long)
    noise = 1 + 0.2 * torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits = torch.zeros(n, 10, dtype=torch.float64)
    logits[:, 0] = grid[0] * (truth + 1) * noise  # the margin predicts the threshold well
    per_call, merged = _Monotone(grid, False), _Monotone(grid, True)
    one = sweep(per_call, x, y, grid, logits)
    two = sweep(merged, x, y, grid, logits)
    assert torch.equal(one["queries"], two["queries"])  # the same probes, grouped differently
    assert float(one["queries"].double().mean()) < 0.7 * math.log2(k + 1)
    rounds = int(two["queries"].max()) + math.ceil(math.log2(k + 1))  # pilot, then guided
    assert merged.calls <= rounds < per_call.calls / 3
    for size in (7, 64):  # the parts' size changes nothing
        again = sweep(_Monotone(grid, True), x, y, grid, logits, batch_size=size)
        assert all(_same(again[name], two[name]) for name in two)


def _same(a, b):
    """Equal tensors, nan equal to nan (a fake attack's rows are not counted: nan)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


@given(st.sampled_from(["linf", "l2"]), st.lists(st.floats(0, 2), min_size=1, max_size=6),
       st.integers(0, 99))
def test_projection_with_a_per_sample_eps_equals_one_projection_per_sample(norm, radii, seed):
    delta = torch.randn(len(radii), 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    eps = torch.tensor(radii)
    together = project_delta(norm, delta, eps)
    for i, radius in enumerate(radii):
        torch.testing.assert_close(together[i], project_delta(norm, delta[i:i + 1], radius)[0])


def test_per_sample_eps_is_checked():
    with pytest.raises(ValueError, match="linf or l2"):
        advx.ThreatModel(norm="l0", eps=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=">= 0"):
        advx.ThreatModel(norm="linf", eps=torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="1-D float"):
        advx.ThreatModel(norm="linf", eps=torch.tensor([[0.1]]))
    threat = advx.ThreatModel(norm="linf", eps=torch.tensor([0.1, 0.2]))
    assert str(threat) == "linf:per-sample"
    assert torch.equal(threat.select(torch.tensor([1])).eps, torch.tensor([0.2]))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 2])
    with pytest.raises(UsageError, match="one radius per sample on x's device: 3"):
        advx.get_attack("pgd", steps=2)(model, x, y, threat)
    with pytest.raises(UsageError, match="one eps per call"):
        advx.get_attack("deepfool")(model, x[:2], y[:2], threat)


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    x, y = advx.get_dataset("mnist").load("test")
    return train_small_cnn(x[:600], y[:600], epochs=1, seed=0), x[600:660], y[600:660]


@pytest.mark.parametrize(("name", "params", "norm", "grid"), [
    ("pgd", {"steps": 12, "random_start": False}, "linf", [0.05, 0.1, 0.2]),
    ("pgd", {"steps": 12, "random_start": False, "step_size": 0.01}, "linf", [0.05, 0.1, 0.2]),
    ("pgd", {"steps": 8, "random_start": False}, "l2", [0.5, 1.0, 2.0]),
    ("bim", {"steps": 8}, "linf", [0.05, 0.1, 0.2]),
    ("fgsm", {}, "linf", [0.05, 0.1, 0.2]),
    ("fgsm", {}, "l2", [0.5, 1.0, 2.0]),
])
def test_one_call_with_a_per_sample_eps_equals_one_call_per_eps(digits, name, params, norm,
                                                                   grid):
    model, x, y = digits
    attack = advx.get_attack(name, **params)
    assert attack.per_sample_eps
    eps = torch.tensor(grid).repeat(len(y) // len(grid))
    together = attack(model, x, y, advx.ThreatModel(norm=norm, eps=eps), seed=0)
    for j, radius in enumerate(grid):
        rows = torch.arange(j, len(y), len(grid))
        alone = attack(model, x[rows], y[rows], advx.ThreatModel(norm=norm, eps=radius), seed=0)
        torch.testing.assert_close(together.x_adv[rows], alone.x_adv, rtol=0, atol=1e-6)
        assert torch.equal(together.pred[rows], alone.pred)
        assert torch.equal(together.queries[rows], alone.queries)


def test_pgd_restarts_keep_each_sample_in_its_own_ball(digits):
    model, x, y = digits
    eps = torch.tensor([0.02, 0.3]).repeat(len(y) // 2)
    result = advx.get_attack("pgd", steps=5, restarts=3)(
        model, x, y, advx.ThreatModel(norm="linf", eps=eps), seed=0)
    assert bool((result.distance <= eps + 1e-6).all())
    assert float(result.distance[1::2].max()) > 0.02  # the large balls were used


def test_cache_listings_show_a_sweep_as_its_grid():
    identity = {"threat": {"norm": "linf", "eps": None},
                "method": {"name": "guided-bisection", "eps": [0.01, 0.02, 0.3]},
                "attack": {"name": "pgd"}, "model": {"plugin": "madry-cnn"}}
    assert summary({"identity": identity})["threat"] == "linf sweep 0.01-0.3 (3)"
    identity["method"] = {"name": "test-half-eps", "eps": 0.05}  # a plugin's own method
    assert summary({"identity": identity})["threat"] == "linf test-half-eps"
    del identity["method"]
    assert summary({"identity": identity})["threat"] == "linf min"
