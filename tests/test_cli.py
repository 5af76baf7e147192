"""The advx command through click's CliRunner: listing, runs, and every user-error path."""

import json

import advx
import pytest
from advx.cli import cli
from advx.kernel.errors import ExitCode
from click.testing import CliRunner


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and advx.__version__ in result.output


def test_list_json_describes_every_plugin():
    result = invoke("list", "--json")
    assert result.exit_code == 0
    entries = json.loads(result.output)
    by_name = {(e["kind"], e["name"]): e for e in entries}
    pgd = by_name[("attack", "pgd")]
    assert pgd["plugin"] == "advx" and pgd["summary"]
    assert {"name", "default", "required", "type", "help"} <= set(pgd["params"][0])
    assert ("model", "blog-cnn") in by_name and ("dataset", "mnist") in by_name
    assert ("protocol", "robust-accuracy") in by_name


def test_list_one_kind_human():
    result = invoke("list", "attacks")
    assert result.exit_code == 0
    assert "pgd" in result.output and "blog-cnn" not in result.output


def test_list_rejects_unknown_kind():
    assert invoke("list", "atacks").exit_code == ExitCode.USAGE


def test_plugins_json():
    rows = json.loads(invoke("plugins", "--all").output)
    assert {"builtin-attacks", "builtin-models", "builtin-datasets"} <= {r["name"] for r in rows}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny run on synthetic data, shared by the report tests."""
    base = tmp_path_factory.mktemp("run")
    spec = base / "spec.toml"
    from .conftest import TINY_SPEC

    spec.write_text(TINY_SPEC.format(extra=""))
    out = base / "out"
    result = invoke("run", spec, "--out", out, "--cache", base / "cache", "--no-progress")
    assert result.exit_code == 0, result.output
    return base, out, json.loads((out / "report.json").read_text()), result.output


def test_run_writes_report(finished_run):
    _, out, report, output = finished_run
    assert {"advx_version", "spec", "clean_accuracy", "results", "worst_case"} <= set(report)
    assert (out / "report.md").read_text().startswith("# advx report: tiny")
    assert (out / "spec.toml").exists()
    assert len(report["results"]) == 4
    for row in report["results"]:
        assert {"model", "attack", "norm", "eps", "n", "robust_accuracy", "attack_success_rate",
                "seconds"} <= set(row)
        assert row["n"] == 64
        assert row["robust_accuracy"] <= report["clean_accuracy"][row["model"]]
    for worst in report["worst_case"]:
        singles = [r["robust_accuracy"] for r in report["results"]
                   if r["model"] == worst["model"] and r["eps"] == worst["eps"]]
        assert worst["robust_accuracy"] <= min(singles)
    assert "Robust accuracy per attack" in output


def test_rerun_of_resolved_spec_reproduces_results(finished_run):
    """From an empty cache (model retrained, every set recomputed): the same numbers."""
    base, out, report, _ = finished_run
    again = base / "again"
    result = invoke("run", out / "spec.toml", "--out", again, "--cache", base / "fresh-cache",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    second = json.loads((again / "report.json").read_text())

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("seconds", "cache")} for r in rows]

    assert strip(second["results"]) == strip(report["results"])
    assert {r["cache"] for r in second["results"]} == {"computed"}
    assert second["clean_accuracy"] == report["clean_accuracy"]


def test_limit_and_seed_flags(finished_run, tmp_path):
    base, out, _, _ = finished_run
    result = invoke("run", out / "spec.toml", "--out", tmp_path / "o", "--cache", base / "cache",
                    "--limit", 10, "--seed", 3, "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert {r["n"] for r in report["results"]} == {10}
    assert report["spec"]["protocol"]["seed"] == 3


ERRORS = [
    ('[dataset]\nname = "mnist"\n[[models]]\nname = "blog-cnn"\n[[attacks]]\nname = "pgdd"\n'
     'norm = "linf"\neps = 0.3\n', "Did you mean 'pgd'"),
    ('[dataset]\nname = "mnist"\n[[models]]\nname = "blog-cnn"\n[[attacks]]\nname = "pgd"\n'
     'norm = "linf"\neps = 3\n', "out of range"),
    ('[dataset]\nname = "mnist"\n[[models]]\nname = "blog-cnn"\n[[attacks]]\nname = "pgd"\n'
     'norm = "l0"\neps = 3\n', "does not support norm 'l0'"),
    ('[dataset]\nname = "mnist"\n[[models]]\nname = "blog-cnn"\nlayers = 3\n', "no parameter"),
    ('[dataset]\nname = "mnist"\nbogus = 1\n[[models]]\nname = "blog-cnn"\n', "bogus"),
    ("[dataset\n", "not valid TOML"),
]


@pytest.mark.parametrize("text, message", ERRORS)
def test_bad_spec_exits_2_with_one_clear_line(tmp_path, text, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    result = invoke("run", spec, "--out", tmp_path / "out", "--cache", tmp_path / "cache")
    assert result.exit_code == ExitCode.USAGE
    assert message in result.output and str(spec) in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_spec_that_selects_no_sample_exits_2(tiny_spec, tmp_path):
    spec = tiny_spec(extra="").read_text().replace('name = "robust-accuracy"',
                                                   'name = "robust-accuracy"\nclasses = [99]')
    (tmp_path / "empty.toml").write_text(spec)
    result = invoke("run", tmp_path / "empty.toml", "--out", tmp_path / "out", "--cache",
                    tmp_path / "cache")
    assert result.exit_code == ExitCode.USAGE
    assert "classes [99] are no classes" in result.output and "0 to 9" in result.output


def test_missing_spec_file_exits_2(tmp_path):
    result = invoke("run", tmp_path / "nope.toml", "--out", tmp_path / "out")
    assert result.exit_code == ExitCode.USAGE and "nope.toml" in result.output


def test_cuda_without_cuda_exits_2(tiny_spec, tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    result = invoke("run", tiny_spec(), "--device", "cuda", "--out", tmp_path / "out")
    assert result.exit_code == ExitCode.USAGE and "CUDA" in result.output


def test_debug_shows_the_traceback(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text("[dataset\n")
    with pytest.raises(advx.UsageError):
        invoke("--debug", "run", spec)


def test_exit_codes_are_an_int_enum():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_quickstart_on_real_mnist(tmp_path):
    """The built-in quickstart trains blog-cnn on the MNIST sample and breaks it with PGD."""
    result = invoke("run", "--out", tmp_path / "out", "--cache", tmp_path / "cache",
                    "--limit", 200, "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["clean_accuracy"]["blog-cnn"] > 0.95
    pgd = {r["eps"]: r["robust_accuracy"] for r in report["results"] if r["attack"] == "pgd"}
    fgsm = {r["eps"]: r["robust_accuracy"] for r in report["results"] if r["attack"] == "fgsm"}
    assert pgd[0.3] < 0.05 and all(pgd[e] <= fgsm[e] for e in pgd)


def test_list_reports_a_broken_plugin_and_lists_the_rest(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.entry_points(group="advx")

    class Broken:
        name, value = "broken-thing", "advx_broken_thing"
        dist = type("Dist", (), {"name": "advx-broken"})()

        def load(self):
            raise ImportError("No module named 'advx_broken_thing'")

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [*real, Broken()])
    monkeypatch.setattr(advx, "_registry", None)
    result = CliRunner().invoke(cli, ["list", "attacks", "--json"])
    monkeypatch.setattr(advx, "_registry", None)
    assert result.exit_code == 0
    assert "pgd" in {e["name"] for e in json.loads(result.stdout)}
    assert "broken-thing" in result.stderr and "advx-broken" in result.stderr


LIGHT = """
import sys
from click.testing import CliRunner
from advx.cli import cli
for args in (["--version"], ["--help"]):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "advx.plugins",
                                                                    "advx.host.registry")))
