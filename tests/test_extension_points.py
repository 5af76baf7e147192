"""Every extension point, used end to end by the third-party plugins of extension_plugins.py:
defenses of each kind, a protocol with its own sets and report section, and each hook."""

import json
import types

import advx
import attrs
import pytest
import torch
from advx.cli import cli
from advx.host.pluginmanager import add_plugin, load_plugins
from advx.host.registry import Registry
from advx.run.execute import execute
from advx.run.spec import parse_spec
from advx.store.format import read_set, sets_dir
from click.testing import CliRunner

from . import extension_plugins

SPEC = """
title = "extension points"

[dataset]
name = "synthetic"
n_train = 256
n_test = 64

[[models]]
id = "plain"
name = "blog-cnn"
train = {{ epochs = 2, batch_size = 64 }}

[[models]]
id = "defended"
name = "blog-cnn"
train = {{ epochs = 2, batch_size = 64, holdout = 40 }}
defenses = [{{ name = "test-quantize" }}, {{ name = "test-confidence-detector", fpr = 0.05 }},
            {{ name = "test-twin-ensemble" }}, {{ name = "test-label-smoothing" }}]

[[attacks]]
name = "fgsm"
norm = "linf"
eps = [0.1, 0.3]

[[attacks]]
name = "pgd"
norm = "linf"
eps = [0.1]
steps = 5

[protocol]
name = "{protocol}"
batch_size = 32
{tables}
"""


@pytest.fixture(scope="module")
def registry():
    loaded = load_plugins()
    add_plugin(loaded, extension_plugins, "test-extensions", distribution="advx-test-ext")
    return Registry(loaded)


def run(registry, tmp_path, protocol="robust-accuracy", tables="", out="out"):
    spec = parse_spec(SPEC.format(protocol=protocol, tables=tables), registry)
    report = execute(spec, registry, tmp_path / out, device="cpu", cache=tmp_path / "cache")
    return spec, report


def test_a_defense_of_each_kind_runs_end_to_end_and_from_the_cache(registry, tmp_path):
    extension_plugins.TWIN_TRAININGS.clear()
    spec, report = run(registry, tmp_path)
    defended = spec.models[1]
    assert [d.kind for d in defended.defenses] == ["preprocessor", "detector", "model",
                                                   "training"]
    entry = next(m for m in report["models"] if m["id"] == "defended")
    assert entry["defenses"] == ["test-quantize", "test-confidence-detector",
                                 "test-twin-ensemble", "test-label-smoothing"]
    assert entry["source"] == "trained" and extension_plugins.TWIN_TRAININGS == [5]
    rows = {(r["model"], r["attack"], r["eps"]): r for r in report["results"]}
    assert len(rows) == 6
    for row in rows.values():
        assert row["robust_accuracy"] <= report["clean_accuracy"][row["model"]]
    # the defended model: quantize -> detector(ensemble(label-smoothed classifier)), N + 1 outputs
    from advx.run.context import Session

    session = Session(spec, registry, cache=tmp_path / "cache")
    module = session.module(defended)
    assert advx.reject_index(module) == 10
    assert module(session.x[:4]).shape == (4, 11)
    inner = module.module
    assert isinstance(inner, advx.Preprocessed) and isinstance(inner.model, advx.Detected)
    # the detector was calibrated on the held-out clean training inputs at its false-positive rate
    x, _ = session.dataset.load("train")
    with torch.no_grad():
        rejected = (inner.model(x[-40:]).argmax(1) == 10).float().mean()
    assert float(rejected) <= 0.05 + 1e-9
    # a rerun reads every model and set from the cache, the twin included
    _, again = run(registry, tmp_path, out="again")
    assert {r["cache"] for r in again["results"]} == {"cache"}
    assert extension_plugins.TWIN_TRAININGS == [5]
    assert [r["robust_accuracy"] for r in again["results"]] == [
        r["robust_accuracy"] for r in report["results"]]


