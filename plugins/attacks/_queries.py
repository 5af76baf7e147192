"""Bookkeeping shared by the score- and decision-based attacks: queries, verdicts and pixels.

A *query* is one model evaluation of one sample whose answer the attack uses.  Every attack here
counts its queries per sample in an int64 tensor and never spends more than its budget.  Where a
batched step evaluates a row whose answer is discarded (a sample that finished inside the block
of steps between two host syncs), that row is not counted: the count, like the result, then does
not depend on which other samples share the batch.

Model calls go through :func:`logits_of`, which runs under ``torch.no_grad``: these attacks never
read gradients.  A call on some samples only, or on several rows per sample, declares them
(``with advx.for_samples(index)``), so that the core counts each row for its sample.
"""

import advx
import attrs
import torch
from advx import fold_rejection, whole
from torch.nn import functional as F

from ._gradients import fooled, per_sample


def budget_field(default, help_text, check=None):
    """The ``queries`` parameter: a per-sample budget of model evaluations, or None.

    ``check(instance, value)`` may raise ValueError for budgets too small for the attack.
    """
    def validate(instance, attribute, value):
        if value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"queries must be a whole number >= 1 or None, got {value!r}")
        if check is not None:
            check(instance, value)

    return attrs.field(default=default, validator=validate, metadata={"help": help_text})


def count_field(default, help_text, minimum=1):
    """An integer parameter (steps, draws, repeats) with a lower bound."""
    return attrs.field(
        default=default,
        validator=whole(minimum),
        metadata={"help": help_text})


def no_queries(x):
    """A per-sample query counter at zero."""
    return torch.zeros(len(x), dtype=torch.int64, device=x.device)


def logits_of(model, x, max_batch=None):
    """The model's logits on ``x`` without gradients, in chunks of at most ``max_batch`` rows
    (each declared: :func:`advx.for_samples`)."""
    with torch.no_grad():
        if max_batch is None or len(x) <= max_batch:
            return model(x)
        parts = []
        for rows in torch.arange(len(x), device=x.device).split(max_batch):
            with advx.for_samples(rows):
                parts.append(model(x[rows]))
        return torch.cat(parts)


def adversarial(model, x, labels, targeted):
    """Per-sample verdicts (one query each): classified as the target, or not as the label."""
    return fooled(logits_of(model, x), labels, targeted)


def label_probability(logits, labels, targeted=False):
    """The softmax probability of ``labels`` (one per row) under ``logits`` (untargeted,
    behind a detector, with the rejection folded into the label: :func:`advx.fold_rejection`)."""
    logits = fold_rejection(logits, labels, targeted)
    return F.softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)


def pixel_view(x):
    """``x`` viewed as (N, C, H, W): images as they are, other shapes as (N, 1, 1, elements).

    The threat model's L0 counts pixels of 4-D batches and elements otherwise; in this view
    both are the (H, W) positions.
    """
    return x if x.dim() == 4 else x.reshape(len(x), 1, 1, -1)


def pixel_shape(x):
    """The shape of one value per pixel of :func:`pixel_view`, broadcastable against it."""
    n, _, height, width = pixel_view(x).shape
    return (n, 1, height, width)


def uniform_noise(x, bounds, rng):
    """Noise uniform in ``bounds``, shaped like ``x``, from ``rng`` (a stream per sample)."""
    lower, upper = bounds
    u = rng.rand(x.shape[1:], dtype=x.dtype)
    return lower + (upper - lower) * u


def where_sample(mask, a, b):
    """``a`` for samples where ``mask`` is True, else ``b``."""
    return torch.where(per_sample(mask, a), a, b)


def l2_norms(delta):
    """Per-sample L2 norms of a batch."""
    return delta.flatten(1).norm(p=2, dim=1)