print(heavy)
"""


def test_version_and_help_load_no_plugin_and_no_torch():
    """In a fresh interpreter: ``advx --version`` and ``advx --help`` import neither torch nor
    a plugin, nor do they build the registry."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_help_lists_every_builtin_command_with_its_own_help():
    """--help shows the built-in commands from a table (so it needs not import them); the
    table's help must be each command's own."""
    from advx.cli import BUILTIN, AdvxGroup

    help_text = invoke("--help").output
    group = AdvxGroup(name="fresh")
    for name, (_, short) in BUILTIN.items():
        assert name in help_text
        command = group.get_command(None, name)
        assert command.get_short_help_str(limit=300) == short, name


def test_plugin_commands_are_wired_into_the_real_group(monkeypatch):
    """A plugin's command runs as ``advx <name>`` through advx.cli.cli itself."""
    import types

    import click
    from advx.cli import AdvxGroup
    from advx.host.pluginmanager import add_plugin, load_plugins
    from advx.host.registry import Registry

    @advx.hookimpl
    def advx_register_commands(cli):
        @cli.command("hello-from-plugin")
        def hello():
            """Say hello."""
            click.echo("hello from a plugin")

    loaded = load_plugins()
    add_plugin(loaded, types.SimpleNamespace(advx_register_commands=advx_register_commands),
               "hello")
    monkeypatch.setattr(advx, "_registry", Registry(loaded))
    monkeypatch.setattr(AdvxGroup, "plugin_commands_loaded", False)
    monkeypatch.setattr(cli, "commands", dict(cli.commands))
    result = invoke("hello-from-plugin")
    assert result.exit_code == 0 and result.output == "hello from a plugin\n"
    assert "hello-from-plugin" in invoke("--help").output
    assert invoke("no-such-command").exit_code == ExitCode.USAGE
