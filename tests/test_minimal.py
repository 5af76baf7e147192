"""The minimal-perturbation protocol (Schott et al., 2019): the accuracy-distortion curve, the
accuracy at fixed distances, the per-sample eps search of fixed-eps attacks, its spec
parameters and the distortion pictures."""

import json
import math
import sys

import advx
import numpy as np
import pytest
import torch
from advx.cli import cli
from advx.plugins.protocols import MinimalPerturbation, curves
from advx.plugins.protocols.minimal import (
    ACCURACY_AT,
    distortion_curve,
    found_distances,
    robust_accuracy_at,
)
from advx.plugins.reports import picture_run
from advx.run.context import Session
from advx.run.spec import parse_spec
from advx.testing import ProtocolContract
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from .conftest import TINY_SPEC
from .test_protocol import FakeDistanceSession

SEARCH_SPEC = """
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
eps = {{ from = 0.02, to = 0.3, count = 8 }}

[[attacks]]
name = "pgd"
norm = "linf"
eps = {{ from = 0.02, to = 0.3, count = 8 }}
steps = 5

[[attacks]]
name = "deepfool"
norm = "l2"
steps = 10

[protocol]
name = "minimal-perturbation"
batch_size = 32
{protocol}
"""


def _brute_force(correct, distances, norm, d):
    """Robust accuracy at ``d`` counted sample by sample, with ThreatModel.contains' test
    written out: float32 distance <= eps + (eps * 1e-5 + 1e-6, none for l0)."""
    limit = np.float32(d) + np.float32(0.0 if norm == "l0" else d * 1e-5 + 1e-6)
    robust = [c and not (np.float32(t) <= limit) for c, t in zip(correct, distances)]
    return sum(robust) / len(robust)


distances = st.one_of(st.just(math.inf), st.floats(2.0 ** -13, 3.0, width=32))
samples = st.lists(st.tuples(st.booleans(), distances), min_size=1, max_size=40)


@given(samples, st.sampled_from(["l0", "l2", "linf"]), st.floats(0, 3.5))
def test_the_accuracy_distortion_curve_is_a_non_increasing_count(drawn, norm, d):
    if norm == "l0":  # l0 distances count pixels
        drawn = [(c, t if math.isinf(t) else float(math.ceil(t * 10))) for c, t in drawn]
        d = float(math.floor(d * 10))
    correct = [c for c, _ in drawn]
    # misclassified clean: distance 0, as the protocol keeps them
    best = torch.tensor([t if c else 0.0 for c, t in drawn], dtype=torch.float64)
    curve = distortion_curve(best, norm)
    points = curve["points"]
    assert points["distance"][0] == 0.0 and points["distance"] == sorted(points["distance"])
    assert points["robust_accuracy"] == sorted(points["robust_accuracy"], reverse=True)
    assert points["robust_accuracy"][0] == pytest.approx(sum(correct) / len(correct))
    assert curve["n"] == len(drawn) and curve["distances"] == sorted(curve["distances"])
    assert robust_accuracy_at(best, norm, d) == pytest.approx(
        _brute_force(correct, best.tolist(), norm, d))
    # the compact form gives the same step function
    within = sum(np.float32(t) <= np.float32(d) + np.float32(
        0.0 if norm == "l0" else d * 1e-5 + 1e-6) for t in curve["distances"])
    assert robust_accuracy_at(best, norm, d) == pytest.approx(1 - within / curve["n"])


@given(st.floats(0.001, 1.0), st.floats(0, 2), st.sampled_from(["linf", "l2"]))
def test_an_example_the_core_accepts_at_radius_d_lies_within_d(d, share, norm):
    """Within d means what ThreatModel.contains accepts, tolerance included."""
    threat = advx.ThreatModel(norm=norm, eps=d, bounds=(0.0, 2.0))  # the ball decides
    x = torch.full((1, 1, 4, 4), 0.0)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = d * (1 + share * 1e-5) + share * 1e-6  # at the edge of the slack
    distance = threat.distance(x, x_adv).double()
    assert robust_accuracy_at(distance, norm, d) == (0.0 if bool(threat.contains(x, x_adv))
                                                     else 1.0)


