"""DDN: Decoupled Direction and Norm (Rony et al., 2019, "Decoupling Direction and Norm for
Efficient Gradient-Based L2 Adversarial Attacks and Defenses")."""

import math

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, to_float

from ._gradients import ascent_direction, fooled, objective_gradient, per_sample, per_sample_where
from ._iterative import attack_labels, constant_queries, steps_field


def _positive_float(default, help_text):
    return attrs.field(default=default, converter=to_float,
                       validator=finite(0, MAX_SCALE, low_open=True), metadata={"help": help_text})


@attrs.frozen(kw_only=True)
class DDN(advx.MinimizationAttack):
    """Decoupled Direction and Norm: gradient steps whose norm is steered separately.

    Each step takes the input gradient g of the cross-entropy (of the true label, ascended;
    targeted: of the target, descended), moves the perturbation by ``alpha * g / ||g||``
    with ``alpha`` cosine-annealed from ``max_step`` to ``min_step``, then rescales it to the
    norm ``epsilon``.  ``epsilon`` starts at ``init_epsilon``, shrinks by the factor
    ``1 - gamma`` after a step whose iterate is adversarial and grows by ``1 + gamma`` after
    one that is not; it never exceeds the distance to the farthest corner of the box (nor
    the threat model's eps when one is given).  Iterates are clipped to the bounds.  Per
    sample the smallest adversarial iterate seen is kept (from the logits the gradient needs,
    so no extra pass); samples never fooled return x.  Rony et al.'s 8-bit quantisation of
    the iterates is not done.  Costs ``steps`` forward and backward passes per sample; no host
    synchronisation.
    """

    name = "ddn"
    norms = frozenset({"l2"})
    access = "gradient"
    supports_targeted = True

    steps: int = steps_field(100)
    init_epsilon: float = _positive_float(
        1.0, "the first value of epsilon, the norm each step's perturbation is rescaled to")
    gamma: float = attrs.field(
        default=0.05, converter=to_float,
        validator=finite(0, 1, low_open=True, high_open=True),
        metadata={"help": "epsilon shrinks by 1 - gamma after an adversarial step, else grows "
                          "by 1 + gamma"})
    max_step: float = _positive_float(1.0, "step size alpha of the first step")
    min_step: float = _positive_float(0.01, "step size alpha that the cosine schedule ends at")

    def run(self, model, x, y, threat, *, targets, rng):
        labels, targeted = attack_labels(y, targets, threat), threat.targeted
        lower, upper = threat.bounds
        farthest = torch.maximum(x - lower, upper - x).flatten(1).norm(p=2, dim=1)
        if threat.eps is not None:
            farthest = farthest.clamp_max(threat.eps)
        epsilon = torch.full_like(farthest, self.init_epsilon).minimum(farthest)
        x_adv = x
        best, best_norm = x.clone(), torch.full_like(farthest, math.inf)
        for step in range(self.steps):
            grad, logits = objective_gradient(model, x_adv, labels, targeted)
            adversarial = fooled(logits, labels, targeted)
            delta = x_adv - x
            norm = delta.flatten(1).norm(p=2, dim=1)
            better = adversarial & (norm < best_norm)
            best = per_sample_where(better, x_adv, best)
            best_norm = torch.where(better, norm, best_norm)
            delta = delta + self._alpha(step) * ascent_direction("l2", grad)
            factor = torch.where(adversarial, 1 - self.gamma, 1 + self.gamma)
            epsilon = (epsilon * factor).minimum(farthest)
            length = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
            x_adv = (x + delta * per_sample(epsilon / length, delta)).clamp(lower, upper)
        return best, constant_queries(x, self.steps)

    def _alpha(self, step):
        """The cosine-annealed step size of step ``step`` (0-based)."""
        cosine = (1 + math.cos(math.pi * step / self.steps)) / 2
        return self.min_step + (self.max_step - self.min_step) * cosine
