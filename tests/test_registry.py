"""Plugin loading and the registry: duplicates, unknown names, broken plugins, bad hooks."""

import importlib.metadata
import types
from pathlib import Path
from typing import ClassVar

import advx
import attrs
import pytest
from advx.host import hookspecs
from advx.host.pluginmanager import add_plugin, load_plugins
from advx.host.registry import Registry


def _attack(attack_name):
    @attrs.frozen(kw_only=True)
    class Dummy(advx.FixedEpsilonAttack):
        """A dummy attack for registry tests."""

        name: ClassVar[str] = attack_name
        norms: ClassVar[frozenset] = frozenset({"linf"})
        strength: float = attrs.field(default=1.0, metadata={"help": "how hard"})

        def run(self, model, x, y, threat, *, targets, rng):
            return x

    return Dummy


def _plugin_module(name, *classes):
    module = types.ModuleType(name)

    @advx.hookimpl
    def advx_register_attacks(register):
        for cls in classes:
            register(cls)

    module.advx_register_attacks = advx_register_attacks
    return module


def _registry(*plugins):
    loaded = load_plugins(load_entrypoints=False)
    for name, dist, module in plugins:
        add_plugin(loaded, module, name, distribution=dist)
    return Registry(loaded)


class TestRegistry:
    """Names are unique; lookups fail with helpful messages."""

    def test_builtin_plugins_come_from_entry_points(self):
        registry = advx.get_registry(refresh=True)
        assert registry.loaded.distributions["builtin-attacks"] == "advx"
        assert {"fgsm", "bim", "pgd"} <= set(registry.names("attacks"))
        assert {"blog-cnn", "madry-cnn", "classifier-a"} <= set(registry.names("models"))
        assert {"mnist", "fashion-mnist", "synthetic"} <= set(registry.names("datasets"))
        assert "robust-accuracy" in registry.names("protocols")
        assert not [f for f in registry.failures if f.distribution == "advx"]

    def test_duplicate_name_names_both_distributions(self):
        registry = _registry(("one", "advx-one", _plugin_module("one", _attack("spray"))),
                             ("two", "advx-two", _plugin_module("two", _attack("spray"))),
                             ("three", "advx-three", _plugin_module("three", _attack("other"))))
        with pytest.raises(advx.DuplicatePluginError, match="advx-one.*advx-two"):
            registry.get("attacks", "spray")
        assert "spray" not in registry.names("attacks")
        assert registry.get("attacks", "other").distribution == "advx-three"
        assert any("advx-two" in f.error for f in registry.failures)

    def test_unknown_name_suggests_closest(self):
        registry = _registry(("one", "advx-one", _plugin_module("one", _attack("pgd"))))
        with pytest.raises(advx.UnknownPluginError, match="Did you mean 'pgd'"):
            registry.get("attacks", "pgdd")

    def test_unknown_parameter_lists_allowed(self):
        registry = _registry(("one", "advx-one", _plugin_module("one", _attack("spray"))))
        with pytest.raises(advx.ParameterError, match="allowed: strength"):
            registry.create("attacks", "spray", strenght=2)

    def test_non_kebab_name_is_rejected_and_reported(self):
        registry = _registry(("bad", "advx-bad", _plugin_module("bad", _attack("Bad_Name"))))
        assert registry.names("attacks") == []
        assert any("kebab" in f.error for f in registry.failures)

    def test_misspelled_hook_is_caught_by_check_pending(self):
        module = types.ModuleType("typo")
        module.advx_register_atacks = advx.hookimpl(lambda register: None)
        loaded = load_plugins(load_entrypoints=False)
        with pytest.raises(Exception, match="advx_register_atacks"):
            add_plugin(loaded, module, "typo")

    def test_params_are_described(self):
        registry = _registry(("one", "advx-one", _plugin_module("one", _attack("spray"))))
        described = registry.get("attacks", "spray").describe()
        assert described["plugin"] == "advx-one"
        assert described["summary"] == "A dummy attack for registry tests."
        assert described["params"] == [{"name": "strength", "default": 1.0, "required": False,
                                         "type": "float", "help": "how hard"}]


