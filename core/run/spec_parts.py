"""The helpers that read a spec's tables and say where a spec is wrong."""

from ..kernel.errors import UsageError

MAX_DEPTH = 16  # tables and arrays nested in a spec, the top-level table counting as 1


class SpecError(UsageError):
    """A run spec that cannot be used as written."""


class Where:
    """The file and key path an error is about."""

    def __init__(self, source, key=""):
        self.source, self.key = source, key

    def at(self, key):
        return Where(self.source, f"{self.key}.{key}" if self.key else key)

    def error(self, message):
        return SpecError(f"{self.source}: [{self.key}] {message}")


def table_at(data, key, where):
    value = data.get(key)
    if not isinstance(value, dict):
        raise where.at(key).error("is missing or not a table; it needs at least name = \"...\"")
    return value


def plugin_entry(registry, kind, table, where, reserved=()):
    """The instance of the plugin named by ``table["name"]``: the remaining keys (but
    ``reserved``) are its parameters, validated by building it."""
    name = table.get("name")
    if not isinstance(name, str):
        raise where.error(f"needs name = \"...\", one of: {', '.join(registry.names(kind))}")
    params = {k: v for k, v in table.items() if k != "name" and k not in reserved}
    try:
        return registry.create(kind, name, **params)
    except UsageError as exc:
        raise where.error(str(exc)) from None


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


def check_depth(data, source):
    """Refuse values nested more than :data:`MAX_DEPTH` deep (iteratively: no recursion)."""
    level = [data]
    for _ in range(MAX_DEPTH):
        level = [v for value in level
                 for v in (value.values() if isinstance(value, dict) else value)
                 if isinstance(v, dict | list)]
        if not level:
            return
    raise SpecError(f"{source}: tables and arrays nest more than {MAX_DEPTH} levels deep; "
                    f"allowed: at most {MAX_DEPTH}")
