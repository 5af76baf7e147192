"""The optimality protocol (AttackBench's metric), attack entries' propagation budgets and the
propagation columns of sets."""

import json
import math

import advx
import pytest
import torch
from advx.cli import cli
from advx.plugins.protocols.optimality import area, optimality
from advx.run.context import Session
from advx.run.spec import parse_spec
from advx.store.format import read_set, sets_dir
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

SPEC = """
[dataset]
name = "synthetic"
n_train = 256
n_test = 48

[[models]]
name = "blog-cnn"
train = {{ epochs = 2, batch_size = 64 }}

[[attacks]]
name = "ddn"
norm = "l2"
steps = 20
{ddn}

[[attacks]]
id = "ddn-weak"
name = "ddn"
norm = "l2"
steps = 2

[[attacks]]
name = "pgd"
norm = "l2"
eps = {{ from = 0.1, to = 3.0, count = 8 }}
steps = 5
{pgd}

[protocol]
name = "optimality"
batch_size = 16
"""

distances = st.lists(st.one_of(st.just(math.inf), st.floats(0.0, 5.0)), min_size=1,
                     max_size=30)


@given(distances, st.data())
def test_optimality_is_one_for_the_best_and_drops_for_anything_farther(best, data):
    best = torch.tensor(best, dtype=torch.float64)
    correct = best > 0
    clean = float(correct.double().mean())
    score = optimality(best, best, clean)
    finite = best[torch.isfinite(best)]
    if score is None:  # nothing fooled beyond 0: every curve is the same
        assert not len(finite) or float(finite.max()) == 0 or clean * float(finite.max()) <= \
            area(best, float(finite.max()))
        return
    assert score == pytest.approx(1.0)
    worse = best * torch.tensor(data.draw(st.lists(st.floats(1.0, 4.0), min_size=len(best),
                                                   max_size=len(best))), dtype=torch.float64)
    worse = torch.where(torch.isnan(worse), best, worse)  # inf * 1 stays inf
    assert optimality(worse, best, clean) <= 1.0 + 1e-12
    nothing = torch.where(correct, torch.inf, 0.0).double()
    assert optimality(nothing, best, clean) == pytest.approx(0.0, abs=1e-12)


def test_area_is_the_integral_of_the_security_curve():
    distance = torch.tensor([0.0, 0.5, 1.0, math.inf], dtype=torch.float64)
    grid = torch.linspace(0, 2.0, 200001, dtype=torch.float64)
    robust = (distance.unsqueeze(0) > grid.unsqueeze(1)).double().mean(1)
    assert area(distance, 2.0) == pytest.approx(float(torch.trapezoid(robust, grid)), abs=1e-4)


def _session(tmp_path, ddn="", pgd=""):
    spec = parse_spec(SPEC.format(ddn=ddn, pgd=pgd), advx.get_registry())
    return Session(spec, advx.get_registry(), device="cpu", cache=tmp_path / "cache")


def test_a_weakened_attack_scores_lower_and_rows_carry_the_counts(tmp_path):
    session = _session(tmp_path)
    report = session.protocol.evaluate(session)
    (entry,) = report["optimality"]
    rows = {r["attack"]: r for r in entry["attacks"]}
    assert set(rows) == {"ddn", "ddn-weak", "pgd"} and entry["searched"] == ["pgd"]
    assert rows["ddn"]["optimality"] > rows["ddn-weak"]["optimality"]
    assert max(r["optimality"] for r in rows.values()) <= 1.0 + 1e-12
    # the per-sample best is found by some attack for every fooled sample
    assert sum(r["best_found"] for r in rows.values()) >= int(
        round(entry["clean_accuracy"] * 48 * rows["ddn"]["success_rate"]))
    # DDN: one forward and one backward per step and sample (clean samples it skips none)
    assert rows["ddn"]["mean_propagations"] == pytest.approx(40.0)
    assert rows["ddn-weak"]["mean_propagations"] == pytest.approx(4.0)
    assert rows["pgd"]["mean_propagations"] > 0  # summed over the search's probes
    assert all(r["returned_worse"] == 0 for r in rows.values())


def test_a_budget_holds_for_a_whole_search_and_joins_the_identity(tmp_path):
    free = _session(tmp_path)
    capped = _session(tmp_path, ddn="propagations = 10", pgd="propagations = 30")
    assert [a.budget for a in capped.spec.attacks] == [10, None, 30]
    report = capped.protocol.evaluate(capped)
    rows = {r["attack"]: r for r in report["optimality"][0]["attacks"]}
    assert rows["ddn"]["propagations_budget"] == 10
    assert rows["ddn"]["mean_propagations"] <= 10
    assert rows["pgd"]["mean_propagations"] <= 30
    model, ddn = capped.spec.models[0], capped.spec.attacks[0]
    threat = ddn.threat(None, capped.bounds)
    assert capped.set_identity(model, ddn, threat) != free.set_identity(
        model, free.spec.attacks[0], threat)
    assert capped.set_identity(model, ddn, threat)["budget"] == 10
    outcome = capped.outcome(model, ddn, None)
    spent = outcome.forwards + outcome.backwards
    assert int(spent.max()) <= 10 and bool(outcome.out_of_budget[outcome.eligible].all())
    stored = read_set(sets_dir(tmp_path / "cache") / f"{outcome.key}.h5")
    assert stored.provenance["identity"]["budget"] == 10


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "many", 10**10])
def test_bad_budgets_exit_2_naming_the_key(tmp_path, value):
    text = SPEC.format(ddn=f"propagations = {json.dumps(value)}", pgd="")  # JSON: TOML values
    path = tmp_path / "spec.toml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out"),
                                      "--cache", str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "propagations" in result.output


def test_a_run_writes_the_optimality_tables_and_security_curves(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(ddn="", pgd=""))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(out), "--cache",
                                      str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    security = [p for p in report["pictures"] if p["kind"] == "security"]
    assert [p["path"] for p in security] == ["pictures/security-blog-cnn-l2.png"]
    assert (out / security[0]["path"]).stat().st_size > 1000
    page = (out / "report.md").read_text()
    assert "## Optimality of the attacks on blog-cnn, l2" in page
    assert "pgd (eps search)" in page
