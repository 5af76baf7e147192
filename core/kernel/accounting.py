"""Which samples of an attacked batch a model call's rows belong to.

The core counts every forward and backward pass an attack makes, per sample (see
:mod:`advx.kernel.budget`).  A call on the whole batch, row ``i`` for sample ``i``, needs no
help.  An attack that calls the model on some samples only (the ones still unbroken), or on
several rows per sample (random probes), says which samples the rows are::

    with advx.for_samples(index):      # index: int64 tensor, one batch sample per row
        logits = model(x[index])

Blocks nest: inside ``for_samples(outer)``, ``for_samples(inner)`` names rows of the outer
selection (``outer[inner]`` in the batch), so a helper that splits its input into chunks
declares its chunks whatever its caller selected.  A call whose rows no block names and whose
length is not the batch's is attributed by the core to the nearest clean input (exact when
every perturbation is shorter than half the distance between two clean inputs).
"""

import contextlib
import contextvars

import torch

_ROWS = contextvars.ContextVar("advx_rows", default=None)


@contextlib.contextmanager
def for_samples(index):
    """While the block runs, model calls evaluate rows of the batch samples ``index``."""
    if not torch.is_tensor(index) or index.dtype != torch.int64 or index.dim() != 1:
        raise TypeError("for_samples needs a 1-D int64 tensor of sample indices, got "
                        f"{getattr(index, 'dtype', type(index).__name__)}")
    outer = _ROWS.get()
    token = _ROWS.set(index if outer is None else outer.to(index.device)[index])
    try:
        yield
    finally:
        _ROWS.reset(token)


def declared_rows():
    """The batch samples of the rows of the model calls in the current block (None: none
    declared)."""
    return _ROWS.get()


@contextlib.contextmanager
def fresh_rows():
    """A block whose calls declare nothing yet (the core enters one around each attack call,
    so that an attack run inside another's block starts from its own batch)."""
    token = _ROWS.set(None)
    try:
        yield
    finally:
        _ROWS.reset(token)
