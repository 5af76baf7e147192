"""Threat models: which perturbations an adversary may apply.

A threat model is a ball of radius ``eps`` in one norm around each clean input, intersected with
the box of valid inputs ``bounds``.  ``eps=None`` describes a minimal-perturbation attack: any
distance is allowed and the attack is judged by how small its perturbations are.

Distances are measured on the raw input scale, per sample, over all non-batch dimensions.  L0
counts changed *pixels* for 4-D image batches (a pixel is changed if any of its channels is), and
changed elements otherwise.
"""

from fractions import Fraction

import attrs
import torch

NORMS = ("l0", "l1", "l2", "linf")


def _to_eps(value):
    if value is None or torch.is_tensor(value):
        return value
    if isinstance(value, str):
        try:
            value = float(Fraction(value.strip()))
        except ZeroDivisionError:
            raise ValueError(f"eps {value!r} divides by zero") from None
    return float(value)


def _to_bounds(value):
    try:
        lower, upper = value
        return (float(lower), float(upper))
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (lower, upper), got {value!r}") from None


def _check_bounds(instance, attribute, value):
    if not value[0] < value[1]:
        raise ValueError(f"bounds must satisfy lower < upper, got {value}")


def _check_eps(instance, attribute, value):
    if value is None:
        return
    if torch.is_tensor(value):
        _check_eps_per_sample(instance.norm, value)
        return
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"eps must be a finite number >= 0 or None, got {value}")
    if value > FLOAT32_MAX:  # attacks compute in the inputs' float32: it would overflow
        raise ValueError(f"eps must be at most {FLOAT32_MAX:.4g} (the largest float32; any "
                         f"ball that large holds the whole input box), got {value:g}")
    if instance.norm == "l0" and value != int(value):
        raise ValueError(f"eps of an l0 threat model counts pixels and must be whole, got {value}")


def _check_eps_per_sample(norm, value):
    if norm not in PER_SAMPLE_NORMS:
        raise ValueError(f"a per-sample eps needs norm linf or l2, got {norm!r}")
    if value.dim() != 1 or not value.is_floating_point():
        raise ValueError(f"a per-sample eps must be a 1-D float tensor, got {tuple(value.shape)} "
                         f"{value.dtype}")
    if not bool(torch.isfinite(value).all() & (value >= 0).all()):
        raise ValueError("a per-sample eps must hold finite numbers >= 0")


PER_SAMPLE_NORMS = ("l2", "linf")  # the norms whose balls accept a per-sample eps
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@attrs.frozen
class ThreatModel:
    """An ``norm`` ball of radius ``eps`` (None: unbounded) intersected with ``bounds``.

    ``eps`` may also be a 1-D float tensor, one radius per sample of the batch (linf and l2
    only): the sweeps of the curve protocol (:mod:`advx.plugins.protocols.curve_search`)
    probe samples at different eps in one call of an attack that declares ``per_sample_eps``.
    Such a threat model is built in code, never read from a spec; :meth:`radius` and
    :meth:`select` are how attacks use it.
    """

    norm: str = attrs.field(validator=attrs.validators.in_(NORMS))
    eps: float | None = attrs.field(default=None, converter=_to_eps, validator=_check_eps)
    bounds: tuple[float, float] = attrs.field(
        default=(0.0, 1.0), converter=_to_bounds, validator=_check_bounds
    )
    targeted: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @classmethod
    def parse(cls, text, **kwargs):
        """Read ``"linf:8/255"``, ``"l2:2.0"`` or ``"l0"`` (no eps: minimal perturbation)."""
        norm, _, eps = text.partition(":")
        return cls(norm=norm.strip().lower(), eps=eps or None, **kwargs)

    def __str__(self):
        eps = ("min" if self.eps is None else "per-sample" if self.per_sample
               else f"{self.eps:g}")
        return f"{self.norm}:{eps}" + (" (targeted)" if self.targeted else "")

    def with_eps(self, eps):
        """The same threat model with another radius."""
        return attrs.evolve(self, eps=eps)

    @property
    def per_sample(self):
        """Whether ``eps`` is a tensor of one radius per sample."""
        return torch.is_tensor(self.eps)

    def radius(self, like):
        """``eps`` ready to combine with the batch ``like`` (N, ...): the number itself, or the
        per-sample radii shaped (N, 1, ...) on ``like``'s device and dtype."""
        if not self.per_sample:
            return self.eps
        return self.eps.to(like).view(-1, *[1] * (like.dim() - 1))

    def select(self, index):
        """The threat model of the samples ``index`` of the batch (itself unless per-sample)."""
        if not self.per_sample or index is None:
            return self
        return attrs.evolve(self, eps=self.eps[index])

    def distance(self, x, x_adv):
        """Per-sample distance between ``x`` and ``x_adv`` in this norm (shape ``(N,)``)."""
        return distance(self.norm, x_adv - x)

    def project(self, x, x_adv):
        """The point of ``x_adv`` moved into the ball around ``x`` and into the bounds.

        Each norm's ball is projected onto exactly; clipping to the bounds afterwards only moves
        coordinates toward ``x``, so the result stays inside the ball.
        """
        delta = x_adv - x
        if self.eps is not None:
            delta = project_delta(self.norm, delta, self.eps)
        return (x + delta).clamp(*self.bounds)

    def contains(self, x, x_adv, rtol=1e-5, atol=1e-6):
        """Per-sample booleans: ``x_adv`` lies in the bounds and (if eps is set) the ball."""
        lower, upper = self.bounds
        flat = x_adv.flatten(1)
        inside = (flat >= lower - atol).all(1) & (flat <= upper + atol).all(1)
        inside &= torch.isfinite(flat).all(1)
        if self.eps is not None:
            distance = self.distance(x, x_adv)
            eps = self.eps.to(distance) if self.per_sample else self.eps
            slack = 0.0 if self.norm == "l0" else eps * rtol + atol
            inside &= distance <= eps + slack
        return inside


