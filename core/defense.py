"""The defense interface. Defense plugins arrive with the defenses issue; the kind exists now."""

from typing import ClassVar

import attrs

DEFENSE_KINDS = ("preprocessor", "detector", "training", "model")


@attrs.frozen(kw_only=True)
class Defense:
    """Base class of defenses: preprocessors, detectors, training recipes or whole models."""

    name: ClassVar[str]
    kind: ClassVar[str] = "preprocessor"

    def wrap(self, model):
        """Return a module that applies this defense around ``model``."""
        raise NotImplementedError
