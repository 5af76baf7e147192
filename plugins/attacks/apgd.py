"""Auto-PGD (Croce & Hein, 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks"): PGD with momentum whose step size halves on its own.

The step size starts at ``2 eps`` and is revisited at checkpoints ``w_j = ceil(p_j * steps)``
with ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``.  Since
the checkpoints depend only on ``steps`` they are known before the loop, and the per-sample
decision at a checkpoint is tensor arithmetic: no host synchronisation inside the step loop.
"""

import math
from fractions import Fraction

import advx
import attrs
import torch
from advx import finite, to_float, whole

from ._gradients import (
    GRADIENT_NORMS,
    ascent_direction,
    fooled,
    gradient_by_chunks,
    objective,
    per_sample,
    per_sample_where,
    projection_onto,
    random_start,
)
from ._iterative import Run, attack_labels, merge, steps_field
from ._losses import check_classes, dlr, targeted_dlr

MOMENTUM = 0.75  # alpha: weight of the new projected step against the previous move
FIRST_CHECKPOINT = Fraction(22, 100)
INTERVAL_SHRINK = Fraction(3, 100)
MIN_INTERVAL = Fraction(6, 100)


def checkpoint_fractions():
    """The paper's ``p_j`` that lie in [0, 1]: 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99.

    Exact fractions, so that ``ceil(p_j * steps)`` does not suffer from float rounding.
    """
    fractions = [Fraction(0), FIRST_CHECKPOINT]
    while True:
        interval = max(fractions[-1] - fractions[-2] - INTERVAL_SHRINK, MIN_INTERVAL)
        if fractions[-1] + interval > 1:
            return tuple(fractions)
        fractions.append(fractions[-1] + interval)


def checkpoints(steps):
    """The checkpoint iterations ``w_j = ceil(p_j * steps)`` for j >= 1, strictly increasing.

    Only those before the last iterate are kept (a halving after it would change nothing);
    equal values (few steps) are merged.  For 100 steps: 22, 41, 57, 70, 80, 87, 93, 99.
    """
    marks = sorted({math.ceil(p * steps) for p in checkpoint_fractions()[1:]})
    return tuple(w for w in marks if 0 < w < steps)


def _loss_and_gradient(model, x_adv, loss_fn, backward=True):
    """``(per-sample loss, its gradient w.r.t. x_adv or None, logits)`` from one pass.

    ``loss_fn(logits, rows)`` is the loss of the batch rows ``rows``."""
    def value(leaf, rows):
        logits = model(leaf)
        return loss_fn(logits, rows), logits

    grad, loss, logits = gradient_by_chunks(x_adv, value, backward)
    return loss, grad, logits


@attrs.frozen(kw_only=True)
class _APGD(advx.FixedEpsilonAttack):
    """Auto-PGD on the loss of the subclass; see the module docstring and :meth:`_one_run`.

    Each run costs ``steps`` forward and backward passes plus one forward pass per sample it
    attacks (``steps + 1`` queries), each times ``eot`` (Expectation over Transformation: a
    step's loss, gradient and logits averaged over ``eot`` evaluations of a randomised model;
    1, the default, is plain Auto-PGD); restarts attack only the samples not fooled yet.  Host
    syncs: one per checkpoint (at most 8 per run), to stop early once every sample is fooled,
    and one per restart.
    """

    norms = GRADIENT_NORMS
    access = "gradient"
    supports_targeted = True

    steps: int = steps_field(100)
    restarts: int = attrs.field(
        default=1, validator=whole(1),
        metadata={"help": "independent runs from random starts; per sample the strongest "
                          "result is kept"})
    rho: float = attrs.field(
        default=0.75, converter=to_float, validator=finite(0, 1, low_open=True),
        metadata={"help": "halve the step at a checkpoint when fewer than this fraction of "
                          "the steps since the previous one raised the loss"})
    eot: int = attrs.field(
        default=1, validator=whole(1),
        metadata={"help": "Expectation over Transformation: model evaluations averaged per "
                          "step (loss, gradient and logits), for randomised defenses"})

    def loss(self, logits, y, targets, targeted):
        """The per-sample loss that the attack maximises."""
        raise NotImplementedError

    def run(self, model, x, y, threat, *, targets, rng):
        labels = attack_labels(y, targets, threat)
        queries = torch.zeros(len(x), dtype=torch.int64, device=x.device)
        best, passes = self._one_run(model, x, y, targets, labels, threat, rng)
        queries += passes
        for _ in range(self.restarts - 1):
            # One host sync per restart (never per step): attack only the unfooled samples.
            index = (~best.fooled).nonzero().squeeze(1)
            if index.numel() == 0:
                break
            with advx.for_samples(index):  # the run calls the model on these samples only
                run, passes = self._one_run(model, x[index], y[index],
                                            None if targets is None else targets[index],
                                            labels[index], threat,
                                            rng.select(index))
            queries[index] += passes
            best = merge(best, run, index)
        return best.x_adv, queries

    def _one_run(self, model, x, y, targets, labels, threat, rng):
        """One run from a random start; returns ``(Run, passes)``.

        Per sample the first iterate that fools the model is kept (the sample is frozen there),
        else the iterate with the highest loss; ``Run.score`` is that highest loss.
        """
        targeted = threat.targeted

        def loss_fn(logits, rows):
            return self.loss(logits, y[rows], None if targets is None else targets[rows],
                             targeted)

        project = projection_onto(threat, x)
        x_adv = random_start(threat, x, rng)
        loss, grad, logits = self._evaluate(model, x_adv, loss_fn)
        state = _State.start(x_adv, loss, grad, fooled(logits, labels, targeted), 2 * threat.eps)
        marks = checkpoints(self.steps)
        intervals = dict(zip(marks, (b - a for a, b in zip((0, *marks), marks))))
        passes = self.eot
        for k in range(1, self.steps + 1):
            state = state.step(threat.norm, project, first=k == 1)
            loss, grad, logits = self._evaluate(model, state.x, loss_fn, k < self.steps)
            passes += self.eot
            state = state.observe(loss, grad, fooled(logits, labels, targeted))
            if k in intervals:
                state = state.checkpoint(self.rho * intervals[k])
                if not bool((~state.done).any()):  # one host sync per checkpoint
                    break
        return Run(per_sample_where(state.done, state.x, state.best_x), state.done,
                   state.best_loss), passes

    def _evaluate(self, model, x_adv, loss_fn, backward=True):
        """``(loss, gradient, logits)`` at ``x_adv``: one pass, or with ``eot`` above 1 the
        mean of ``eot`` passes (Expectation over Transformation: a randomised model's loss,
        gradient and logits are estimated by their averages over its random draws)."""
        first = _loss_and_gradient(model, x_adv, loss_fn, backward)
        if self.eot == 1:
            return first
        sums = list(first)
        for _ in range(self.eot - 1):  # summed as they come: one gradient held at a time
            more = _loss_and_gradient(model, x_adv, loss_fn, backward)
            sums = [None if a is None else a + b for a, b in zip(sums, more)]
        return tuple(None if total is None else total / self.eot for total in sums)


