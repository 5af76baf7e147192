"""Input gradients estimated from model outputs alone: NES and central finite differences.

:func:`estimating` wraps a model in a module whose forward is the model's exact output
(computed without autograd) and whose backward is an *estimated* vector-Jacobian product, so
that any gradient attack runs unchanged on a model that offers scores only.  For the logits'
gradient ``G`` the backward estimates, per row, the input gradient of ``g(x) = <G, f(x)>``:

- ``nes`` (Ilyas et al., 2018, "Black-box Adversarial Attacks with Limited Queries and
  Information"): ``(1 / (2 n sigma)) sum_i [g(x + sigma u_i) - g(x - sigma u_i)] u_i`` over
  ``n`` antithetic pairs of standard Gaussian directions ``u_i`` (2 n queries);
- ``finite-differences``: coordinate-wise central differences
  ``[g(x + sigma e_j) - g(x - sigma e_j)] / (2 sigma)`` (2 queries per input element), where
  ``2 sigma`` is the step as rounded, ``(x_j + sigma) - (x_j - sigma)``: in float32 the
  rounding of the probes then adds no error to the quotient.

The probes' logit differences do not depend on ``G``: they are computed at the first backward
pass through a forward and reused by later ones (DeepFool and JSMA take several gradients of
one forward pass), so each forward costs at most one estimate.

A row's directions depend on the row's content alone: its seed is a hash of the row's bits (a
sum of the bits times fixed odd 64-bit multipliers, which wraps, then SplitMix64), and its
directions come from :class:`advx.SampleStreams` on that seed.  So the estimate at a point is
the same whichever rows share its batch, and the attacks built on it stay batch-invariant
(with a batch-invariant model, as a run serves them).  Rows and directions are batched; the
probes are evaluated in chunks of at most :data:`PROBE_ELEMENTS` input elements.

The core counts the probes as forward passes of the samples whose rows they probe: each probe
pass declares its rows' samples (:func:`advx.for_samples`), and runs in the context of the
forward pass it estimates around (its declared samples and the open ledgers), which the
backward pass, run later and on another thread for a GPU, would not otherwise see.
"""

import contextvars
import math

import advx
import torch
from torch import nn

ESTIMATORS = ("nes", "finite-differences")

# Input elements per probe pass (2**22: 5,350 MNIST images, 1,365 CIFAR-10 ones), so that the
# probes of a batch of rows and their activations stay within memory on any device.
PROBE_ELEMENTS = 2 ** 22

_SALT = 0x5EED_E571  # fixed: a row's directions depend on its content and nothing else
_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def estimate_cost(estimator, samples, dims):
    """Queries of one gradient estimate of one row of ``dims`` input elements."""
    return 2 * samples if estimator == "nes" else 2 * dims


def estimating(model, estimator, samples, sigma):
    """``model`` behind estimated gradients; see the module docstring."""
    return EstimatedGradients(model, estimator, samples, sigma)


class EstimatedGradients(nn.Module):
    """The model's exact outputs, with input gradients estimated from outputs only.

    Its backward never reaches the model's: the model runs under ``torch.no_grad`` only.
    The module carries the model's reject index (a detector's "rejected" output).
    """

    def __init__(self, model, estimator, samples, sigma):
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, "
                             f"got {estimator!r}")
        self.model, self.estimator = model, estimator
        self.samples, self.sigma = int(samples), float(sigma)
        self.train(model.training)
        reject = advx.reject_index(model)
        if reject is not None:
            self.advx_reject_index = reject

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            return _EstimatedVJP.apply(x, self)
        with torch.no_grad():
            return self.model(x)


class _EstimatedVJP(torch.autograd.Function):
    """Exact forward, estimated backward (the probes kept on ``ctx`` for later passes)."""

    @staticmethod
    def forward(ctx, x, wrapper):
        ctx.probes = _Probes(wrapper, x.detach())
        with torch.no_grad():
            return wrapper.model(x)

    @staticmethod
    def backward(ctx, grad_output):
        return ctx.probes.vjp(grad_output), None


def row_seeds(x):
    """One int64 seed per row of ``x`` from the row's bits alone (equal rows, equal seeds)."""
    flat = x.detach().flatten(1)
    bits = flat.contiguous().view(_BITS[flat.element_size()]).to(torch.int64)
    salt = torch.tensor(_SALT, dtype=torch.int64, device=x.device)
    multipliers = advx.derive_seeds(salt, torch.arange(flat.shape[1], device=x.device)) | 1
    return advx.derive_seeds((bits * multipliers).sum(1), _SALT)


