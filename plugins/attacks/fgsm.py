"""FGSM: the fast gradient sign method (Goodfellow et al., 2015), and its L2 analogue."""

import advx
import attrs

from ._gradients import GRADIENT_NORMS, ascent_step, objective_gradient, projection_onto
from ._iterative import attack_labels, constant_queries


@attrs.frozen(kw_only=True)
class FGSM(advx.FixedEpsilonAttack):
    """One gradient step of length eps: eps * sign(grad) (linf) or eps * grad / ||grad|| (l2).

    The step ascends the cross-entropy of the true label, or descends that of the target when
    the threat model is targeted; the result is projected into the ball and clipped to the
    bounds.  One forward and one backward pass per sample.
    """

    name = "fgsm"
    norms = GRADIENT_NORMS
    access = "gradient"
    supports_targeted = True
    per_sample_eps = True

    def run(self, model, x, y, threat, *, targets, rng):
        labels = attack_labels(y, targets, threat)
        grad, _ = objective_gradient(model, x, labels, threat.targeted)
        x_adv = ascent_step(threat.norm, projection_onto(threat, x), x, grad, threat.radius(x))
        return x_adv, constant_queries(x, 1)
