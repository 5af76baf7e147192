"""Training recipes: how a model's weights are trained (optimizer, schedule, epochs, seed)."""

from collections.abc import Mapping

import attrs
from attrs import validators as v

from .errors import ParameterError
from .params import finite, whole

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine")


def _checked(*validators):
    """An attrs validator that reports failures as :class:`ParameterError`."""
    inner = v.and_(*validators)

    def check(instance, attribute, value):
        try:
            inner(instance, attribute, value)
        except (TypeError, ValueError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            raise ParameterError(f"train recipe: {message}") from None

    return check


@attrs.frozen(kw_only=True)
class TrainRecipe:
    """How to train a model: optimizer, learning rate, epochs, batch size and seed.

    ``lr_schedule`` "cosine" anneals the learning rate from ``lr`` to 0 over all batches.
    ``holdout`` keeps the last that many samples of the training split out of training: the
    model entry's validation split, on which detectors calibrate their thresholds.  What
    each batch's loss is (the clean cross-entropy by default; adversarial training, say) is
    the business of the training defense, not of the recipe.
    """

    optimizer: str = attrs.field(default="adam", validator=_checked(v.in_(OPTIMIZERS)))
    lr: float = attrs.field(default=1e-3, validator=_checked(finite(0, low_open=True)))
    epochs: int = attrs.field(default=5, validator=_checked(whole(1)))
    batch_size: int = attrs.field(default=128, validator=_checked(whole(1)))
    weight_decay: float = attrs.field(default=0.0, validator=_checked(finite(0)))
    momentum: float = attrs.field(default=0.9, validator=_checked(finite(0, 1, high_open=True)))
    seed: int = attrs.field(default=0, validator=_checked(whole(0)))
    lr_schedule: str = attrs.field(default="constant", validator=_checked(v.in_(LR_SCHEDULES)))
    holdout: int = attrs.field(default=0, validator=_checked(whole(0)))

    @classmethod
    def from_dict(cls, d, base=None):
        """``base`` (default: the defaults) with the fields named in ``d`` replaced."""
        base = cls() if base is None else base
        if not isinstance(d, Mapping):
            raise ParameterError(f"train recipe must be a table of fields, not {d!r}")
        if "adversary" in d:
            raise ParameterError(
                "train recipe: 'adversary' is no recipe field: adversarial training is a "
                "defense, e.g. defenses = [{ name = \"adversarial-training\", eps = 0.3, "
                "steps = 7, step_size = 0.1 }]")
        allowed = [field.name for field in attrs.fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ParameterError(f"train recipe has no field {', '.join(map(str, unknown))}; "
                                 f"allowed: {', '.join(allowed)}")
        return attrs.evolve(base, **d)

    def identity(self):
        """The fields as a dict, for cache keys: ``holdout`` only when set, so that weights
        trained before the field existed keep their keys."""
        fields = attrs.asdict(self)
        if not fields["holdout"]:
            del fields["holdout"]
        return fields

    def overrides(self, base):
        """The fields (as a dict) in which this recipe differs from ``base``."""
        mine, theirs = attrs.asdict(self), attrs.asdict(base)
        return {k: value for k, value in mine.items() if theirs[k] != value}
