"""Input binarization: every pixel to the lower or the upper bound around a threshold."""

import advx
import attrs
import torch
from advx import is_finite_number


def _number(instance, attribute, value):
    if not is_finite_number(value):
        raise TypeError(f"{attribute.name} must be a finite number, got {value!r}")


@attrs.frozen(kw_only=True)
class Binarize(advx.Preprocessor):
    """Sets each input value to ``high`` above ``threshold`` and to ``low`` otherwise.

    A strong baseline on MNIST (Schott et al., 2019): an Linf perturbation below the distance
    of a pixel to the threshold cannot change it.  The transform is a step function whose
    gradient is zero almost everywhere, so a naive gradient attack sees no gradient at all; in
    a spec the defense is adaptive by default (the straight-through BPDA estimate of Athalye et
    al., 2018: the backward pass is the identity), and ``show_non_adaptive = true`` on the
    model adds the naive number beside it.
    """

    name = "binarize"

    threshold: float = attrs.field(
        default=0.5, validator=_number, metadata={"help": "values above it become high"})
    low: float = attrs.field(default=0.0, validator=_number,
                             metadata={"help": "value below the threshold (the lower bound)"})
    high: float = attrs.field(default=1.0, validator=_number,
                              metadata={"help": "value above the threshold (the upper bound)"})

    def __attrs_post_init__(self):
        if not self.low < self.threshold < self.high:
            raise ValueError(f"binarize needs low < threshold < high, got low={self.low}, "
                             f"threshold={self.threshold}, high={self.high}")

    def transform(self, x):
        return torch.where(x > self.threshold, self.high, self.low).to(x.dtype)
