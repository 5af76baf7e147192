"""The logit margin shared by the Carlini-Wagner attacks (Carlini & Wagner, 2017).

The margin of a sample says how far past the decision boundary its logits ``Z`` are, in logit
units: untargeted ``max_{i != y} Z_i - Z_y`` (positive: misclassified), targeted
``Z_t - max_{i != t} Z_i`` (positive: classified as the target t).  Carlini & Wagner's loss
f6 is ``max(-margin, -kappa)``; minimising it (CW-L2) or maximising ``min(margin, kappa)``
(Madry et al.'s CW loss for PGD, "CW+" when kappa > 0) pushes a sample past the boundary by
the confidence ``kappa`` and no further.
"""

import attrs
from advx import MAX_SCALE, finite, fold_rejection, to_float

from . import _losses
from ._gradients import gradient_by_chunks


def margin(logits, labels, targeted):
    """Per-sample margin of ``logits`` w.r.t. ``labels``; positive means adversarial (minus
    the margin Square lowers, :func:`advx.plugins.attacks._losses.margin`)."""
    return -_losses.margin(logits, labels, targeted)


def reached(logits, labels, targeted, kappa):
    """Per-sample success with confidence: the prediction is adversarial and margin >= kappa.

    The prediction (argmax) is checked as well, so that a tie on the boundary never counts
    as a success the core would not count.
    """
    pred = fold_rejection(logits, labels, targeted).argmax(1)
    adversarial = pred == labels if targeted else pred != labels
    return adversarial & (margin(logits, labels, targeted) >= kappa)


def clamped_margin_gradient(model, x_adv, labels, targeted, kappa):
    """``(gradient of sum(min(margin, kappa)) w.r.t. x_adv, logits)``.

    One forward and one backward pass; gradients are taken w.r.t. ``x_adv`` only.  Samples
    whose margin exceeds kappa get a zero gradient (the clamp is flat there).
    """
    def value(leaf, rows):
        logits = model(leaf)
        return margin(logits, labels[rows], targeted).clamp_max(kappa), logits

    grad, _, logits = gradient_by_chunks(x_adv, value)
    return grad, logits


def confidence_field():
    """The ``confidence`` (kappa) parameter of the Carlini-Wagner attacks."""
    return attrs.field(
        default=0.0, converter=to_float, validator=finite(0, MAX_SCALE),
        metadata={"help": "confidence kappa: the logit margin past the decision boundary an "
                          "example must reach to count as found (0: just across)"})