class _Probes:
    """The estimate around the rows of one forward pass: model output differences at probe
    pairs, computed chunk by chunk at the first :meth:`vjp` and kept for later ones."""

    def __init__(self, wrapper, x):
        self.wrapper, self.x = wrapper, x
        self.cache = {}  # (first row, first direction) -> that chunk's probe differences
        self.context = contextvars.copy_context()  # the forward's declared samples, ledgers

    def vjp(self, grad_output):
        """The estimated input gradient of ``<grad_output, f(x)>``, shaped like x."""
        if not len(self.x):
            return torch.zeros_like(self.x)
        with torch.no_grad():
            if self.wrapper.estimator == "nes":
                return self._nes(grad_output)
            return self._differences(grad_output)

    def _chunks(self, directions):
        """``(row_slices, direction_slices)`` with at most PROBE_ELEMENTS probe elements per
        pass (two probes per direction); the direction chunks do not depend on the rows."""
        rows, dims = self.x.shape[0], math.prod(self.x.shape[1:])
        per_pass = max(2, PROBE_ELEMENTS // max(dims, 1))
        width = max(1, min(directions, per_pass // 2))
        height = max(1, per_pass // (2 * width))
        return ([slice(r, min(r + height, rows)) for r in range(0, rows, height)],
                [slice(d, min(d + width, directions)) for d in range(0, directions, width)])

    def _nes(self, grad_output):
        n, sigma = self.wrapper.samples, self.wrapper.sigma
        row_chunks, direction_chunks = self._chunks(n)
        parts = []
        for rows in row_chunks:
            x = self.x[rows]
            streams = advx.SampleStreams(row_seeds(x))
            total = torch.zeros_like(x)
            for directions in direction_chunks:
                count = directions.stop - directions.start
                u = streams.randn(count, *x.shape[1:], dtype=x.dtype)
                diffs = self._cached(rows, directions, self._pairs, rows, x, sigma * u)
                weights = (diffs * grad_output[rows].unsqueeze(1)).sum(2)
                total += (_broadcast(weights, u) * u).sum(1)
            parts.append(total / (2 * n * sigma))
        return torch.cat(parts)

    def _differences(self, grad_output):
        dims = math.prod(self.x.shape[1:])
        row_chunks, coordinate_chunks = self._chunks(dims)
        parts = []
        for rows in row_chunks:
            x = self.x[rows].flatten(1)
            grads = []
            for coords in coordinate_chunks:
                diffs, steps = self._cached(rows, coords, self._coordinate_diffs, rows, x,
                                            coords)
                grads.append((diffs * grad_output[rows].unsqueeze(1)).sum(2) / steps)
            parts.append(torch.cat(grads, 1).view_as(self.x[rows]))
        return torch.cat(parts)

    def _coordinate_diffs(self, rows, x, coords):
        """Differences along the coordinates ``coords`` of the flat rows ``x`` (the rows
        ``rows`` of the forward pass), and the steps
        ``(x_j + sigma) - (x_j - sigma)`` as rounded: (rows, count, classes), (rows, count)."""
        sigma, index = self.wrapper.sigma, torch.arange(coords.start, coords.stop,
                                                        device=x.device)
        offsets = torch.zeros(len(index), x.shape[1], dtype=x.dtype, device=x.device)
        offsets[torch.arange(len(index), device=x.device), index] = sigma
        steps = x[:, index] + sigma - (x[:, index] - sigma)
        shape = self.x.shape[1:]
        return self._pairs(rows, x.view(len(x), *shape),
                           offsets.view(len(index), *shape)), steps

    def _pairs(self, rows, x, offsets):
        """``f(x + offsets) - f(x - offsets)`` per row of x (the rows ``rows`` of the forward
        pass, shaped (rows, ...)) and offset, from one pass of the model over the probes:
        offsets are (rows, count, ...), or (count, ...) shared by the rows; the result is
        (rows, count, classes).  The pass declares each probe's row."""
        centre = x.unsqueeze(1)
        probes = torch.cat([(centre + offsets).flatten(0, 1), (centre - offsets).flatten(0, 1)])
        count = len(probes) // (2 * len(x))
        owners = torch.arange(rows.start, rows.stop, device=x.device).repeat_interleave(count)
        with advx.for_samples(owners.repeat(2)):
            logits = self.wrapper.model(probes)
        half = len(probes) // 2
        return (logits[:half] - logits[half:]).view(len(x), -1, logits.shape[-1])

    def _cached(self, rows, directions, compute, *args):
        """``compute(*args)`` for the chunk (rows, directions), from the cache after the first
        time: each forward pass costs at most one estimate per row."""
        key = (rows.start, directions.start)
        if key not in self.cache:
            self.cache[key] = self.context.run(compute, *args)
        return self.cache[key]


def _broadcast(weights, like):
    """(rows, count) weights viewed to broadcast against (rows, count, ...) directions."""
    return weights.view(*weights.shape, *[1] * (like.dim() - 2))
