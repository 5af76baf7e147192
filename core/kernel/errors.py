"""Exceptions and exit codes shared by the core, the plugins and the CLI."""

import difflib
import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of the ``advx`` command."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PLUGIN_ERROR = 3
    BELOW_THRESHOLD = 4


class AdvxError(Exception):
    """Base class of every error advx raises on purpose."""


class UsageError(AdvxError, ValueError):
    """Bad input from the user: a spec, a parameter, a name. The CLI exits 2."""


class StorageError(UsageError):
    """A file advx must write cannot be: the disk is full, a quota is reached, the folder is
    read-only or not writable. What was stored before is kept; the CLI exits 2."""


class UnknownPluginError(UsageError, LookupError):
    """A name that no installed plugin registered."""

    def __init__(self, kind, name, known):
        self.kind, self.name = kind, name
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(sorted(known)) or "none"
        super().__init__(f"{name!r} is not a registered {kind}.{hint} Registered: {listing}.")


class DuplicatePluginError(AdvxError):
    """Two plugins registered the same name for the same kind."""

    def __init__(self, kind, name, first, second):
        super().__init__(
            f"{kind} {name!r} is registered twice: by {first!r} and by {second!r}. "
            "Uninstall one of the two distributions, or disable one with ADVX_DISABLE_PLUGINS."
        )


class PluginLoadError(AdvxError):
    """A plugin that could not be imported or whose hooks are malformed."""


class ThreatModelViolation(AdvxError):
    """An attack returned examples outside its threat model's ball or input bounds."""


class ParameterError(UsageError):
    """A plugin parameter that is unknown or out of range."""