@attrs.frozen(eq=False)
class _State:
    """Per-sample state of one Auto-PGD run (all tensors have the batch as first dimension)."""

    x: torch.Tensor  # current iterate x^(k)
    prev: torch.Tensor  # previous iterate x^(k-1), for the momentum term
    grad: torch.Tensor  # gradient of the loss at x
    loss: torch.Tensor  # loss at x
    done: torch.Tensor  # fooled: frozen at its first fooling iterate
    best_x: torch.Tensor  # highest-loss iterate so far, its loss and gradient
    best_loss: torch.Tensor
    best_grad: torch.Tensor
    eta: torch.Tensor  # step size
    rises: torch.Tensor  # steps since the last checkpoint that raised the loss
    best_at_check: torch.Tensor  # best loss at the last checkpoint
    halved_at_check: torch.Tensor  # whether the step was halved at the last checkpoint

    @classmethod
    def start(cls, x, loss, grad, done, eta):
        zeros = torch.zeros_like(loss)
        return cls(x, x, grad, loss, done, x, loss, grad, torch.full_like(loss, eta), zeros,
                   loss, torch.zeros_like(done))

    def step(self, norm, project, first):
        """Algorithm 1's update: z = P(x + eta * dir(grad)), then the momentum combination
        P(x + alpha (z - x) + (1 - alpha)(x - x_prev)) (alpha = 1 on the first step)."""
        z = project(torch.addcmul(self.x, per_sample(self.eta, self.x),
                                  ascent_direction(norm, self.grad)))
        if first:
            moved = z
        else:  # x + alpha (z - x) + (1 - alpha)(x - x_prev), in three passes over the batch
            moved = project(torch.lerp(self.x, z, MOMENTUM).add_(self.x - self.prev,
                                                                 alpha=1 - MOMENTUM))
        return attrs.evolve(self, x=per_sample_where(self.done, self.x, moved), prev=self.x)

    def observe(self, loss, grad, fooled_now):
        """Record the loss (and gradient: None after the last step) at the new iterate."""
        done = self.done | fooled_now
        better = (loss > self.best_loss) & ~self.done
        best_grad = self.best_grad if grad is None else per_sample_where(better, grad,
                                                                         self.best_grad)
        return attrs.evolve(
            self, loss=loss, grad=grad, done=done,
            best_x=per_sample_where(better, self.x, self.best_x),
            best_loss=torch.where(better, loss, self.best_loss), best_grad=best_grad,
            rises=self.rises + (loss > self.loss).to(self.rises.dtype))

    def checkpoint(self, needed_rises):
        """Halve the step where (a) fewer than ``needed_rises`` steps raised the loss, or (b)
        neither the step nor the best loss changed since the last checkpoint; those samples
        restart from their best iterate (with its gradient and no momentum)."""
        stalled = ~self.halved_at_check & (self.best_loss <= self.best_at_check)
        halve = ((self.rises < needed_rises) | stalled) & ~self.done
        return attrs.evolve(
            self, eta=torch.where(halve, self.eta / 2, self.eta),
            x=per_sample_where(halve, self.best_x, self.x),
            prev=per_sample_where(halve, self.best_x, self.prev),
            grad=per_sample_where(halve, self.best_grad, self.grad),
            loss=torch.where(halve, self.best_loss, self.loss),
            rises=torch.zeros_like(self.rises), best_at_check=self.best_loss,
            halved_at_check=halve)


@attrs.frozen(kw_only=True)
class APGDCE(_APGD):
    """Auto-PGD ascending the cross-entropy (targeted: descending the target's cross-entropy).

    Step-size free: the step starts at 2 eps and halves per sample at fixed checkpoints when
    progress stalls, restarting from the best point; momentum 0.75; random start.
    """

    name = "apgd-ce"

    def loss(self, logits, y, targets, targeted):
        return objective(logits, targets if targeted else y, targeted)


@attrs.frozen(kw_only=True)
class APGDDLR(_APGD):
    """Auto-PGD ascending the DLR loss, invariant to the scale of the logits.

    Untargeted ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``; targeted
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (needs 3, resp. 4, classes).  Same step
    schedule as apgd-ce.
    """

    name = "apgd-dlr"

    def loss(self, logits, y, targets, targeted):
        if targeted:
            check_classes(logits, 4, self.name)
            return targeted_dlr(logits, y, targets)
        check_classes(logits, 3, self.name)
        return dlr(logits, y)
