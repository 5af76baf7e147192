"""The registry: every plugin class the loaded plugins registered, and the spec tables they claim.

Names are lowercase kebab-case and unique per kind. When two plugins register the same name, the
name is unusable and both distributions are named in the error; every other name keeps working.
The registry builds instances (:meth:`Registry.create`), and it builds the plugins nested in
their parameters (a field whose metadata says ``{"plugin": "attacks"}`` takes an attack table)
with itself, so a registry handed to a run is the one every part of the run uses.
"""

import re
import typing

import attrs

from ..kernel.attack import Attack
from ..kernel.dataset import Dataset
from ..kernel.defense import Defense, with_preset
from ..kernel.errors import DuplicatePluginError, ParameterError, UnknownPluginError, UsageError
from ..kernel.executor import Executor
from ..kernel.generative import GenerativeModel
from ..kernel.model import ModelPlugin
from ..kernel.params import PLUGIN_KEY
from ..kernel.protocol import Protocol
from .pluginmanager import PluginFailure, load_plugins

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
TABLE_HOOK = "advx_register_tables"

# plural kind -> (singular, hook name, base class)
KINDS = {
    "attacks": ("attack", "advx_register_attacks", Attack),
    "models": ("model", "advx_register_models", ModelPlugin),
    "datasets": ("dataset", "advx_register_datasets", Dataset),
    "defenses": ("defense", "advx_register_defenses", Defense),
    "protocols": ("protocol", "advx_register_protocols", Protocol),
    "generators": ("generator", "advx_register_generators", GenerativeModel),
    "executors": ("executor", "advx_register_executors", Executor),
}


@attrs.frozen
class Entry:
    """One registered class (or spec table parser) and who registered it."""

    kind: str
    name: str
    cls: typing.Any  # the class; for a spec table, its parse function
    plugin: str  # entry-point (plugin) name
    distribution: str

    def describe(self):
        """A JSON-ready description: name, kind, plugin, summary, params."""
        described = {"name": self.name, "kind": self.kind, "plugin": self.distribution,
                     "summary": summary(self.cls), "params": describe_params(self.cls)}
        if self.kind == "defense":  # its kind (preprocessor, detector, ...)
            described["defense_kind"] = self.cls.kind
        if self.kind in ("defense", "generator", "model"):
            described["presets"] = dict(getattr(self.cls, "presets", {}))
        return described


class Registrar:
    """The ``register`` callable handed to one plugin's registry hook."""

    def __init__(self, registry, kind, plugin, distribution):
        self._registry, self._kind = registry, kind
        self._plugin, self._distribution = plugin, distribution

    def __call__(self, cls):
        singular, _, base = KINDS[self._kind]
        name = getattr(cls, "name", None)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{self._plugin}: {cls!r} is not a subclass of advx.{base.__name__}")
        _check_name(self._plugin, singular, name)
        self._registry._add(self._kind, Entry(singular, name, cls, self._plugin,
                                              self._distribution))
        return cls

    add = __call__


class TableRegistrar(Registrar):
    """The ``register(name, parse)`` callable of ``advx_register_tables``."""

    def __call__(self, name, parse):
        _check_name(self._plugin, "spec table", name)
        if not callable(parse):
            raise TypeError(f"{self._plugin}: the parser of table {name!r} is not callable")
        self._registry._add("tables", Entry("spec table", name, parse, self._plugin,
                                            self._distribution))
        return parse