@given(st.data())
def test_accuracy_at_equals_a_count_over_each_samples_smallest_adversarial(data):
    spec = parse_spec(TINY_SPEC.format(extra=""), advx.get_registry())
    n = data.draw(st.integers(1, 15))
    y = torch.tensor(data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)))
    flags = st.lists(st.booleans(), min_size=n, max_size=n)
    sizes = st.lists(st.floats(0.0009765625, 0.5, width=32), min_size=n, max_size=n)
    clean = {m.id: torch.tensor(data.draw(flags)) for m in spec.models}
    outcomes = {(m.id, a.id, e): (torch.tensor(data.draw(flags)), torch.tensor(data.draw(sizes)))
                for m in spec.models for a in spec.attacks for e in a.eps}
    at = data.draw(st.floats(0, 0.5))
    protocol = MinimalPerturbation(accuracy_at={"linf": at})
    (entry,) = protocol.evaluate(FakeDistanceSession(spec, y, clean, outcomes))[
        "minimal_perturbation"]
    correct = clean[spec.models[0].id].tolist()
    best = [math.inf if d is None else d for d in entry["distances"]]
    assert entry["accuracy_at"]["distance"] == at
    assert entry["accuracy_at"]["robust_accuracy"] == pytest.approx(
        _brute_force(correct, best, "linf", at))
    assert entry["clean_accuracy"] == pytest.approx(sum(correct) / n)
    assert entry["curve"]["distances"] == sorted(d for d in best if d != math.inf)
    assert entry["accuracy_at"]["robust_accuracy"] <= entry["clean_accuracy"]
    assert protocol.accuracy_at == {**ACCURACY_AT, "linf": at}  # the others keep the default


@pytest.mark.parametrize(("table", "message"), [
    ("accuracy_at = { l3 = 1 }", "accuracy_at: unknown norm 'l3'; allowed: l0, l1, l2, linf"),
    ("accuracy_at = { linf = -0.1 }", "accuracy_at.linf must be a finite number >= 0"),
    ("accuracy_at = { l2 = nan }", "accuracy_at.l2 must be a finite number >= 0"),
    ("accuracy_at = { l2 = inf }", "accuracy_at.l2 must be a finite number >= 0"),
    ("accuracy_at = { linf = \"0.3\" }", "accuracy_at.linf must be a finite number >= 0"),
    ("accuracy_at = { linf = true }", "accuracy_at.linf must be a finite number >= 0"),
    ("accuracy_at = { l0 = 2.5 }", "accuracy_at.l0 must be a whole number of pixels"),
    ("accuracy_at = 0.3", "accuracy_at must be a table norm -> distance"),
    ("eps_search = \"yes\"", "eps_search must be true or false"),
    ("eps_search = 1", "eps_search must be true or false"),
])
def test_bad_protocol_parameters_are_rejected_with_the_key_named(table, message):
    with pytest.raises(advx.UsageError, match="protocol") as info:
        parse_spec(SEARCH_SPEC.format(protocol=table), advx.get_registry())
    assert message in str(info.value)


def test_good_protocol_parameters():
    spec = parse_spec(SEARCH_SPEC.format(protocol="accuracy_at = { l0 = 20.0, l1 = 10 }\n"
                                                   "eps_search = true"), advx.get_registry())
    assert spec.protocol.accuracy_at == {"l0": 20.0, "l1": 10, "l2": 1.5, "linf": 0.3}
    assert spec.protocol.eps_search is True
    assert MinimalPerturbation().eps_search is False  # default: one run per eps, as before


