"""The norm-dependent pieces of FMN (Pintor et al., 2021): balls of one radius per sample.

FMN's radius ``epsilon`` differs from sample to sample and changes every step, so each norm's
ball is projected onto with a per-sample radius (a tensor of shape (N,)).  L0 counts changed
pixels of 4-D batches and changed elements otherwise, as :class:`advx.ThreatModel` does, and
the L1 projection is the core's (Duchi et al., 2008), through the ball's homogeneity.
"""

import math

import advx
import torch

from ._gradients import per_sample
from ._queries import pixel_view

# The core's L1 ball of radius 1, unbounded: projecting onto radius r is r times projecting
# d / r onto it, since the L1 ball of radius r is r times the unit ball.
_UNIT_L1 = advx.ThreatModel(norm="l1", eps=1.0, bounds=(-math.inf, math.inf))
_TINY = 1e-12  # the smallest radius and gradient norm divided by


def pixel_magnitudes(delta):
    """Per sample the magnitude of each unit L0 counts, shape (N, units): a pixel's largest
    change over its channels (4-D batches), or an element's change."""
    return pixel_view(delta).abs().amax(1).flatten(1)


def dual_norm(norm, grad):
    """Per-sample norm of ``grad`` dual to ``norm`` (l1 -> linf, l2 -> l2, linf -> l1): the
    denominator of the linear estimate of the distance to the decision boundary."""
    flat = grad.flatten(1)
    if norm == "l1":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "linf":
        return flat.abs().sum(1)
    raise ValueError(f"no dual norm for {norm!r}")


def farthest(norm, x, bounds):
    """Per sample the largest distance in ``norm`` of any point of the box from ``x`` (the
    radius beyond which growing ``epsilon`` changes nothing)."""
    lower, upper = bounds
    reach = torch.maximum(x - lower, upper - x)
    if norm == "l0":
        return torch.full((len(x),), pixel_magnitudes(x).shape[1], dtype=x.dtype,
                          device=x.device)
    return advx.ThreatModel(norm=norm).distance(torch.zeros_like(x), reach)


def project(norm, delta, eps):
    """``delta`` projected onto the ``norm`` ball of radius ``eps`` (one per sample)."""
    if norm == "linf":
        radius = per_sample(eps, delta)
        return torch.maximum(torch.minimum(delta, radius), -radius)
    if norm == "l2":
        lengths = delta.flatten(1).norm(p=2, dim=1).clamp_min(_TINY)
        return delta * per_sample((eps / lengths).clamp_max(1), delta)
    if norm == "l1":
        scale = per_sample(eps.clamp_min(_TINY), delta)
        shrunk = _UNIT_L1.project(delta.new_zeros(()), delta / scale) * scale
        return torch.where(per_sample(eps > 0, delta), shrunk, torch.zeros_like(delta))
    if norm == "l0":
        return _keep_largest_pixels(delta, eps)
    raise ValueError(f"no projection for norm {norm!r}")


def _keep_largest_pixels(delta, counts):
    """``delta`` with only the ``counts`` (per sample) pixels of largest change kept; ties go
    to the lower index (a stable sort), so exactly ``counts`` pixels may stay changed."""
    magnitude = pixel_magnitudes(delta)
    order = magnitude.sort(dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(magnitude.shape[1], device=delta.device).expand_as(order))
    keep = ranks < counts.to(torch.int64).unsqueeze(1)
    view = pixel_view(delta)
    return (view * keep.view(len(view), 1, *view.shape[2:])).view_as(delta)


def unit_l2(grad):
    """``grad`` scaled to unit L2 norm per sample (a zero gradient stays zero)."""
    lengths = grad.flatten(1).norm(p=2, dim=1).clamp_min(_TINY)
    return grad / per_sample(lengths, grad)


def next_epsilon(norm, eps, *, adversarial, best, length, margin, grad, gamma):
    """The radius of the next step, before it is capped (``eps`` is infinite before the
    first step of an Lp norm, 1 for L0).

    Adversarial now: ``min(eps (1 - gamma), ||delta*||)`` with ``delta*`` the smallest
    adversarial so far.  Not adversarial: ``eps (1 + gamma)``, but at the first step the
    linear estimate of the boundary ``||delta|| + |margin| / ||grad||_dual``.  L0 takes whole
    steps instead: shrink to ``min(eps - 1, floor(eps (1 - gamma)), ||delta*||)``, grow to
    ``max(eps + 1, floor(eps (1 + gamma)))``, never below 0.
    """
    if norm == "l0":
        shrunk = torch.minimum(torch.minimum(eps - 1, (eps * (1 - gamma)).floor()), best)
        grown = torch.maximum(eps + 1, (eps * (1 + gamma)).floor())
        return torch.where(adversarial, shrunk, grown).clamp_min(0)
    shrunk = torch.minimum(eps * (1 - gamma), best)
    estimate = length + margin.abs() / dual_norm(norm, grad).clamp_min(_TINY)
    grown = torch.where(eps.isinf(), estimate, eps * (1 + gamma))
    return torch.where(adversarial, shrunk, grown)
