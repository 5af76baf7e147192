"""The recipe fields a training defense (or its preset) may set over the model's recipe."""

import advx
import attrs
from advx import finite, whole
from attrs import validators as v

FIELDS = ("epochs", "lr", "batch_size", "optimizer", "lr_schedule")


def _optional(kind, help_text, check):
    return attrs.field(default=None, validator=v.optional([v.instance_of(kind), check]),
                       metadata={"help": help_text})


@attrs.frozen(kw_only=True)
class RecipeOverrides(advx.TrainingDefense):
    """A training defense whose fields ``epochs``, ``lr``, ``batch_size``, ``optimizer`` and
    ``lr_schedule`` replace the model's recipe where they are set (None: keep it)."""

    epochs: int | None = _optional(int, "epochs (None: the model's recipe)", whole(1))
    lr: float | None = _optional((int, float), "learning rate (None: the model's recipe)",
                                 finite(0, low_open=True))
    batch_size: int | None = _optional(int, "batch size (None: the model's recipe)", whole(1))
    optimizer: str | None = _optional(str, "adam or sgd (None: the model's recipe)",
                                      v.in_(("adam", "sgd")))
    lr_schedule: str | None = _optional(str, "constant or cosine (None: the model's recipe)",
                                        v.in_(("constant", "cosine")))

    def recipe(self, base):
        return attrs.evolve(base, **{f: getattr(self, f) for f in FIELDS
                                     if getattr(self, f) is not None})
