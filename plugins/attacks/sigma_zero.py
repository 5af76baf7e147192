"""σ-zero (Cinà, Villani, Pintor, Schönherr, Biggio & Pelillo, ICLR 2025, "σ-zero:
Gradient-based Optimization of ℓ0-norm Adversarial Examples", arXiv 2402.01879).

A minimal-L0 attack by gradient descent on a smooth surrogate of the L0 norm.  Each step, from
the perturbation ``δ`` (starting at 0):

1. ``g = ∇_δ [max(margin(x + δ), 0) + ℓ̂0(δ) / d]`` with the logit margin (of the label, or of
   the target when targeted), ``ℓ̂0(δ) = Σ_i δ_i² / (δ_i² + σ)`` and ``d`` the input dimension;
2. ``δ ← clip(x + δ - η g / ||g||_∞) - x``: a step normalised by the gradient's Linf norm,
   clipped to the input box, with ``η`` cosine-annealed from ``lr`` to ``lr / 10``;
3. the per-sample threshold ``τ`` rises by ``t η`` when ``x + δ`` (before the step) was
   adversarial and falls by ``t η`` when not (kept within the box's width);
4. the components with ``|δ_i| < τ`` are set to 0: the projection that makes ``δ`` sparse.

This is Algorithm 1 of the paper, whose plain normalised step is kept here; the authors' code
(and adv_lib's port) feeds the normalised gradient to Adam instead.  The smooth term and the
threshold act per component, as in the paper; the sparsest adversarial iterate is chosen by
the threat model's L0, which counts pixels (a pixel is changed when any channel is).
"""

import math

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, to_float

from ._gradients import fooled, gradient_by_chunks, per_sample, per_sample_where
from ._iterative import attack_labels, constant_queries, steps_field
from ._losses import margin

MIN_LR_FRACTION = 0.1  # the cosine schedule ends at lr / 10, as in the authors' code


def smooth_l0(delta, sigma):
    """Per-sample ``Σ_i δ_i² / (δ_i² + σ)``: each component counts close to 1 once
    ``|δ_i| >> sqrt(σ)`` and close to 0 below it."""
    square = delta.flatten(1).square()
    return (square / (square + sigma)).sum(1)


@attrs.frozen(kw_only=True)
class SigmaZero(advx.MinimizationAttack):
    """σ-zero: descent on the clamped logit margin plus a smooth L0 term, sparsified by an
    adaptive per-sample threshold; see the module docstring.

    Per sample the sparsest adversarial iterate seen is kept (checked on the logits the
    gradient needs, so no extra pass); samples never fooled return x.  Costs ``steps``
    forward and backward passes per sample; no host synchronisation.
    """

    name = "sigma-zero"
    norms = frozenset({"l0"})
    access = "gradient"
    supports_targeted = True

    steps: int = steps_field(100)
    lr: float = attrs.field(
        default=1.0, converter=to_float, validator=finite(0, MAX_SCALE, low_open=True),
        metadata={"help": "step size eta of the first step (the step normalises the gradient "
                          "by its Linf norm); cosine-annealed to lr / 10"})
    sigma: float = attrs.field(
        default=1e-3, converter=to_float, validator=finite(0, MAX_SCALE, low_open=True),
        metadata={"help": "sharpness of the smooth L0 term d^2 / (d^2 + sigma): smaller is "
                          "closer to the L0 norm"})
    threshold: float = attrs.field(
        default=0.3, converter=to_float, validator=finite(0, MAX_SCALE),
        metadata={"help": "initial threshold tau: components of the perturbation with a "
                          "smaller magnitude are set to 0"})
    threshold_factor: float = attrs.field(
        default=0.01, converter=to_float, validator=finite(0, MAX_SCALE),
        metadata={"help": "t: tau rises by t * eta after an adversarial step, else falls by it"})

    def run(self, model, x, y, threat, *, targets, rng):
        labels, targeted = attack_labels(y, targets, threat), threat.targeted
        lower, upper = threat.bounds
        dims = x[0].numel()

        def value(leaf, rows):
            logits = model(leaf)
            loss = margin(logits, labels[rows], targeted).clamp_min(0)
            return loss + smooth_l0(leaf - x[rows], self.sigma) / dims, logits

        x_adv, best = x, x.clone()
        best_l0 = torch.full((len(x),), math.inf, dtype=x.dtype, device=x.device)
        tau = torch.full_like(best_l0, min(self.threshold, upper - lower))
        for step in range(self.steps):
            grad, _, logits = gradient_by_chunks(x_adv, value)
            adversarial = fooled(logits, labels, targeted)
            l0 = threat.distance(x, x_adv)
            better = adversarial & (l0 < best_l0)
            best = per_sample_where(better, x_adv, best)
            best_l0 = torch.where(better, l0, best_l0)
            eta = self._eta(step)
            scale = grad.flatten(1).abs().amax(1).clamp_min(1e-12)
            moved = torch.addcmul(x_adv, per_sample(-eta / scale, grad), grad)
            moved = moved.clamp(lower, upper)
            change = torch.where(adversarial, self.threshold_factor * eta,
                                 -self.threshold_factor * eta)
            tau = (tau + change).clamp(0, upper - lower)
            x_adv = torch.where((moved - x).abs() < per_sample(tau, x), x, moved)
        return best, constant_queries(x, self.steps)

    def _eta(self, step):
        """The cosine-annealed step size of step ``step`` (0-based), from lr to lr / 10."""
        low = MIN_LR_FRACTION * self.lr
        return low + (self.lr - low) * (1 + math.cos(math.pi * step / self.steps)) / 2
