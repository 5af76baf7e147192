"""Carlini & Wagner's attacks: CW-L2 (minimal L2, tanh space, Adam, binary search on c) and
CW-Linf (projected sign-gradient steps on the CW margin loss; Madry et al.'s "CW+" for kappa > 0).
"""

import math

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, to_float, whole

from ._gradients import (
    gradient_by_chunks,
    per_sample,
    per_sample_where,
    projection_onto,
    random_start,
)
from ._iterative import (
    Run,
    attack_labels,
    resolve_step_size,
    step_size_field,
    steps_field,
    with_restarts,
)
from ._margin import clamped_margin_gradient, confidence_field, margin, reached

# atanh's argument is scaled by 1 - SHRINK, so a pixel exactly on a bound maps to w = +-4.95
# instead of +-inf (torchattacks' bug: such pixels never move).  There tanh' = 2e-4 > 0, and
# Adam, being scale-free, moves w by about lr per step: a pixel at 0 can reach 0.1 within ~40
# steps at lr 0.1, against ~60 with the reference code's 1e-6 (w = +-7.25), which measured
# worse on MNIST at 50-100 steps per round.  The start is off x by at most 5e-5 of the range
# per pixel.
SHRINK = 1e-4
TRAVEL = 2.5  # cw-linf's default step size lets a run travel 2.5 eps (as PGD's)


class _TanhBox:
    """The change of variables x = a + b * tanh(w) onto the box ``bounds`` = [a - b, a + b]."""

    def __init__(self, bounds):
        lower, upper = bounds
        self.centre, self.half = (lower + upper) / 2, (upper - lower) / 2

    def to_w(self, x):
        return torch.atanh((x - self.centre) / self.half * (1 - SHRINK))

    def to_x(self, w):
        return self.centre + self.half * torch.tanh(w)


def _positive_float(default, help_text):
    return attrs.field(default=default, converter=to_float,
                       validator=finite(0, MAX_SCALE, low_open=True), metadata={"help": help_text})


@attrs.frozen(kw_only=True)
class CarliniWagnerL2(advx.MinimizationAttack):
    """Carlini & Wagner's L2 attack (Carlini & Wagner, 2017, "Towards Evaluating the
    Robustness of Neural Networks").

    Minimises ``||x' - x||_2^2 + c * max(-margin(x'), -kappa)`` over ``x' = a + b tanh(w)``
    (the box of the bounds; see :mod:`._margin` for the margin) with Adam on ``w``, for
    ``steps`` steps per round.  Over ``binary_search_steps`` rounds each sample's constant c is
    searched: multiplied by 10 until a round succeeds, then bisected between the largest c
    that failed and the smallest that succeeded.  Every round restarts from x.  Per sample the
    smallest example seen whose margin reaches kappa is kept (read from the logits of each
    step, so no extra pass); inputs already adversarial, and samples never reaching it,
    return x.  Unlike torchattacks, pixels exactly on a bound can move (see ``SHRINK``).
    Costs ``binary_search_steps * steps`` forward and backward passes per sample plus one
    forward pass on x; no host synchronisation at all.
    """

    name = "cw-l2"
    norms = frozenset({"l2"})
    access = "gradient"
    supports_targeted = True

    steps: int = steps_field(100)
    binary_search_steps: int = attrs.field(
        default=9, validator=whole(1),
        metadata={"help": "rounds of the per-sample search on the constant c"})
    lr: float = _positive_float(
        0.1, "Adam's learning rate on the tanh-space variable w (the paper's 0.01 suits its "
             "10,000 steps; at 100 steps per round it fooled only half of a batch of MNIST digits)")
    initial_const: float = _positive_float(
        1.0, "the constant c of the first round (the paper's 1e-3 spends rounds growing c to "
             "the 0.1-10 that logit margins need; equal at 9 rounds, worse with fewer)")
    confidence: float = confidence_field()

    def run(self, model, x, y, threat, *, targets, rng):
        labels = attack_labels(y, targets, threat)
        box = _TanhBox(threat.bounds)
        w_start = box.to_w(x)
        const = torch.full((len(x),), self.initial_const, device=x.device, dtype=x.dtype)
        lower, upper = torch.zeros_like(const), torch.full_like(const, math.inf)
        best, best_dist = _clean_start(model, x, labels, threat.targeted, self.confidence)
        for _ in range(self.binary_search_steps):
            found, best, best_dist = self._round(model, x, labels, threat.targeted, box,
                                                 w_start, const, best, best_dist)
            const, lower, upper = _search_const(found, const, lower, upper)
        queries = self.binary_search_steps * self.steps + 1
        return best, torch.full((len(x),), queries, dtype=torch.int64, device=x.device)

    def _round(self, model, x, labels, targeted, box, w_start, const, best, best_dist):
        """One round of Adam steps at fixed ``const``: ``(found, best, best_dist)``."""
        w = w_start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([w], lr=self.lr)
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        def loss(leaf, rows):
            x_adv = box.to_x(leaf)
            logits = model(x_adv)
            squared = (x_adv - x[rows]).flatten(1).pow(2).sum(1)
            return (squared - const[rows] * margin(logits, labels[rows], targeted).clamp_max(
                self.confidence), logits, x_adv, squared)

        for _ in range(self.steps):
            w.grad, _, logits, x_adv, squared = gradient_by_chunks(w, loss)
            with torch.no_grad():
                ok = reached(logits, labels, targeted, self.confidence)
                better = ok & (squared.sqrt() < best_dist)
                best = per_sample_where(better, x_adv, best)
                best_dist = torch.where(better, squared.sqrt(), best_dist)
                found |= ok
            optimiser.step()
        return found, best.detach(), best_dist.detach()


