"""The protocol interface: what a run measures, given a session that computes and caches."""

from typing import ClassVar

import attrs


def _positive_or_none(instance, attribute, value):
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value}")


def _class_list(instance, attribute, value):
    if (not isinstance(value, list | tuple) or not value
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                       for c in value)):
        raise ValueError(f"classes must be a non-empty list of class indices >= 0, "
                         f"got {value!r}")


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
    classes: tuple | None = attrs.field(
        default=None, validator=attrs.validators.optional(_class_list),
        converter=attrs.converters.optional(lambda v: tuple(v) if isinstance(v, list) else v),
        metadata={"help": "evaluate only test samples with these labels (then the limit "
                          "applies); default: every class"})

    def evaluate(self, session):
        """Measure using ``session`` (an ``advx.runner.Session``); return a JSON-ready dict."""
        raise NotImplementedError
