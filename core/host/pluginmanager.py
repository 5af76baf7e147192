"""Loading plugins: one pluggy PluginManager, filled from the ``advx`` entry-point group.

Built-in plugins are entry points of the ``advx`` distribution itself, so they are found exactly
like a third party's. ``ADVX_DISABLE_PLUGINS`` (comma-separated entry-point names) skips some;
``ADVX_PLUGINS``, when set, loads only the names it lists.
"""

import importlib.metadata
import os

import attrs
import pluggy

from . import hookspecs

GROUP = "advx"


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded, with the reason."""

    name: str
    distribution: str
    error: str


@attrs.define
class LoadedPlugins:
    """A plugin manager with the distribution of each plugin and the plugins that failed."""

    pm: pluggy.PluginManager
    distributions: dict = attrs.Factory(dict)  # plugin name -> "dist-name"
    failures: list = attrs.Factory(list)


def _env_names(variable):
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def new_plugin_manager():
    """An empty plugin manager knowing advx's hookspecs."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(load_entrypoints=True):
    """Load every ``advx`` entry point; failures are recorded, never fatal to the others."""
    loaded = LoadedPlugins(new_plugin_manager())
    if load_entrypoints:
        disabled = _env_names("ADVX_DISABLE_PLUGINS") or set()
        only = _env_names("ADVX_PLUGINS")
        for ep in importlib.metadata.entry_points(group=GROUP):
            if ep.name in disabled or (only is not None and ep.name not in only):
                continue
            _load_one(loaded, ep)
    return loaded


def _load_one(loaded, ep):
    dist = ep.dist.name if ep.dist is not None else "unknown"
    if ep.name in loaded.distributions:
        first = loaded.distributions[ep.name]
        if first != dist:
            loaded.failures.append(PluginFailure(
                ep.name, dist, f"entry point name {ep.name!r} is also used by {first!r}"))
        return
    try:
        module = ep.load()
        loaded.pm.register(module, name=ep.name)
    except Exception as exc:  # a broken plugin must not take the others down
        loaded.failures.append(PluginFailure(ep.name, dist, f"{type(exc).__name__}: {exc}"))
        return
    try:
        loaded.pm.check_pending()
    except pluggy.PluginValidationError as exc:
        loaded.pm.unregister(name=ep.name)
        loaded.failures.append(PluginFailure(ep.name, dist, f"invalid hook: {exc}"))
        return
    loaded.distributions[ep.name] = dist


def add_plugin(loaded, plugin, name, distribution="local"):
    """Register an in-process plugin object (tests, notebooks) as if it were an entry point."""
    loaded.pm.register(plugin, name=name)
    loaded.pm.check_pending()
    loaded.distributions[name] = distribution
