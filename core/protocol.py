"""The protocol interface: what a run measures, given a session that computes and caches."""

from typing import ClassVar

import attrs


def _positive_or_none(instance, attribute, value):
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value}")


@attrs.frozen(kw_only=True)
class Protocol:
    """Base class of evaluation protocols. Every protocol has these run-wide parameters."""

    name: ClassVar[str]
    limit: int | None = attrs.field(
        default=None, validator=_positive_or_none,
        metadata={"help": "evaluate the first N test samples (default: all)"})
    batch_size: int = attrs.field(
        default=500, validator=_positive_or_none, metadata={"help": "samples per attack batch"})
    seed: int = attrs.field(default=0, metadata={"help": "base seed of every work unit"})

    def evaluate(self, session):
        """Measure using ``session`` (an ``advx.runner.Session``); return a JSON-ready dict."""
        raise NotImplementedError
