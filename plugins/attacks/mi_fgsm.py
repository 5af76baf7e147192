"""MI-FGSM: the momentum iterative fast gradient sign method (Dong et al., 2018)."""

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, to_float

from ._gradients import (
    GRADIENT_NORMS,
    ascent_direction,
    declared,
    fooled,
    objective_gradient,
    per_sample,
    per_sample_where,
)
from ._iterative import (
    SHRINK_EVERY,
    _Active,
    attack_labels,
    resolve_step_size,
    step_size_field,
    steps_field,
)

TRAVEL = 1.0  # default total travel in units of eps: step_size = eps / steps (Dong et al.)


@attrs.frozen(kw_only=True)
class MIFGSM(advx.FixedEpsilonAttack):
    """Iterative FGSM from the clean input whose steps follow an accumulated momentum.

    Each step adds the L1-normalised gradient to the decayed momentum,
    ``g <- decay * g + grad / ||grad||_1``, then moves ``step_size`` along ``sign(g)`` (linf)
    or ``g / ||g||_2`` (l2) and projects into the ball and bounds.  The default step size is
    Dong et al.'s ``eps / steps``, so the iterates travel eps in all.  Targeted, ``grad`` is
    that of minus the cross-entropy of the target.  With ``decay = 0`` the direction is that
    of the gradient alone: on linf the attack then equals BIM with the same step size.

    Per sample, as BIM does, the first iterate that fools the model is returned, else the
    last: a fooled sample stops moving (its momentum no longer matters) and leaves the batch
    at the next check, its queries counting the forward and backward passes it took (at most
    ``steps``).  Dong et al. return the last iterate; the first fooling one is as adversarial
    and closer to the clean input.
    """

    name = "mi-fgsm"
    norms = GRADIENT_NORMS
    access = "gradient"
    supports_targeted = True
    per_sample_eps = True

    steps: int = steps_field(10)
    step_size: float | None = step_size_field("eps / steps")
    decay: float = attrs.field(
        default=1.0, converter=to_float, validator=finite(0, MAX_SCALE),
        metadata={"help": "momentum decay factor mu (0: no momentum, BIM's steps)"})

    def run(self, model, x, y, threat, *, targets, rng):
        step_size = resolve_step_size(self.step_size, threat.eps, self.steps, TRAVEL)
        active = _WithMomentum(x, attack_labels(y, targets, threat), x, self.steps, threat,
                               step_size)
        for step in range(self.steps):
            if step and step % SHRINK_EVERY == 0 and not active.shrink(step):
                break
            self._step(model, active, threat)
        x_adv, _ = active.whole()
        return x_adv, active.passes

    def _step(self, model, active, threat):
        """One momentum step of the samples still active (frozen ones keep their iterate)."""
        with declared(active.index):  # the samples still stepping
            grad, logits = objective_gradient(model, active.x_adv, active.labels,
                                              threat.targeted)
        active.done = active.done | fooled(logits, active.labels, threat.targeted)
        active.momentum = torch.add(l1_normalised(grad), active.momentum, alpha=self.decay)
        rates = per_sample((~active.done).to(grad.dtype) * active.step_size, active.x_adv)
        stepped = active.project(torch.addcmul(active.x_adv, rates,
                                               ascent_direction(threat.norm, active.momentum)))
        active.x_adv = (stepped if threat.norm == "linf"
                        else per_sample_where(active.done, active.x_adv, stepped))


def l1_normalised(grad):
    """``grad / ||grad||_1`` per sample; a zero gradient stays zero.

    The floor on the norm is the dtype's smallest normal number: any gradient with a larger
    L1 norm is divided by its own norm exactly, and one below it has entries below it, so the
    quotient stays finite.
    """
    lengths = grad.flatten(1).abs().sum(1).clamp_min(torch.finfo(grad.dtype).tiny)
    return grad / per_sample(lengths, grad)


class _WithMomentum(_Active):
    """BIM's active samples (see :func:`._iterative.ascend`) plus their momentum."""

    def __init__(self, x, labels, start, steps, threat, step_size):
        super().__init__(x, labels, start, steps, threat, step_size)
        self.momentum = torch.zeros_like(start)

    def shrink(self, step):
        leaving = self.done
        left = super().shrink(step)
        if len(self.done) != len(leaving):  # some samples left: keep the others' momentum
            self.momentum = self.momentum[~leaving]
        return left
