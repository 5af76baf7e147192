"""Plugin instances as plain data: for set identities, weight keys, spec files and listings.

Plugins are frozen attrs classes whose fields are their parameters.  A field may hold another
plugin (a transfer attack's source attack): its metadata says ``{"plugin": "attacks"}``, the
registry builds it from a table with a ``name``, and here it is written back as that table.
The validators at the end (:func:`whole`, :func:`finite`) check numeric parameters: no bool
taken as a count, no inf or nan taken as a number.
"""

import math
import numbers

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


# -- validators for numeric plugin parameters -----------------------------------------------------
# A bool is an int in Python: ``steps = true`` must not count as 1.  Floats must be finite
# (``inf`` and ``nan`` pass ``gt(0)``-style checks, then break arithmetic much later).

# The largest step size, rate, factor or margin a parameter may take: far beyond any input
# scale, far below float32's overflow (3.4e38; 1e300 overflows as soon as it meets a tensor).
MAX_SCALE = 1e6


def whole(minimum=0, maximum=None, optional=False):
    """An attrs validator: an int (never a bool) in ``[minimum, maximum]`` (None: unbounded;
    ``optional``: None is accepted too)."""
    allowed = f"a whole number >= {minimum}" + (f" and <= {maximum}" if maximum is not None
                                                else "")

    def check(instance, attribute, value):
        if optional and value is None:
            return
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
                or (maximum is not None and value > maximum)):
            raise ValueError(f"{attribute.name} must be {allowed}"
                             f"{' or None' if optional else ''}, got {value!r}")

    return check


def finite(low=None, high=None, *, low_open=False, high_open=False, optional=False):
    """An attrs validator: a finite int or float (never a bool, a string or nan) within
    ``low`` and ``high`` (each inclusive unless ``*_open``; None: unbounded)."""
    parts = ([f"> {low:g}" if low_open else f">= {low:g}"] if low is not None else [])
    parts += ([f"< {high:g}" if high_open else f"<= {high:g}"] if high is not None else [])
    allowed = "a finite number" + (f" {' and '.join(parts)}" if parts else "")

    def check(instance, attribute, value):
        if optional and value is None:
            return
        if not is_finite_number(value) or not _within(value, low, high, low_open, high_open):
            raise ValueError(f"{attribute.name} must be {allowed}"
                             f"{' or None' if optional else ''}, got {value!r}")

    return check


def boolean(instance, attribute, value):
    """An attrs validator: ``True`` or ``False`` (never 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be true or false, got {value!r}")


def to_float(value):
    """A converter: real numbers (not bools) become floats; anything else is left for the
    validator to refuse (``float("inf")`` of a string, ``float(True)`` would hide the error)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def is_finite_number(value):
    """A real number (int, float, numpy scalar; not a bool) that is neither infinite nor nan."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) or math.isfinite(value)


def _within(value, low, high, low_open, high_open):
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)