def test_eps_search_runs_fewer_attacks_and_finds_real_misclassified_examples(tmp_path,
                                                                           monkeypatch):
    spec = parse_spec(SEARCH_SPEC.format(protocol="eps_search = true"), advx.get_registry())
    calls = {}
    for name in ("pgd", "fgsm"):
        cls = type(advx.get_attack(name))
        original = cls.run

        def counting(self, *args, _name=name, _run=original, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _run(self, *args, **kwargs)

        monkeypatch.setattr(cls, "run", counting)
    session = Session(spec, advx.get_registry(), device="cpu", cache=tmp_path / "cache")
    report = session.protocol.evaluate(session)
    batches = math.ceil(session.n / spec.protocol.batch_size)
    for name in ("pgd", "fgsm"):  # one run per eps would be 8 per batch
        assert 0 < calls[name] < 8 * batches, calls
    assert [r["attack"] for r in report["results"]] == ["deepfool"]  # no row per eps
    norms = {e["norm"]: e for e in report["minimal_perturbation"]}
    assert norms["linf"]["searched"] == ["fgsm", "pgd"] and norms["l2"]["searched"] == []
    # every finite minimum is the distance of an example the model misclassifies
    model = spec.models[0]
    module, correct = session.module(model), session.clean_correct(model)
    threat = advx.ThreatModel(norm="linf")
    candidates = []
    for attack in spec.attacks[:2]:
        arrays = curves.swept(session, model, attack, attack.eps)[1].stored.arrays
        x_adv = torch.from_numpy(arrays["x_adv"])
        with torch.no_grad():
            fooled = module(x_adv).argmax(1) != session.y
        candidates.append(torch.where(fooled & correct, threat.distance(session.x, x_adv)
                                      .double(), torch.inf))
    smallest = torch.stack(candidates).min(0).values
    best = torch.tensor([math.inf if d is None else d for d in norms["linf"]["distances"]],
                        dtype=torch.float64)
    assert torch.equal(best[correct], smallest[correct].to(best.dtype))
    assert bool((best[~correct] == 0).all())
    # found_distances reads the memoised sweep: no attack runs again
    before = dict(calls)
    found_distances(session, model, spec.attacks[1], True)
    assert calls == before
    # the minimum over every attack is at most the worst case of the curves at each eps
    (worst,) = [c for c in report["curves"] if c["attack"] == "worst case"
                and c["norm"] == "linf"]
    for eps, value in zip(worst["eps"], worst["robust_accuracy"]):
        assert robust_accuracy_at(best, "linf", eps) <= value + 1e-12
    assert norms["linf"]["accuracy_at"] == {"distance": 0.3, "robust_accuracy":
                                            robust_accuracy_at(best, "linf", 0.3)}
    # without matplotlib the distortion pictures are skipped with the reason
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    drawn, skipped = picture_run.render(session, report, tmp_path / "out",
                                        picture_run.PicturesSpec(kinds=("distortion",)))
    assert drawn == [] and skipped[0]["kind"] == "distortion"
    assert "pip install advx[plots]" in skipped[0]["reason"]


def test_a_run_draws_the_distortion_pictures(tiny_spec, tmp_path):
    pytest.importorskip("matplotlib")
    from .test_pictures import image_is_nontrivial

    extra = '\n[[attacks]]\nname = "deepfool"\nnorm = "l2"\n'
    text = TINY_SPEC.format(extra=extra).replace(
        'name = "robust-accuracy"', 'name = "minimal-perturbation"\naccuracy_at = { l2 = 1.0 }')
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(tiny_spec(text=text)), "--out", str(out),
                                      "--cache", str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    distortion = [p for p in report["pictures"] if p["kind"] == "distortion"]
    assert [(p["norm"], p["path"]) for p in distortion] == [
        ("l2", "pictures/distortion-l2.png"), ("linf", "pictures/distortion-linf.png")]
    for picture in distortion:
        image_is_nontrivial(out / picture["path"])
    by_norm = {e["norm"]: e for e in report["minimal_perturbation"]}
    assert by_norm["l2"]["accuracy_at"]["distance"] == 1.0
    assert by_norm["linf"]["accuracy_at"]["distance"] == 0.3
    page = (out / "report.md").read_text()
    assert "## Smallest adversarial per sample, l2" in page
    assert "| robust accuracy at 1 |" in page and "| robust accuracy at 0.3 |" in page
    # the resolved spec writes the whole table, defaults merged in
    assert "accuracy_at = { l0 = 12, l2 = 1.0, linf = 0.3 }" in (out / "spec.toml").read_text()


class TestProtocolContractWithEpsSearch(ProtocolContract):
    """The protocol contract with the search on (tests/test_contracts.py runs the defaults)."""

    protocol_name = "minimal-perturbation"
    protocol_params = {"eps_search": True}