def _pixel_magnitudes(delta):
    """Per-sample magnitudes of the units L0 counts: pixels of 4-D batches, else elements."""
    if delta.dim() == 4:
        return delta.abs().amax(dim=1).flatten(1)
    return delta.abs().flatten(1)


def distance(norm, delta):
    """Per-sample ``norm`` of a perturbation batch ``delta``."""
    if norm == "l0":
        return (_pixel_magnitudes(delta) > 0).sum(1).to(delta.dtype)
    flat = delta.flatten(1)
    if norm == "l1":
        return flat.abs().sum(1)
    if norm == "l2":  # accumulate in float64: tiny perturbations must not underflow to 0
        return torch.linalg.vector_norm(flat, 2, dim=1, dtype=torch.float64).to(flat.dtype)
    if norm == "linf":
        return flat.abs().amax(1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")


def project_delta(norm, delta, eps):
    """Project each perturbation in ``delta`` onto the ``norm`` ball of radius ``eps`` (a
    number, or for linf and l2 a 1-D tensor of one radius per sample)."""
    if torch.is_tensor(eps) and norm not in PER_SAMPLE_NORMS:
        raise ValueError(f"a per-sample eps needs norm linf or l2, got {norm!r}")
    if norm == "linf":
        if torch.is_tensor(eps):
            eps = eps.to(delta).view(-1, *[1] * (delta.dim() - 1))
        return delta.clamp(-eps, eps)
    if norm == "l2":
        norms = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
        factor = ((eps.to(norms) if torch.is_tensor(eps) else eps) / norms).clamp(max=1.0)
        return delta * factor.view(-1, *[1] * (delta.dim() - 1))
    if norm == "l1":
        return _project_l1(delta, eps)
    if norm == "l0":
        return _project_l0(delta, int(eps))
    raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")


def _project_l1(delta, eps):
    """Euclidean projection onto the L1 ball (Duchi et al. 2008), batched by sorting.

    Computed in float64: in float32 the cumulative sums that fix the threshold lose enough
    digits (many equal coordinates just above it) to leave the result outside the ball.
    """
    flat = delta.flatten(1).double()
    magnitude = flat.abs()
    outside = magnitude.sum(1) > eps
    if eps == 0:
        return torch.zeros_like(delta)
    sorted_mag, _ = magnitude.sort(dim=1, descending=True)
    cumulative = sorted_mag.cumsum(1) - eps
    ranks = torch.arange(1, flat.shape[1] + 1, device=delta.device, dtype=flat.dtype)
    active = sorted_mag * ranks > cumulative
    rho = active.to(torch.int64).cumsum(1).argmax(1, keepdim=True)
    theta = (cumulative.gather(1, rho) / (rho + 1).to(flat.dtype)).clamp_min(0)
    shrunk = flat.sign() * (magnitude - theta).clamp_min(0)
    return torch.where(outside.unsqueeze(1), shrunk, flat).to(delta.dtype).view_as(delta)


def _project_l0(delta, k):
    """Keep the ``k`` pixels (or elements) with the largest change; zero the others."""
    magnitude = _pixel_magnitudes(delta)
    if k >= magnitude.shape[1]:
        return delta
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    if k > 0:
        keep.scatter_(1, magnitude.topk(k, dim=1).indices, True)
    if delta.dim() == 4:
        keep = keep.view(delta.shape[0], 1, *delta.shape[2:])
    else:
        keep = keep.view_as(delta)
    return delta * keep