def test_rejected_adversarials_count_as_defended_and_rejected_clean_inputs_as_errors(
        registry, tmp_path):
    spec, report = run(registry, tmp_path)
    from advx.run.context import Session

    session = Session(spec, registry, cache=tmp_path / "cache")
    model = spec.models[1]
    clean_pred = session.clean_logits(model).argmax(1)
    assert bool((clean_pred == 10).any())  # the detector rejects some clean test inputs ...
    assert report["clean_accuracy"]["defended"] == pytest.approx(
        float((clean_pred == session.y).float().mean()))  # ... and they count as errors
    row = next(r for r in report["results"]
               if (r["model"], r["attack"], r["eps"]) == ("defended", "fgsm", 0.3))
    pred = torch.from_numpy(read_set(sets_dir(tmp_path / "cache") / f"{row['set_key']}.h5")
                            .arrays["pred"])
    correct = clean_pred == session.y
    rejected = correct & (pred == 10)
    assert bool(rejected.any())  # some adversarials are rejected: they count as defended
    assert row["robust_accuracy"] == pytest.approx(
        float((correct & ((pred == session.y) | (pred == 10))).float().mean()))
    assert row["robust_accuracy"] > float((correct & (pred == session.y)).float().mean())
    fooled = correct & (pred != session.y) & (pred != 10)
    assert row["attack_success_rate"] == pytest.approx(float(fooled.sum() / correct.sum()))


def test_a_defense_around_a_detector_keeps_its_rejections(registry, tmp_path):
    """A whole-model defense outside a detector, which knows nothing of rejection: the built
    model still rejects (its reject index is carried over), so rejections are no successes."""
    text = SPEC.format(protocol="robust-accuracy", tables="").replace(
        '{{ name = "test-quantize" }}, '.replace("{{", "{").replace("}}", "}"),
        '{ name = "test-temperature" }, ')
    spec = parse_spec(text, registry)
    assert [d.name for d in spec.models[1].defenses][:2] == ["test-temperature",
                                                              "test-confidence-detector"]
    from advx.run.context import Session

    session = Session(spec, registry, cache=tmp_path / "cache")
    module = session.module(spec.models[1])
    assert advx.reject_index(module) == 10
    outcome = session.outcome(spec.models[1], spec.attacks[0], 0.3)
    assert bool((outcome.pred == 10).any())
    assert not bool(outcome.success[outcome.pred == 10].any())


def test_hook_advx_register_defenses(registry):
    kinds = {e.name: e.cls.kind for e in registry.entries("defenses")}
    assert kinds["test-quantize"] == "preprocessor" and kinds["test-twin-ensemble"] == "model"


def test_a_third_party_protocol_shows_its_section_in_md_and_html(registry, tmp_path):
    _, report = run(registry, tmp_path, protocol="test-half-eps")
    assert {r["cache"] for r in report["half_eps"]} == {"computed"}
    assert all(r["half"] >= r["full"] - 0.02 for r in report["half_eps"])
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "## Half eps" in md and "| plain | fgsm | 0.1 |" in md
    assert "<h2>Half eps</h2>" in html and "<td>plain</td>" in html
    _, again = run(registry, tmp_path, protocol="test-half-eps", out="again")
    assert {r["cache"] for r in again["half_eps"]} == {"cache"}  # its own sets are cached too
    listing = CliRunner().invoke(cli, ["cache", "ls", "--json", "--cache", str(tmp_path / "cache")])
    threats = {e["threat"] for e in json.loads(listing.output)}
    assert "linf test-half-eps" in threats and "linf 0.1" in threats


def test_a_protocol_may_not_overwrite_the_runs_keys(tmp_path):
    @advx.hookimpl
    def advx_register_protocols(register):
        register(Greedy)

    @attrs.frozen(kw_only=True)
    class Greedy(advx.Protocol):
        """Returns a key the run writes itself."""

        name = "test-greedy"

        def evaluate(self, context):
            return {"models": []}

    loaded = load_plugins()
    add_plugin(loaded, types.SimpleNamespace(advx_register_protocols=advx_register_protocols),
               "greedy")
    greedy = Registry(loaded)
    text = ("[dataset]\nname = 'synthetic'\nn_train = 64\nn_test = 8\n[[models]]\n"
            "name = 'blog-cnn'\ntrain = { epochs = 1 }\n[protocol]\nname = 'test-greedy'\n")
    spec = parse_spec(text, greedy)
    with pytest.raises(advx.AdvxError, match="key.s. models, which the run writes itself"):
        execute(spec, greedy, tmp_path / "out", device="cpu", cache=tmp_path / "cache")


def test_hook_advx_register_protocols(registry):
    assert registry.get("protocols", "test-half-eps").distribution == "advx-test-ext"


