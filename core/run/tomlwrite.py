"""A small TOML writer for resolved run specs (the standard library only reads TOML)."""

import json


def _value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):  # None stands for a default: left out, as in tables
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()
                                if v is not None) + " }"
    if value is None:
        raise ValueError("TOML has no null value")
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key):
    return key if key.replace("-", "").replace("_", "").isalnum() else json.dumps(key)


def _pairs(table):
    return [f"{_key(k)} = {_value(v)}" for k, v in table.items() if v is not None]


def dumps(data):
    """TOML text for ``data``: scalars, inline tables, tables and arrays of tables."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict | list) or _inline(v)}
    lines = _pairs(scalars)
    for key, value in data.items():
        if key in scalars:
            continue
        if isinstance(value, dict):
            lines += ["", f"[{_key(key)}]", *_pairs(value)]
        else:
            for table in value:
                lines += ["", f"[[{_key(key)}]]", *_pairs(table)]
    return "\n".join(lines).lstrip("\n") + "\n"


def _inline(value):
    return isinstance(value, list) and not (value and all(isinstance(v, dict) for v in value))
