"""The robust-accuracy protocol: its aggregates obey the inequalities that define them."""

import types

import advx
import pytest
import torch
from advx.host.pluginmanager import add_plugin, load_plugins
from advx.host.registry import Registry
from advx.kernel.protocol import Outcome
from advx.plugins.protocols import RobustAccuracy
from advx.run.execute import execute
from advx.run.spec import parse_spec
from hypothesis import given
from hypothesis import strategies as st

from .conftest import TINY_SPEC


class FakeSession:
    """A run context whose clean correctness and adversarial predictions hypothesis draws."""

    def __init__(self, spec, y, clean, preds):
        self.models, self.attacks = spec.models, spec.attacks
        self.y, self._clean, self._preds = y, clean, preds
        # what the sanity checks read: bounds and input shape
        self.bounds, self.x = (0.0, 1.0), torch.zeros(len(y), 1, 28, 28)
        self.device = torch.device("cpu")

    def clean_correct(self, model):
        return self._clean[model.id]

    def module(self, model):
        return torch.nn.Identity()  # no detector: no reject index

    def outcome(self, model, attack, eps):
        pred = self._preds[(model.id, attack.id, eps)]
        eligible = self.clean_correct(model)
        return Outcome(pred, pred != self.y, torch.zeros(len(pred)), torch.zeros(len(pred)),
                       eligible, 0.0)

    def robust_correct(self, model, outcome):
        return self.clean_correct(model) & (outcome.pred == self.y)


@given(st.data())
def test_robust_never_exceeds_clean_and_worst_never_exceeds_any_attack(data):
    registry = advx.get_registry()
    spec = parse_spec(TINY_SPEC.format(extra=""), registry)
    n = data.draw(st.integers(1, 20))
    y = torch.tensor(data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)))
    labels = st.lists(st.integers(0, 9), min_size=n, max_size=n)
    clean = {m.id: torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
             for m in spec.models}
    preds = {(m.id, a.id, e): torch.tensor(data.draw(labels))
             for m in spec.models for a in spec.attacks for e in a.eps}
    result = RobustAccuracy().evaluate(FakeSession(spec, y, clean, preds))
    for row in result["results"]:
        assert row["robust_accuracy"] <= result["clean_accuracy"][row["model"]]
    for worst in result["worst_case"]:
        singles = [r["robust_accuracy"] for r in result["results"]
                   if (r["model"], r["norm"], r["eps"]) ==
                   (worst["model"], worst["norm"], worst["eps"])]
        assert worst["robust_accuracy"] <= min(singles)
        assert sorted(worst["attacks"]) == ["fgsm", "pgd"]


def test_hook_advx_unit_finished(tmp_path):
    """Observers see every finished unit with its robust accuracy."""
    seen = []
    module = types.ModuleType("observer")
    module.advx_unit_finished = advx.hookimpl(lambda unit, result: seen.append((unit, result)))
    loaded = load_plugins()
    add_plugin(loaded, module, "observer")
    registry = Registry(loaded)
    spec = parse_spec(TINY_SPEC.format(extra=""), registry)
    report = execute(spec, registry, tmp_path / "out", device="cpu", cache=tmp_path / "cache")
    assert [(u["attack"], u["eps"]) for u, _ in seen] == [
        ("fgsm", 0.05), ("fgsm", 0.3), ("pgd", 0.05), ("pgd", 0.3)]
    assert [r["robust_accuracy"] for _, r in seen] == [
        r["robust_accuracy"] for r in report["results"]]


class FakeDistanceSession(FakeSession):
    """Like FakeSession, with drawn success flags and distances per outcome."""

    def __init__(self, spec, y, clean, outcomes):
        super().__init__(spec, y, clean, {})
        self._outcomes = outcomes

    def outcome(self, model, attack, eps):
        success, distance = self._outcomes[(model.id, attack.id, eps)]
        pred = torch.where(success, (self.y + 1) % 10, self.y)
        return Outcome(pred, success, distance, torch.zeros(len(pred)),
                       self.clean_correct(model), 0.0)


@given(st.data())
def test_minimal_perturbation_keeps_each_samples_smallest_success(data):
    from advx.plugins.protocols import MinimalPerturbation

    spec = parse_spec(TINY_SPEC.format(extra=""), advx.get_registry())
    n = data.draw(st.integers(1, 15))
    y = torch.tensor(data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)))
    flags = st.lists(st.booleans(), min_size=n, max_size=n)
    sizes = st.lists(st.floats(0, 1), min_size=n, max_size=n)
    clean = {m.id: torch.tensor(data.draw(flags)) for m in spec.models}
    outcomes = {(m.id, a.id, e): (torch.tensor(data.draw(flags)), torch.tensor(data.draw(sizes)))
                for m in spec.models for a in spec.attacks for e in a.eps}
    session = FakeDistanceSession(spec, y, clean, outcomes)
    result = MinimalPerturbation().evaluate(session)
    (entry,) = result["minimal_perturbation"]
    model = spec.models[0]
    assert entry["norm"] == "linf" and entry["attacks"] == ["fgsm", "pgd"]
    for i, best in enumerate(entry["distances"]):
        found = [float(d[i]) for (_, _, _), (s, d) in outcomes.items() if s[i]]
        if not clean[model.id][i]:
            assert best == 0.0
        elif found:
            assert best == min(found)
        else:
            assert best is None
    finite = [d for d in entry["distances"] if d is not None]
    assert entry["fooled"] == pytest.approx(len(finite) / n)
    assert sum(entry["best_found_by"].values()) == int(clean[model.id].sum()) - (
        sum(1 for i, d in enumerate(entry["distances"]) if d is None))
    assert result["results"]  # the robust-accuracy tables are still there


def test_minimal_perturbation_on_a_real_run(tmp_path):
    extra = '\n[[attacks]]\nname = "deepfool"\nnorm = "l2"\n'
    text = TINY_SPEC.format(extra=extra).replace('name = "robust-accuracy"',
                                                 'name = "minimal-perturbation"')
    registry = advx.get_registry()
    report = execute(parse_spec(text, registry), registry, tmp_path / "out", device="cpu",
                     cache=tmp_path / "cache")
    norms = {e["norm"]: e for e in report["minimal_perturbation"]}
    assert set(norms) == {"l2", "linf"}
    assert norms["l2"]["fooled"] > 0.9 and norms["l2"]["median"] > 0
    assert norms["linf"]["median"] is None or norms["linf"]["median"] <= 0.3 + 1e-6
    assert "Smallest adversarial per sample" in (tmp_path / "out" / "report.md").read_text()


@given(st.data())
def test_the_worst_case_over_both_views_never_exceeds_either_view(data):
    from advx.plugins.protocols.robust import both_views

    n = data.draw(st.integers(1, 30))
    masks = st.lists(st.booleans(), min_size=n, max_size=n).map(torch.tensor)
    views = {"p": {("linf", 0.3): (data.draw(masks), ["fgsm", "pgd"])},
             "p (non-adaptive)": {("linf", 0.3): (data.draw(masks), ["fgsm", "pgd"])},
             "q": {("linf", 0.3): (data.draw(masks), ["fgsm"])}}
    (row,) = both_views(views)
    assert row["model"] == "p (adaptive or not)" and (row["norm"], row["eps"]) == ("linf", 0.3)
    for view in ("p", "p (non-adaptive)"):
        assert row["robust_accuracy"] <= float(views[view][("linf", 0.3)][0].float().mean())
    assert row["attacks"] == ["fgsm", "pgd", "fgsm (non-adaptive)", "pgd (non-adaptive)"]
