"""PGD: projected gradient descent with random starts and restarts (Madry et al., 2018)."""

import advx
import attrs
from advx import MAX_SCALE, finite, to_float, whole

from ._gradients import GRADIENT_NORMS, random_start
from ._iterative import (
    ascend,
    attack_labels,
    resolve_step_size,
    select,
    step_size_field,
    steps_field,
    with_restarts,
)

TRAVEL = 2.5  # default total travel of one run, in units of eps (Madry et al.'s rule)


def _restarts_need_random_start(instance, attribute, value):
    if value > 1 and not instance.random_start:
        raise ValueError("restarts > 1 needs random_start=True (restarts from x are identical)")


@attrs.frozen(kw_only=True)
class PGD(advx.FixedEpsilonAttack):
    """Projected gradient ascent of the cross-entropy from random points in the ball.

    Each run starts uniformly in the ball (linf: per coordinate; l2: uniform over the ball's
    volume) unless ``random_start`` is False, then takes BIM's projected steps.  Per sample a
    run keeps its first iterate that fools the model, else its last.  Over ``restarts`` runs the
    strongest result is kept: one that fools the model, else the one with the highest loss;
    later restarts only attack the samples not fooled yet.  Targeted, the steps descend the
    cross-entropy of the target.  Each run costs ``steps`` forward and backward passes on the
    samples it attacks, plus one forward pass to compare runs when ``restarts > 1``.
    """

    name = "pgd"
    norms = GRADIENT_NORMS
    access = "gradient"
    supports_targeted = True
    per_sample_eps = True

    steps: int = steps_field(40)
    step_size: float | None = step_size_field("rel_step_size * eps")
    rel_step_size: float | None = attrs.field(
        default=None, converter=to_float,
        validator=finite(0, MAX_SCALE, low_open=True, optional=True),
        metadata={"help": "step size as a fraction of eps, used when step_size is None "
                          "(default 2.5 / steps, so a run can travel 2.5 eps; Madry's MNIST "
                          "schedule, 40 steps of 0.01 at eps 0.3, is step_size = 0.01)"})
    random_start: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool),
        metadata={"help": "start each run at a uniformly random point of the ball"})
    restarts: int = attrs.field(
        default=1, validator=[whole(1), _restarts_need_random_start],
        metadata={"help": "independent runs; per sample the strongest result is kept"})

    def run(self, model, x, y, threat, *, targets, rng):
        labels = attack_labels(y, targets, threat)
        step_size = resolve_step_size(self.step_size, threat.eps, self.steps, TRAVEL,
                                      self.rel_step_size)
        return with_restarts(
            lambda xs, ls, index: self._one_run(model, xs, ls, threat.select(index),
                                                select(step_size, index),
                                                rng if index is None else rng.select(index)),
            x, labels, steps=self.steps, restarts=self.restarts)

    def _one_run(self, model, x, labels, threat, step_size, rng):
        start = random_start(threat, x, rng) if self.random_start else x
        return ascend(model, x, labels, threat, start=start, steps=self.steps,
                      step_size=step_size, targeted=threat.targeted,
                      check_final=self.restarts > 1)