class Registry:
    """Registered classes of every kind, built by calling each plugin's hooks."""

    def __init__(self, loaded):
        self.loaded = loaded
        self.failures = list(loaded.failures)
        self._entries = {kind: {} for kind in (*KINDS, "tables")}
        self._conflicts = {kind: {} for kind in (*KINDS, "tables")}
        for kind, (_, hook_name, _) in KINDS.items():
            self._collect(kind, hook_name, Registrar)
        self._collect("tables", TABLE_HOOK, TableRegistrar)

    @classmethod
    def from_entrypoints(cls):
        return cls(load_plugins())

    @property
    def hook(self):
        """The plugin manager's hook relay (``registry.hook.advx_run_finished(...)``)."""
        return self.loaded.pm.hook

    def _collect(self, kind, hook_name, registrar):
        hook = getattr(self.loaded.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin = self.loaded.pm.get_name(impl.plugin)
            dist = self.loaded.distributions.get(plugin, plugin)
            try:
                impl.function(register=registrar(self, kind, plugin, dist))
            except Exception as exc:  # one broken plugin must not hide the others
                self.failures.append(PluginFailure(plugin, dist, f"{type(exc).__name__}: {exc}"))

    def _add(self, kind, entry):
        existing = self._entries[kind].get(entry.name)
        if existing is not None or entry.name in self._conflicts[kind]:
            first = existing.distribution if existing else self._conflicts[kind][entry.name][0]
            self._entries[kind].pop(entry.name, None)
            self._conflicts[kind][entry.name] = (first, entry.distribution)
            self.failures.append(PluginFailure(entry.plugin, entry.distribution, str(
                DuplicatePluginError(entry.kind, entry.name, first, entry.distribution))))
            return
        self._entries[kind][entry.name] = entry

    def names(self, kind):
        return sorted(self._entries[_plural(kind)])

    def entries(self, kind):
        return [self._entries[_plural(kind)][name] for name in self.names(kind)]

    def get(self, kind, name):
        """The :class:`Entry` registered as ``name``; a clear error when there is none."""
        kind = _plural(kind)
        singular = KINDS[kind][0] if kind in KINDS else "spec table"
        if name in self._conflicts[kind]:
            first, second = self._conflicts[kind][name]
            raise DuplicatePluginError(singular, name, first, second)
        try:
            return self._entries[kind][name]
        except KeyError:
            raise UnknownPluginError(singular, name, self._entries[kind]) from None

    def tables(self):
        """Spec table name -> parse function, for every table a plugin claimed."""
        return {name: entry.cls for name, entry in self._entries["tables"].items()}

    def create(self, kind, name, **params):
        """An instance of the class registered as ``name``, built from ``params``.

        A defense's, generator's or model's ``preset`` parameter fills in the values of that preset
        that ``params`` do not set (see :func:`advx.kernel.defense.with_preset`).  Parameters
        that hold a plugin are built from their tables by this registry.
        """
        entry = self.get(kind, name)
        if entry.kind in ("defense", "generator", "model"):
            try:
                params = with_preset(entry.cls, params)
            except KeyError as exc:
                raise ParameterError(exc.args[0]) from None
        return instantiate(entry.cls, entry.kind, params, self)


def _check_name(plugin, what, name):
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"{plugin}: {what} name {name!r} is not kebab-case")


def _plural(kind):
    plural = kind if kind.endswith("s") else kind + "s"
    if plural not in KINDS and plural != "tables":
        raise UsageError(f"unknown plugin kind {kind!r}; allowed: {', '.join(KINDS)}")
    return plural


def summary(cls):
    """The first paragraph of the class (or function) docstring, on one line."""
    doc = (cls.__doc__ or "").strip()
    return " ".join(doc.split("\n\n", 1)[0].split()) if doc else ""


def describe_params(cls):
    """Name, default (None if required), type and help of each attrs field of ``cls``."""
    params = []
    hints = typing.get_type_hints(cls) if attrs.has(cls) else {}
    for field in attrs.fields(cls) if attrs.has(cls) else ():
        if field.name.startswith("_") or not field.init:
            continue
        default = field.default
        if isinstance(default, attrs.Factory):
            default = default.factory()
        required = default is attrs.NOTHING
        hint = hints.get(field.name, field.type)
        kind = field.metadata.get(PLUGIN_KEY)
        params.append({
            "name": field.name,
            "default": None if required else default,
            "required": required,
            "type": (f"{KINDS[kind][0]} table" if kind in KINDS else
                     getattr(hint, "__name__", str(hint)) if hint is not None else None),
            "help": field.metadata.get("help", ""),
        })
    return params


def instantiate(cls, kind, params, registry=None):
    """``cls(**params)`` with unknown or invalid parameters reported as :class:`ParameterError`;
    plugin-valued parameters given as tables (or left at a table default) are built by
    ``registry``."""
    allowed = [p["name"] for p in describe_params(cls)]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(f"{kind} {cls.name!r} has no parameter {', '.join(unknown)}; "
                             f"allowed: {', '.join(allowed) or 'none'}")
    if registry is not None:
        params = _nested(cls, kind, params, registry)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{kind} {cls.name!r}: {exc}") from None


def _nested(cls, kind, params, registry):
    """``params`` with each plugin-valued parameter given as a table built into a plugin."""
    params = dict(params)
    for field in attrs.fields(cls):
        nested = field.metadata.get(PLUGIN_KEY)
        if nested is None:
            continue
        value = params.get(field.name, _table_default(field))
        if not isinstance(value, dict):
            continue
        table = dict(value)
        name = table.pop("name", None)
        if not isinstance(name, str):
            raise ParameterError(f"{kind} {cls.name!r}: {field.name} needs name = \"...\", "
                                 f"one of: {', '.join(registry.names(nested))}")
        try:
            params[field.name] = registry.create(nested, name, **table)
        except UsageError as exc:
            raise ParameterError(f"{kind} {cls.name!r}: {field.name}: {exc}") from None
    return params


def _table_default(field):
    default = field.default
    if isinstance(default, attrs.Factory) and not default.takes_self:
        default = default.factory()
    return default if isinstance(default, dict) else None
