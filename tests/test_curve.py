"""The curve protocol: eps sweeps by guided bisection and minimal distances, and PGD's shrinking
batch."""

import math

import advx
import attrs
import pytest
import torch
from advx.cli import cli
from advx.kernel.attack import AttackResult
from advx.kernel.entries import AttackSpec
from advx.kernel.errors import ExitCode
from advx.kernel.protocol import SetJob
from advx.kernel.random import SampleStreams, seeds_for
from advx.plugins.attacks._gradients import (
    ascent_direction,
    fooled,
    objective,
    objective_gradient,
    per_sample,
    per_sample_where,
    projection_onto,
    random_start,
)
from advx.plugins.attacks._iterative import Run, ascend
from advx.plugins.protocols import curve_search, curves
from advx.plugins.protocols.curve_search import GUIDED_PROBES
from advx.run.context import Session
from advx.run.spec import parse_spec
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from .small_cnn import train_small_cnn

SPEC = """
[dataset]
name = "synthetic"
n_train = 256
n_test = 64

[[models]]
name = "blog-cnn"
train = {{ epochs = 2, batch_size = 64 }}

[[attacks]]
name = "fgsm"
norm = "linf"
eps = [0.05, 0.1, 0.2, 0.3]

[[attacks]]
name = "pgd"
norm = "linf"
eps = {eps}
steps = 5

[[attacks]]
name = "deepfool"
norm = "linf"
eps = [0.05, 0.1, 0.15]

[protocol]
name = "curve"
batch_size = 32
"""
RANGE = "{ from = 0.02, to = 0.3, count = 8 }"


@pytest.fixture(scope="module")
def digits():
    """``(model, x, y)``: a small CNN trained on 1,000 sample digits, and 300 other digits."""
    torch.set_num_threads(1)
    x, y = advx.get_dataset("mnist").load("test")
    model = train_small_cnn(x[:1000], y[:1000], epochs=2, seed=0)
    return model, x[1000:1300], y[1000:1300]


def _old_ascend(model, x, labels, threat, *, start, steps, step_size, targeted, check_final=False):
    """The loop before finished samples left the batch (reference implementation)."""
    project = projection_onto(threat, x)
    x_adv = start
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        grad, logits = objective_gradient(model, x_adv, labels, targeted)
        done = done | fooled(logits, labels, targeted)
        rates = per_sample((~done).to(x_adv.dtype) * step_size, x_adv)
        stepped = project(torch.addcmul(x_adv, rates, ascent_direction(threat.norm, grad)))
        x_adv = stepped if threat.norm == "linf" else per_sample_where(done, x_adv, stepped)
    if not check_final:
        return Run(x_adv, done, None)
    with torch.no_grad():
        logits = model(x_adv)
    return Run(x_adv, done | fooled(logits, labels, targeted), objective(logits, labels, targeted))


@pytest.mark.parametrize(("norm", "eps", "step"), [("linf", 0.12, 0.01), ("l2", 1.5, 0.15)])
def test_ascend_drops_fooled_samples_without_changing_results(digits, norm, eps, step):
    model, x, y = digits
    threat = advx.ThreatModel(norm=norm, eps=eps)
    start = random_start(threat, x, SampleStreams.from_seed(0, len(x)))
    kwargs = {"start": start, "steps": 23, "step_size": step, "targeted": False,
              "check_final": True}
    new, old = ascend(model, x, y, threat, **kwargs), _old_ascend(model, x, y, threat, **kwargs)
    assert torch.equal(new.fooled, old.fooled)
    if norm == "linf":  # the sign of the gradient absorbs the rounding of smaller batches
        assert torch.equal(new.x_adv, old.x_adv) and torch.equal(new.score, old.score)
    else:  # on CPU a pass on 1-3 samples rounds differently: the last bit may move
        torch.testing.assert_close(new.x_adv, old.x_adv, rtol=0, atol=1e-6)
    early = new.passes < 23
    assert 0 < int(early.sum()) < len(x)  # some fell early and left, others went on
    assert set(new.passes.tolist()) <= {5, 10, 15, 20, 23}
    assert bool(new.fooled[early].all())


@pytest.mark.parametrize("name", ["pgd", "bim"])
def test_iterative_attacks_count_the_passes_they_spent(digits, name):
    model, x, y = digits
    threat = advx.ThreatModel(norm="linf", eps=0.2)
    result = advx.get_attack(name, steps=20)(model, x, y, threat, seed=1)
    assert result.queries.max() == 20 and result.queries.min() < 20
    assert bool((result.queries[~result.success] == 20).all())


def _separate(attack, model, x, y, grid):
    correct = model(x).argmax(1) == y
    rows = []
    for i, eps in enumerate(grid):
        result = attack(model, x, y, advx.ThreatModel(norm="linf", eps=eps), seed=i)
        rows.append(float((correct & (result.pred == y)).double().mean()))
    return rows