def test_hook_advx_register_tables(registry, tmp_path):
    spec = parse_spec(SPEC.format(protocol="robust-accuracy",
                                  tables='[test-notes]\ntext = "hello"'), registry)
    assert spec.tables["test-notes"] == "hello"
    with pytest.raises(advx.UsageError, match=r"\[test-notes\] needs text"):
        parse_spec(SPEC.format(protocol="robust-accuracy", tables="[test-notes]\ntext = 5"),
                   registry)
    with pytest.raises(advx.UsageError, match="unknown key 'test-notes'"):
        parse_spec(SPEC.format(protocol="robust-accuracy", tables='[test-notes]\ntext = "x"'),
                   advx.get_registry())  # unclaimed without the plugin


def test_hook_advx_run_finished(registry, tmp_path):
    _, report = run(registry, tmp_path, tables='[test-notes]\ntext = "from a plugin"')
    assert (tmp_path / "out" / "notes.txt").read_text() == "from a plugin\n"
    stored = json.loads((tmp_path / "out" / "report.json").read_text())
    assert stored["test_notes"] == {"text": "from a plugin", "models": ["plain", "defended"]}
    spec_toml = (tmp_path / "out" / "spec.toml").read_text()
    assert "[test-notes]" in spec_toml and 'text = "from a plugin"' in spec_toml


class _ReportChanger:
    """A plugin whose advx_run_finished changes what the run wrote (``how``: in place or
    replaced)."""

    def __init__(self, how):
        self.how = how

    @advx.hookimpl
    def advx_run_finished(self, context, report, out_dir):
        if self.how == "in place":
            report["models"][0]["clean_accuracy"] = 1.0
        else:
            report["title"] = "another title"


@pytest.mark.parametrize("how", ["in place", "replaced"])
def test_run_finished_may_not_change_what_the_run_wrote(tmp_path, how):
    loaded = load_plugins()
    add_plugin(loaded, extension_plugins, "test-extensions", distribution="advx-test-ext")
    add_plugin(loaded, _ReportChanger(how), "report-changer")
    changed = "models" if how == "in place" else "title"
    with pytest.raises(advx.AdvxError, match=f"changed the report's {changed}; plugins add"):
        run(Registry(loaded), tmp_path)
    assert not (tmp_path / "out" / "report.json").exists()


def test_hook_advx_report_sections(registry, tmp_path):
    run(registry, tmp_path, tables='[test-notes]\ntext = "a note"')
    assert "## Notes\n\na note" in (tmp_path / "out" / "report.md").read_text()
    assert "<h2>Notes</h2>" in (tmp_path / "out" / "report.html").read_text()


def test_hook_advx_write_report(registry, tmp_path, monkeypatch):
    run(registry, tmp_path)
    summary = tmp_path / "out" / "summary.json"
    assert json.loads(summary.read_text())["models"] == 2
    summary.unlink()
    monkeypatch.setattr(advx, "_registry", registry)  # the command line's registry
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert summary.is_file() and "summary.json" in result.output


def test_hook_advx_export_set(registry, tmp_path, monkeypatch):
    _, report = run(registry, tmp_path)
    monkeypatch.setattr(advx, "_registry", registry)
    key = report["results"][0]["set_key"]
    result = CliRunner().invoke(cli, ["cache", "export", "--cache", str(tmp_path / "cache"),
                                      key[:12], str(tmp_path / "exp" / "set"), "--count", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exp" / "set.count.txt").read_text() == "3\n"
    assert "set.count.txt" in result.output and "set.png" in result.output


def test_behind_a_detector_the_curve_walks_the_grid_and_the_report_shows_detection(
        registry, tmp_path):
    _, report = run(registry, tmp_path, protocol="curve")
    methods = {(c["model"], c["attack"]): c["method"] for c in report["curves"]}
    assert methods[("defended", "pgd")] == "eps walk"
    assert methods[("plain", "pgd")] == "guided bisection"
    _, robust = run(registry, tmp_path, out="robust")
    (detection,) = robust["detection"]
    assert detection["model"] == "defended" and detection["requested_fpr"] == [0.05]
    assert 0 <= detection["clean_fpr"] <= 1
    rows = [r for r in robust["results"] if r["model"] == "defended"]
    assert rows and all(0 <= r["rejection_rate"] <= 1 for r in rows)
    assert all("rejection_rate" not in r for r in robust["results"] if r["model"] == "plain")
    assert {w["attack"] for w in robust["strongest_eps"]} == {"fgsm", "pgd"}
    assert "## Detection" in (tmp_path / "robust" / "report.md").read_text()
