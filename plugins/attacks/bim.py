"""BIM: the basic iterative method (Kurakin et al., 2017), iterative FGSM without random start."""

import advx
import attrs

from ._gradients import GRADIENT_NORMS
from ._iterative import (
    ascend,
    attack_labels,
    resolve_step_size,
    step_size_field,
    steps_field,
)

KURAKIN_TRAVEL = 1.25


@attrs.frozen(kw_only=True)
class BIM(advx.FixedEpsilonAttack):
    """Iterative FGSM from the clean input, projected into the ball and bounds after every step.

    The default step size follows Kurakin et al.: their iteration count min(eps + 4, 1.25 eps)
    at one grey level per step lets the iterates travel 1.25 eps in all for the usual eps, so
    here ``step_size = 1.25 * eps / steps``.  Targeted, each step descends the cross-entropy of
    the target ("make a 2 read as a 6").  Per sample, the first iterate that fools the model is
    returned, else the last; costs at most ``steps`` forward and backward passes (a fooled
    sample leaves the batch at the next check, and its queries count the passes it took).
    """

    name = "bim"
    norms = GRADIENT_NORMS
    access = "gradient"
    supports_targeted = True
    per_sample_eps = True

    steps: int = steps_field(10)
    step_size: float | None = step_size_field("1.25 * eps / steps")

    def run(self, model, x, y, threat, *, targets, rng):
        step_size = resolve_step_size(self.step_size, threat.eps, self.steps, KURAKIN_TRAVEL)
        result = ascend(model, x, attack_labels(y, targets, threat), threat, start=x,
                        steps=self.steps, step_size=step_size, targeted=threat.targeted)
        return result.x_adv, result.passes
