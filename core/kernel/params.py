"""Plugin instances as plain data: for set identities, weight keys, spec files and listings.

Plugins are frozen attrs classes whose fields are their parameters.  A field may hold another
plugin (a transfer attack's source attack): its metadata says ``{"plugin": "attacks"}``, the
registry builds it from a table with a ``name``, and here it is written back as that table.
"""

import attrs
import torch

PLUGIN_KEY = "plugin"  # field metadata: the kind of plugin a parameter holds
IDENTITY_KEY = "identity"  # field metadata False: the parameter is no part of the identity


def is_plugin(value):
    """True for an instance of a registered plugin class (an attrs class with a ``name``)."""
    return attrs.has(type(value)) and isinstance(getattr(type(value), "name", None), str)


def plugin_params(instance, *, defaults=True, identity=False):
    """The instance's parameters as plain data: every init field (``defaults`` False: only
    those that differ from the field's default), nested plugins as ``{"name": ..., ...}``
    tables and torch modules as a short description.  With ``identity``, the fields whose
    metadata says ``{"identity": False}`` are left out (what a cache key must not hold)."""
    params = {}
    for field in attrs.fields(type(instance)):
        if not field.init or field.name.startswith("_"):
            continue
        if identity and field.metadata.get(IDENTITY_KEY) is False:
            continue
        value = getattr(instance, field.name)
        if not defaults and _is_default(field, value):
            continue
        params[field.name] = _plain(value, defaults)
    return params


def plugin_table(instance, *, defaults=False):
    """``{"name": ..., **params}``: the table a spec writes for ``instance``."""
    return {"name": type(instance).name, **plugin_params(instance, defaults=defaults)}


def plugin_identity(instance):
    """``{"name": ..., "params": {...}}`` with every parameter that joins a cache key
    (defaults included)."""
    return {"name": type(instance).name, "params": plugin_params(instance, identity=True)}


def _is_default(field, value):
    default = field.default
    if isinstance(default, attrs.Factory):
        default = default.factory() if not default.takes_self else attrs.NOTHING
    if default is attrs.NOTHING:
        return False
    try:
        return bool(default == value) and type(default) is type(value)
    except (TypeError, RuntimeError):
        return False


def _plain(value, defaults):
    if is_plugin(value):
        return plugin_table(value, defaults=defaults)
    if isinstance(value, torch.nn.Module):
        return f"<module {type(value).__name__}>"
    if isinstance(value, tuple | list):
        return [_plain(v, defaults) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, defaults) for k, v in value.items()}
    return value
