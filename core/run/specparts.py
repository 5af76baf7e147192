"""The pieces of a parsed run spec, and the helpers that report where a spec is wrong."""

import attrs

from ..kernel.errors import UsageError
from ..kernel.threat import ThreatModel

TARGET_MODES = ("random", "next", "least-likely")


class SpecError(UsageError):
    """A run spec that cannot be used as written."""


@attrs.frozen
class PluginSpec:
    """A plugin name with its parameters, as written in the spec."""

    name: str
    params: dict = attrs.field(factory=dict)


@attrs.frozen
class ModelSpec:
    id: str
    plugin: PluginSpec
    train: dict = attrs.field(factory=dict)
    checkpoint: str | None = None
    defenses: tuple = ()  # PluginSpecs, in the order an input meets them
    adaptive: bool = True  # preprocessors pass a straight-through (BPDA) gradient


@attrs.frozen
class AttackSpec:
    id: str
    plugin: PluginSpec
    norm: str
    eps: tuple  # floats; (None,) for a minimisation attack without eps
    targeted: bool = False
    target: object = None  # an int class, or one of TARGET_MODES

    def threat(self, eps, bounds):
        return ThreatModel(norm=self.norm, eps=eps, bounds=bounds, targeted=self.targeted)


class Where:
    """The file and key path an error is about."""

    def __init__(self, source, key=""):
        self.source, self.key = source, key

    def at(self, key):
        return Where(self.source, f"{self.key}.{key}" if self.key else key)

    def error(self, message):
        return SpecError(f"{self.source}: [{self.key}] {message}")


def no_unknown(table, allowed, source, what):
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise SpecError(f"{source}: unknown key {', '.join(map(repr, unknown))} in {what}; "
                        f"allowed: {', '.join(allowed)}")


def table_at(data, key, where):
    value = data.get(key)
    if not isinstance(value, dict):
        raise where.at(key).error("is missing or not a table; it needs at least name = \"...\"")
    return value


def plugin_entry(registry, kind, table, where, reserved=()):
    """``(PluginSpec, instance)`` of the plugin named by ``table["name"]``; the remaining keys
    are its parameters, validated by building the instance."""
    name = table.get("name")
    if not isinstance(name, str):
        raise where.error(f"needs name = \"...\", one of: {', '.join(registry.names(kind))}")
    params = {k: v for k, v in table.items() if k != "name" and k not in reserved}
    try:
        instance = registry.create(kind, name, **params)
    except UsageError as exc:
        raise where.error(str(exc)) from None
    return PluginSpec(name, params), instance


def array_of_tables(value, where, allow_empty):
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise where.error("must be an array of tables ([[...]] entries)")
    if not value and not allow_empty:
        raise where.error("needs at least one entry")
    return value


def unique_id(table, used, where):
    ident = table.get("id", table.get("name"))
    if not isinstance(ident, str) or not ident:
        raise where.error("id must be a non-empty string")
    if ident in used:
        raise where.error(f"id {ident!r} is used twice; give each entry its own id = \"...\"")
    used.add(ident)
    return ident