class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint."""

    def __init__(self, name, dist, loader):
        self.name, self.dist, self._loader = name, types.SimpleNamespace(name=dist), loader

    def load(self):
        return self._loader()


class TestEntryPointLoading:
    """A broken plugin is reported and skipped; the others keep working."""

    def _patch(self, monkeypatch, eps):
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps)

    def test_import_error_is_reported_not_fatal(self, monkeypatch):
        def broken():
            raise ImportError("No module named 'missing_dependency'")

        good = _plugin_module("good", _attack("fine"))
        self._patch(monkeypatch, [FakeEntryPoint("broken", "advx-broken", broken),
                                  FakeEntryPoint("good", "advx-good", lambda: good)])
        registry = Registry(load_plugins())
        assert registry.names("attacks") == ["fine"]
        assert [(f.name, f.distribution) for f in registry.failures] == [("broken", "advx-broken")]
        assert "missing_dependency" in registry.failures[0].error

    def test_bad_hook_plugin_is_unregistered_and_reported(self, monkeypatch):
        module = types.ModuleType("typo")
        module.advx_register_atacks = advx.hookimpl(lambda register: None)
        good = _plugin_module("good", _attack("fine"))
        self._patch(monkeypatch, [FakeEntryPoint("typo", "advx-typo", lambda: module),
                                  FakeEntryPoint("good", "advx-good", lambda: good)])
        registry = Registry(load_plugins())
        assert registry.names("attacks") == ["fine"]
        assert "invalid hook" in registry.failures[0].error

    def test_disable_and_allow_lists(self, monkeypatch):
        a = _plugin_module("a", _attack("alpha"))
        b = _plugin_module("b", _attack("beta"))
        self._patch(monkeypatch, [FakeEntryPoint("a", "advx-a", lambda: a),
                                  FakeEntryPoint("b", "advx-b", lambda: b)])
        monkeypatch.setenv("ADVX_DISABLE_PLUGINS", "a")
        assert Registry(load_plugins()).names("attacks") == ["beta"]
        monkeypatch.delenv("ADVX_DISABLE_PLUGINS")
        monkeypatch.setenv("ADVX_PLUGINS", "a")
        assert Registry(load_plugins()).names("attacks") == ["alpha"]

    def test_hook_raising_is_reported(self, monkeypatch):
        module = types.ModuleType("raiser")

        @advx.hookimpl
        def advx_register_attacks(register):
            raise RuntimeError("boom")

        module.advx_register_attacks = advx_register_attacks
        self._patch(monkeypatch, [FakeEntryPoint("raiser", "advx-raiser", lambda: module)])
        registry = Registry(load_plugins())
        assert "boom" in registry.failures[0].error


HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("advx_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_is_documented_and_tested(hook):
    """Datasette's meta-tests: each hook has a docstring with :param: lines and a test."""
    spec = getattr(hookspecs, hook)
    assert spec.__doc__ and ":param" in spec.__doc__
    tests = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    assert f"def test_hook_{hook}(" in tests


def test_hook_advx_register_commands(monkeypatch):
    """A plugin adds a click command to the advx group."""
    import click
    from click.testing import CliRunner

    group = click.Group("advx")
    module = types.ModuleType("cmd")

    @advx.hookimpl
    def advx_register_commands(cli):
        @cli.command("hello")
        def hello():
            click.echo("hello from a plugin")

    module.advx_register_commands = advx_register_commands
    loaded = load_plugins(load_entrypoints=False)
    add_plugin(loaded, module, "cmd")
    loaded.pm.hook.advx_register_commands(cli=group)
    assert CliRunner().invoke(group, ["hello"]).output == "hello from a plugin\n"


def _registered_through_hook(hook_name, base, kind):
    @attrs.frozen(kw_only=True)
    class Thing(base):
        """A thing registered by a test plugin."""

        name: ClassVar[str] = "test-thing"

    module = types.ModuleType("things")
    setattr(module, hook_name, advx.hookimpl(specname=hook_name)(lambda register: register(Thing)))
    loaded = load_plugins(load_entrypoints=False)
    add_plugin(loaded, module, "things", distribution="advx-things")
    entry = Registry(loaded).get(kind, "test-thing")
    assert entry.cls is Thing and entry.distribution == "advx-things"


def test_hook_advx_register_attacks():
    _registered_through_hook("advx_register_attacks", advx.FixedEpsilonAttack, "attacks")


def test_hook_advx_register_models():
    _registered_through_hook("advx_register_models", advx.ModelPlugin, "models")


def test_hook_advx_register_datasets():
    _registered_through_hook("advx_register_datasets", advx.Dataset, "datasets")


def test_hook_advx_register_defenses():
    _registered_through_hook("advx_register_defenses", advx.Defense, "defenses")


def test_hook_advx_register_generators():
    _registered_through_hook("advx_register_generators", advx.GenerativeModel, "generators")


def test_hook_advx_register_protocols():
    _registered_through_hook("advx_register_protocols", advx.Protocol, "protocols")


def test_hook_advx_register_executors():
    _registered_through_hook("advx_register_executors", advx.Executor, "executors")


def test_register_rejects_wrong_base_class():
    module = _plugin_module("wrong", int)
    registry = _registry(("wrong", "advx-wrong", module))
    assert any("not a subclass of advx.Attack" in f.error for f in registry.failures)
