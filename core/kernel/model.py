"""The model interface that model plugins implement: a named builder plus a training recipe."""

import contextlib
import contextvars
from typing import ClassVar

import attrs
import torch
from torch import nn


@attrs.frozen(kw_only=True)
class ModelPlugin:
    """Base class of model plugins: builds an untrained ``torch.nn.Module`` for a dataset.

    The module maps inputs (N, C, H, W) in the dataset's bounds to logits (N, classes).
    ``default_recipe`` overrides fields of :class:`advx.TrainRecipe` for this architecture.
    ``access`` is what an attacker gets from the module: "gradient" (its input gradient is
    the true one) or "score" (its outputs only: a model that classifies by an optimisation at
    inference, ABS, has no useful gradient).  A spec that runs a gradient attack on a
    score-only model is refused; the attack reaches it through gradient estimates
    (``{ name = "estimated-gradient", attack = { ... } }``).
    """

    name: ClassVar[str]
    default_recipe: ClassVar[dict] = {}
    access: ClassVar[str] = "gradient"
    offers: ClassVar[frozenset] = frozenset()  # e.g. "class-reconstructions" (Attack.requires)

    def build(self, info):
        """A freshly initialised module for a dataset described by ``info`` (DatasetInfo)."""
        raise NotImplementedError

    def train(self, module, recipe, context):
        """Train ``module`` (from :meth:`build`) by ``recipe``; ``context`` is the run's
        :class:`advx.BuildContext`.  The default is the standard loop on the cross-entropy
        (``context.fit``); a model with another objective (a generative classifier: its
        ``loss`` through ``context.fit(module, recipe, loss=...)``) or none (a nearest-neighbour
        classifier stores ``context.dataset``'s training split) overrides it."""
        context.fit(module, recipe, label=self.name)


REJECT_ATTRIBUTE = "advx_reject_index"


def reject_index(module):
    """The output index meaning "rejected" of a module behind a detector (None: no detector).

    A detector turns an N-class classifier into one with N + 1 outputs (see
    :class:`advx.Detector`); its module, and every wrapper around it, carries the index N as
    the attribute ``advx_reject_index``.
    """
    return getattr(module, REJECT_ATTRIBUTE, None)


def carry_reject_index(outer, inner):
    """``outer`` (a module around ``inner``) with ``inner``'s reject index when it declares
    none itself: a detector's rejections stay rejections behind any wrapper."""
    if reject_index(outer) is None and reject_index(inner) is not None:
        setattr(outer, REJECT_ATTRIBUTE, reject_index(inner))
    return outer


_ATTACKED_REJECT = contextvars.ContextVar("advx_attacked_reject_index", default=None)


@contextlib.contextmanager
def attacking(module):
    """While the block runs, :func:`fold_rejection` folds ``module``'s reject output (the
    core enters it around every :meth:`advx.Attack.run`)."""
    token = _ATTACKED_REJECT.set(reject_index(module))
    try:
        yield
    finally:
        _ATTACKED_REJECT.reset(token)


def fold_rejection(logits, labels, targeted=False):
    """The logits an untargeted attack should score on a model behind a detector.

    Against a detector, rejection is no success: the attacker needs a class other than both
    the label and "rejected".  So the reject output of the model under attack (see
    :func:`attacking`) is folded into the label's: ``z_y := max(z_y, z_reject)``, and the
    reject column leaves, which makes every loss written for N classes (cross-entropy, logit
    margin, DLR) and every success check adaptive to the detector (the N+1-class view of
    Carlini & Wagner, 2017).  Targeted, or on a model without a detector, ``logits`` are
    returned as they are (a target is reached only when it beats the reject output too).
    """
    reject = _ATTACKED_REJECT.get()
    if targeted or reject is None or logits.dim() != 2 or reject >= logits.shape[1]:
        return logits
    column = labels.unsqueeze(1)
    held = torch.maximum(logits.gather(1, column), logits[:, reject:reject + 1])
    folded = logits.scatter(1, column, held)
    if reject == logits.shape[1] - 1:
        return folded[:, :reject]
    floor = folded.detach().amin(1, keepdim=True) - 1e4  # never the largest, still finite
    return torch.cat([folded[:, :reject], floor, folded[:, reject + 1:]], 1)


ROW_MULTIPLE = 16  # every pass is padded to a multiple of this many rows


class InvariantBatches(nn.Module):
    """``module`` with every pass padded to a multiple of :data:`ROW_MULTIPLE` rows.

    A sample's logits must not depend on which other samples share its batch, or a set would
    change with the batch size.  Convolutions and element-wise layers compute each row alike
    whatever the batch, but the CPU's matrix products split their rows among threads and give
    a thread of 1 to 3 rows another kernel, which rounds differently: measured with torch
    2.13's CPU build, a linear layer's row changed for batches of 1-3 rows at one thread, and
    for some batches of fewer than 28 (16 threads) or 52 (32 threads) rows not divisible by 4,
    while every batch whose size is a multiple of 4 (4 to 1,024 rows, 1 to 64 threads,
    forward and input gradient, any position of the row) gave each row the same bits.
    Padding to multiples of 16 covers that with room for wider kernels.  (CUDA libraries also choose
    kernels by shape; this has not been checked on a GPU.)  The padding rows repeat the last
    row, detached (no gradient flows through them), and their outputs are dropped.  The
    wrapper carries the module's reject index and answers ``conv_layers()`` for it.
    """

    def __init__(self, module, multiple=ROW_MULTIPLE):
        super().__init__()
        self.module, self.multiple = module, multiple
        carry_reject_index(self, module)

    def forward(self, x):
        n = len(x)
        extra = -n % self.multiple
        if n == 0 or extra == 0:
            return self.module(x)
        padding = x[-1:].detach().expand(extra, *x.shape[1:])
        return self.module(torch.cat([x, padding]))[:n]

    def conv_layers(self):
        """The wrapped module's convolutions (the reports plugin's activation pictures look
        for this method)."""
        inner = self.module
        if hasattr(inner, "conv_layers"):
            return list(inner.conv_layers())
        return [m for m in inner.modules() if isinstance(m, nn.Conv2d)]