def test_the_sweep_agrees_with_separate_runs(digits):
    model, x, y = digits
    grid = [0.02 * i for i in range(1, 11)]
    attack = advx.get_attack("pgd", steps=10)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        separate = _separate(attack, model, x, y, grid)
    with torch.no_grad():
        logits = model(x)
    job = SetJob(model=model, attack=attack, threat=advx.ThreatModel(norm="linf"), x=x, y=y,
                 targets=torch.full_like(y, -1), seeds=seeds_for(3, len(y)), clean_logits=logits,
                 device=torch.device("cpu"))
    method = curves.GuidedSweep(grid)
    found = method.compute(job, 0, len(y), method.prepare(job))
    threshold = curves.thresholds(correct, found["pred"] != y, found["distance"],
                                  curve_search.allowances(grid, "linf"))
    curve = curves.accuracies(curves.robust_table(threshold, len(grid)))
    assert max(abs(a - b) for a, b in zip(curve, separate)) <= 0.02
    assert curve == sorted(curve, reverse=True)
    assert 0.1 < curve[4] < 0.9  # the grid spans the model's range of thresholds
    probes = found["queries"]
    assert int(probes.max()) <= GUIDED_PROBES + math.ceil(math.log2(len(grid) + 1))
    assert float(probes[correct].double().mean()) < math.log2(len(grid) + 1)
    assert bool((probes[~correct] == 0).all()) and bool((probes[correct] >= 1).all())


class _MonotoneAttack:
    """Fools a sample exactly at the grid eps its first pixel names (its true threshold)."""

    per_sample_eps = False

    def __init__(self, grid, exact_distance):
        self.grid, self.exact_distance, self.calls = grid, exact_distance, 0

    def __call__(self, model, x, y, threat, *, targets=None, seed=None, budget=None):
        self.calls += 1
        truth = x[:, 0, 0, 0].long()
        index = self.grid.index(threat.eps)
        fallen = index >= truth
        at = torch.tensor(self.grid + [1.0])[truth] if self.exact_distance else threat.eps
        distance = torch.where(fallen, at, 0.0).float()
        pred = torch.where(fallen, (y + 1) % 10, y)
        return AttackResult(x_adv=x, success=fallen, distance=distance, pred=pred,
                            queries=torch.ones_like(y))


@given(st.lists(st.integers(0, 12), min_size=1, max_size=40), st.integers(1, 12),
       st.booleans())
def test_bisection_finds_the_threshold_of_a_monotone_attack(truths, k, exact):
    grid = [round(0.025 * (i + 1), 4) for i in range(k)]
    truth = torch.tensor(truths).clamp_max(k)
    x = truth.float().view(-1, 1, 1, 1)
    y = torch.zeros(len(truth), dtype=torch.long)
    clean_pred = torch.where(truth % 5 == 4, 1, 0)  # a few misclassified clean
    attack = _MonotoneAttack(grid, exact)
    threats = [advx.ThreatModel(norm="linf", eps=e) for e in grid]
    logits = torch.nn.functional.one_hot(clean_pred, 10).float()
    found = curve_search.find_thresholds(attack, None, x, y, threats, clean_logits=logits,
                                         seeds=seeds_for(0, len(y)))  # no guide: bisection
    correct = clean_pred == y
    threshold = curves.thresholds(correct, found["pred"] != y, found["distance"],
                                  curve_search.allowances(grid, "linf"))
    assert threshold.tolist() == torch.where(correct, truth, 0).tolist()
    assert int(found["queries"].max()) <= math.ceil(math.log2(k + 1))
    assert bool((found["queries"][~correct] == 0).all())


@given(st.data())
def test_worst_case_never_exceeds_any_attack(data):
    n = data.draw(st.integers(1, 12))
    correct = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    measured = []
    for i in range(data.draw(st.integers(1, 3))):
        grid = tuple(sorted(data.draw(st.sets(st.sampled_from([0.1, 0.2, 0.3, 0.4]),
                                              min_size=1))))
        threshold = torch.tensor(data.draw(st.lists(st.integers(0, len(grid)), min_size=n,
                                                    max_size=n)))
        spec = AttackSpec(f"a{i}", advx.get_attack("pgd"), "linf", grid)
        robust = curves.robust_table(torch.where(correct, threshold, 0), len(grid))
        measured.append(curves.AttackCurve(spec, grid, robust, "guided bisection"))
    (worst,) = curves.worst_cases("m", measured, correct)
    for curve in measured:
        entry = curve.entry("m")
        assert entry["robust_accuracy"] == sorted(entry["robust_accuracy"], reverse=True)
        for eps, accuracy in zip(entry["eps"], entry["robust_accuracy"]):
            assert worst["robust_accuracy"][worst["eps"].index(eps)] <= accuracy
    assert worst["eps"] == sorted({e for c in measured for e in c.grid})