def _clean_start(model, x, labels, targeted, kappa):
    """``(best, best_dist)`` before any step: x at distance 0 where x itself is adversarial
    (with margin kappa), else x at distance inf.  One forward pass."""
    with torch.no_grad():
        ok = reached(model(x), labels, targeted, kappa)
    zero = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    return x.clone(), torch.where(ok, zero, math.inf)


def _search_const(found, const, lower, upper):
    """Carlini & Wagner's update of c: bisect once bracketed, else grow it tenfold."""
    upper = torch.where(found, torch.minimum(upper, const), upper)
    lower = torch.where(found, lower, torch.maximum(lower, const))
    bracketed = torch.isfinite(upper)
    const = torch.where(bracketed, (lower + upper) / 2, const * 10)
    return const, lower, upper


def _restarts_need_random_start(instance, attribute, value):
    if value > 1 and not instance.random_start:
        raise ValueError("restarts > 1 needs random_start=True (restarts from x are identical)")


@attrs.frozen(kw_only=True)
class CarliniWagnerLinf(advx.FixedEpsilonAttack):
    """PGD on Carlini & Wagner's margin loss (Madry et al., 2018, "Towards Deep Learning
    Models Resistant to Adversarial Attacks": the "CW" and, with kappa > 0, "CW+" attacks).

    Maximises ``min(margin, kappa)`` by projected sign-gradient steps from a random point of
    the linf ball (as ``pgd``); the margin is in logits (see :mod:`._margin`), so unlike the
    cross-entropy it does not saturate on confident models.  A sample stops at its first
    iterate with margin >= kappa that the model misclassifies (targeted: classifies as the
    target), else returns its last iterate.  Restarts attack only the samples not done yet and
    keep the stronger result per sample.  Each run costs ``steps`` forward and backward passes
    on the samples it attacks, plus one forward pass when ``restarts > 1``; one host sync per
    restart.
    """

    name = "cw-linf"
    norms = frozenset({"linf"})
    access = "gradient"
    supports_targeted = True

    steps: int = steps_field(100)
    step_size: float | None = step_size_field("2.5 * eps / steps")
    random_start: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool),
        metadata={"help": "start each run at a uniformly random point of the ball"})
    restarts: int = attrs.field(
        default=1, validator=[whole(1), _restarts_need_random_start],
        metadata={"help": "independent runs; per sample the strongest result is kept"})
    confidence: float = confidence_field()

    def run(self, model, x, y, threat, *, targets, rng):
        labels = attack_labels(y, targets, threat)
        step_size = resolve_step_size(self.step_size, threat.eps, self.steps, TRAVEL)
        return with_restarts(
            lambda xs, ls, index: self._one_run(model, xs, ls, threat, step_size,
                                                 rng if index is None else rng.select(index)),
            x, labels, steps=self.steps, restarts=self.restarts)

    def _one_run(self, model, x, labels, threat, step_size, rng):
        """One run of projected steps; ``fooled`` in the :class:`Run` means margin >= kappa."""
        targeted, kappa = threat.targeted, self.confidence
        project = projection_onto(threat, x)
        x_adv = random_start(threat, x, rng) if self.random_start else x
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            grad, logits = clamped_margin_gradient(model, x_adv, labels, targeted, kappa)
            done = done | reached(logits, labels, targeted, kappa)
            rates = per_sample((~done).to(x_adv.dtype) * step_size, x_adv)
            x_adv = project(torch.addcmul(x_adv, rates, grad.sign()))
        if self.restarts == 1:
            return Run(x_adv, done, None)
        with torch.no_grad():
            logits = model(x_adv)
        return Run(x_adv, done | reached(logits, labels, targeted, kappa),
                   margin(logits, labels, targeted))
