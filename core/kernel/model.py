"""The model interface that model plugins implement: a named builder plus a training recipe."""

from typing import ClassVar

import attrs
import torch
from torch import nn


@attrs.frozen(kw_only=True)
class ModelPlugin:
    """Base class of model plugins: builds an untrained ``torch.nn.Module`` for a dataset.

    The module maps inputs (N, C, H, W) in the dataset's bounds to logits (N, classes).
    ``default_recipe`` overrides fields of :class:`advx.TrainRecipe` for this architecture.
    """

    name: ClassVar[str]
    default_recipe: ClassVar[dict] = {}

    def build(self, info):
        """A freshly initialised module for a dataset described by ``info`` (DatasetInfo)."""
        raise NotImplementedError


REJECT_ATTRIBUTE = "advx_reject_index"


def reject_index(module):
    """The output index meaning "rejected" of a module behind a detector (None: no detector).

    A detector turns an N-class classifier into one with N + 1 outputs (see
    :class:`advx.Detector`); its module, and every wrapper around it, carries the index N as
    the attribute ``advx_reject_index``.
    """
    return getattr(module, REJECT_ATTRIBUTE, None)


MIN_ROWS = 16  # passes on fewer rows are padded to this many


class InvariantBatches(nn.Module):
    """``module`` with every pass on fewer than :data:`MIN_ROWS` rows padded to that many.

    A sample's logits must not depend on which other samples share its batch, or a set would
    change with the batch size.  Convolutions and element-wise layers compute each row alike
    whatever the batch, but BLAS libraries switch to other kernels for matrices of a few rows:
    on CPU, torch's matrix products round differently for 1 to 3 rows (one thread) and for
    fewer than 12 rows not divisible by 4 (two threads), while every batch of 12 rows or more
    gives each row the same bits.  The padding rows repeat the last row, detached (no
    gradient flows through them), and their outputs are dropped.  The wrapper carries the
    module's reject index and answers ``conv_layers()`` for it.
    """

    def __init__(self, module, min_rows=MIN_ROWS):
        super().__init__()
        self.module, self.min_rows = module, min_rows
        if reject_index(module) is not None:
            setattr(self, REJECT_ATTRIBUTE, reject_index(module))

    def forward(self, x):
        n = len(x)
        if n == 0 or n >= self.min_rows:
            return self.module(x)
        padding = x[-1:].detach().expand(self.min_rows - n, *x.shape[1:])
        return self.module(torch.cat([x, padding]))[:n]

    def conv_layers(self):
        """The wrapped module's convolutions (:func:`advx.conv_layers` looks for this)."""
        inner = self.module
        if hasattr(inner, "conv_layers"):
            return list(inner.conv_layers())
        return [m for m in inner.modules() if isinstance(m, nn.Conv2d)]