def _session(spec, cache):
    return Session(spec, advx.get_registry(), device="cpu", cache=cache)


def test_curve_protocol_on_a_run_and_its_rerun_from_the_cache(tmp_path, monkeypatch):
    spec = parse_spec(SPEC.format(eps=RANGE), advx.get_registry())
    session = _session(spec, tmp_path / "cache")
    report = session.protocol.evaluate(session)
    by_attack = {c["attack"]: c for c in report["curves"]}
    assert [by_attack[a]["method"] for a in ("fgsm", "pgd", "deepfool", "worst case")] == [
        "guided bisection", "guided bisection", "minimal distances", "worst case"]
    assert by_attack["pgd"]["eps"] == [0.02, 0.06, 0.1, 0.14, 0.18, 0.22, 0.26, 0.3]
    clean = report["clean_accuracy"]["blog-cnn"]
    for curve in report["curves"]:
        values = curve["robust_accuracy"]
        assert max(values) <= clean
        # the worst case may rise where the grids differ: each attack counts at its own eps only
        assert curve["attack"] == "worst case" or values == sorted(values, reverse=True)
    worst = by_attack["worst case"]
    for curve in report["curves"]:
        for eps, value in zip(curve["eps"], curve["robust_accuracy"]):
            assert worst["robust_accuracy"][worst["eps"].index(eps)] <= value
    assert 0 < by_attack["pgd"]["probes_per_sample"] <= 4
    # minimisation: robust at eps unless the minimal adversarial lies within it
    model, deepfool = spec.models[0], spec.attacks[2]
    outcome = session.outcome(model, deepfool, None)
    correct = session.clean_correct(model)
    for eps, value in zip(by_attack["deepfool"]["eps"], by_attack["deepfool"]["robust_accuracy"]):
        within = (outcome.pred != session.y) & (outcome.distance <= eps + 1e-6)
        assert value == pytest.approx(float((correct & ~within).double().mean()))
    assert [(r["attack"], r["eps"]) for r in report["results"]] == [("deepfool", None)]

    def refuse(*args, **kwargs):
        raise AssertionError("an attack ran on a rerun")

    for name in ("fgsm", "pgd", "deepfool"):
        monkeypatch.setattr(type(advx.get_attack(name)), "run", refuse)
    rerun = _session(spec, tmp_path / "cache")
    again = rerun.protocol.evaluate(rerun)
    assert again["curves"] == [dict(c, cache="cache") if "cache" in c else c
                               for c in report["curves"]]


def test_a_killed_sweep_resumes_with_the_same_result(tmp_path, monkeypatch):
    spec = parse_spec(SPEC.format(eps=RANGE), advx.get_registry())
    spec = attrs.evolve(spec, attacks=spec.attacks[1:2])  # pgd alone
    search, calls = curves.find_thresholds, []

    def killed_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return search(*args, **kwargs)

    monkeypatch.setattr(curves, "find_thresholds", killed_on_the_second_batch)
    session = _session(spec, tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        session.protocol.evaluate(session)
    monkeypatch.setattr(curves, "find_thresholds", search)
    resumed = _session(spec, tmp_path / "cache")
    curve = resumed.protocol.evaluate(resumed)["curves"][0]
    fresh = _session(spec, tmp_path / "fresh")
    whole = fresh.protocol.evaluate(fresh)["curves"][0]
    assert curve["cache"] == "resumed" and whole["cache"] == "computed"
    assert curve == dict(whole, cache="resumed")


@pytest.mark.parametrize(("table", "message"), [
    ("{ from = 0.3, to = 0.01, count = 5 }", "from < to"),
    ("{ from = 0.01, to = 0.3 }", "lacks count"),
    ("{ from = 0.01, to = 0.3, count = 1 }", "count must be a whole number"),
    ("{ from = 0.01, to = 0.3, count = 2.5 }", "count must be a whole number"),
    ("{ from = 0.01, to = 2, count = 3 }", "out of range"),
    ("{ from = \"a\", to = 0.3, count = 3 }", "eps must be finite numbers"),
    ("{ from = 0.01, to = 0.3, count = 5, step = 1 }", "unknown key 'step'"),
])
def test_bad_eps_range_exits_2(tmp_path, table, message):
    path = tmp_path / "bad.toml"
    path.write_text(SPEC.format(eps=table))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out"),
                                      "--cache", str(tmp_path / "cache")])
    assert result.exit_code == ExitCode.USAGE
    assert message in result.output and "attacks[1]" in result.output


def test_eps_range_is_linear_with_both_ends():
    spec = parse_spec(SPEC.format(eps="{ from = 0.01, to = 0.3, count = 30 }"),
                      advx.get_registry())
    assert spec.attacks[1].eps == tuple(round(0.01 * i, 2) for i in range(1, 31))
