"""Sanity checks for gradient masking: each flag on results that show its symptom, none on
results that do not, and the flags in a real run's report."""

import json
import types

import advx
import pytest
import torch
from advx.kernel.entries import AttackSpec
from advx.plugins.protocols.sanity import sanity_flags
from click.testing import CliRunner


def _session(*attacks, modules=None):
    specs = [AttackSpec(ident, advx.get_attack(name, **params), norm, (None,))
             for ident, name, params, norm in attacks]
    modules = modules or {}
    return types.SimpleNamespace(
        bounds=(0.0, 1.0), x=torch.zeros(2, 1, 28, 28), attacks=specs, device="cpu",
        models=[types.SimpleNamespace(id=ident) for ident in modules],
        module=lambda model: modules[model.id])


class _Looping(torch.nn.Module):
    """Classifies after ``steps`` refinements of its input by one submodule (an optimisation
    at inference, as ABS runs)."""

    def __init__(self, steps):
        super().__init__()
        self.refine, self.head, self.steps = torch.nn.Identity(), torch.nn.Flatten(), steps

    def forward(self, x):
        for _ in range(self.steps):
            x = self.refine(x)
        return self.head(x)[:, :10]


def _row(attack, robust, eps, norm="linf", model="m"):
    return {"model": model, "attack": attack, "norm": norm, "eps": eps, "targeted": False,
            "robust_accuracy": robust}


def _checks(flags):
    return sorted(f["check"] for f in flags)


def test_no_flag_on_consistent_results():
    session = _session(("pgd", "pgd", {}, "linf"), ("square", "square", {}, "linf"))
    results = [_row("pgd", 0.40, 0.1), _row("pgd", 0.10, 0.3),
               _row("square", 0.405, 0.1), _row("square", 0.30, 0.3)]
    assert sanity_flags(session, results) == []


def test_gradient_attack_weaker_than_black_box():
    session = _session(("pgd", "pgd", {}, "linf"), ("square", "square", {}, "linf"))
    flags = sanity_flags(session, [_row("pgd", 0.60, 0.3), _row("square", 0.20, 0.3)])
    assert _checks(flags) == ["gradient-weaker-than-black-box"]
    assert flags[0]["attacks"] == ["pgd", "square"] and "60.0%" in flags[0]["detail"]


def test_robust_accuracy_rising_with_eps():
    session = _session(("fgsm", "fgsm", {}, "linf"))
    flags = sanity_flags(session, [_row("fgsm", 0.3, 0.1), _row("fgsm", 0.5, 0.3)])
    assert _checks(flags) == ["robust-accuracy-rises-with-eps"] and flags[0]["eps"] == 0.3


@pytest.mark.parametrize("norm, eps, flagged", [("l2", None, True), ("linf", 1.0, True),
                                                ("linf", 0.3, False), ("l0", 784, True)])
def test_unbounded_attacks_must_reach_zero(norm, eps, flagged):
    name = {"l2": "deepfool", "linf": "pgd", "l0": "pointwise"}[norm]
    session = _session((name, name, {}, norm))
    flags = sanity_flags(session, [_row(name, 0.2, eps, norm)])
    assert _checks(flags) == (["unbounded-attack-short-of-zero"] if flagged else [])
    assert sanity_flags(session, [_row(name, 0.005, eps, norm)]) == []


def test_more_steps_or_restarts_much_stronger():
    session = _session(("pgd-40", "pgd", {"steps": 40, "step_size": 0.01}, "linf"),
                       ("pgd-100x5", "pgd", {"steps": 100, "step_size": 0.01, "restarts": 5},
                        "linf"),
                       ("pgd-l1", "pgd", {"steps": 100, "random_start": False}, "linf"))
    flags = sanity_flags(session, [_row("pgd-40", 0.50, 0.3), _row("pgd-100x5", 0.40, 0.3)])
    assert _checks(flags) == ["more-budget-much-stronger"]
    assert flags[0]["attacks"] == ["pgd-40", "pgd-100x5"]
    assert sanity_flags(session, [_row("pgd-40", 0.50, 0.3), _row("pgd-100x5", 0.48, 0.3)]) == []


def test_a_non_adaptive_binarized_model_is_flagged_in_the_report(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text("""
[dataset]
name = "synthetic"
n_train = 256
n_test = 64

[[models]]
id = "binarized"
name = "blog-cnn"
train = { epochs = 2, batch_size = 64 }
defenses = [{ name = "binarize" }]
adaptive = false

[[attacks]]
name = "pgd"
norm = "linf"
eps = 0.5
steps = 5

[[attacks]]
name = "uniform-noise"
norm = "linf"
eps = 0.5
repeats = 20

[protocol]
name = "robust-accuracy"
batch_size = 64
""")
    from advx.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(out), "--cache",
                                      str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert "gradient-weaker-than-black-box" in _checks(report["sanity"])
    assert "## Sanity checks (gradient masking)" in (out / "report.md").read_text()
    assert "gradient-weaker-than-black-box" in result.output


def _detected(attack, robust, eps, model):
    return {**_row(attack, robust, eps, model=model), "rejection_rate": 0.1}


def test_a_detector_far_weaker_adaptively_is_flagged_and_a_close_one_is_not():
    session = _session(("pgd", "pgd", {}, "linf"))
    far = sanity_flags(session, [_detected("pgd", 0.10, 0.3, "d"),
                                 _detected("pgd", 0.40, 0.3, "d (non-adaptive)")])
    assert _checks(far) == ["detector-adaptive-far-below"]
    assert far[0]["model"] == "d" and "10.0% robust adaptive, 40.0% non-adaptive" in far[0][
        "detail"]
    close = sanity_flags(session, [_detected("pgd", 0.35, 0.3, "d"),
                                   _detected("pgd", 0.40, 0.3, "d (non-adaptive)")])
    assert close == []


def test_a_non_adaptive_attack_stronger_than_the_adaptive_one_is_flagged():
    session = _session(("fgsm", "fgsm", {}, "linf"))
    flags = sanity_flags(session, [_row("fgsm", 0.60, 0.3, model="p"),
                                   _row("fgsm", 0.25, 0.3, model="p (non-adaptive)")])
    assert _checks(flags) == ["non-adaptive-stronger"]
    assert flags[0]["model"] == "p"
    even = sanity_flags(session, [_row("fgsm", 0.27, 0.3, model="p"),
                                  _row("fgsm", 0.25, 0.3, model="p (non-adaptive)")])
    assert even == []


@pytest.mark.parametrize("clean_fpr, n, flagged", [
    (0.05, 1000, True), (0.012, 1000, False), (0.0, 20, False), (0.5, 20, True)])
def test_a_clean_fpr_above_the_requested_one_beyond_sampling_error_is_flagged(clean_fpr, n,
                                                                               flagged):
    session = _session(("pgd", "pgd", {}, "linf"))
    detection = [{"model": "d", "requested_fpr": [0.01], "clean_fpr": clean_fpr, "n": n}]
    flags = sanity_flags(session, [], detection)
    assert _checks(flags) == (["clean-fpr-above-requested"] if flagged else [])


def test_a_model_that_loops_at_inference_is_flagged():
    session = _session(modules={"looping": _Looping(5), "plain": _Looping(1)})
    flags = sanity_flags(session, [])
    assert _checks(flags) == ["optimisation-at-inference"]
    assert flags[0]["model"] == "looping" and "'refine' ran 5 times" in flags[0]["detail"]
