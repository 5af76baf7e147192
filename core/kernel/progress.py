"""Progress displays: the interface long loops report through, and the silent default.

A *progress factory* is a callable ``progress(description, total)`` returning a context
manager that yields ``advance(n=1, status=None)``.  The core calls it for training epochs and
adversarial sets; the command line passes one that draws bars, everything else runs silent.
"""

import contextlib


def _advance_nothing(n=1, status=None):
    """Advance nothing: the display is off."""


@contextlib.contextmanager
def no_progress(description, total):
    """The silent progress factory."""
    yield _advance_nothing
