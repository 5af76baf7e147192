"""The projected steepest-ascent loop shared by BIM and PGD, and PGD's merge of restarts.

One run starts at a given point and takes ``steps`` projected ascent steps.  Per sample it keeps
the first iterate the model misclassifies (read from the logits already computed for the
gradient, so no extra forward pass per step) and otherwise returns the final iterate.  Every
:data:`SHRINK_EVERY` steps the samples already fooled leave the batch, so a sample that falls
early costs only the passes until then.  When runs are compared (PGD's restarts), one forward
pass at the end checks and scores the final iterate.  Every call on a part of the batch declares
its samples (:func:`advx.for_samples`): a restart's samples, and within a run the samples
still stepping.
"""

from typing import NamedTuple

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, to_float, whole

from ._gradients import (
    ascent_direction,
    declared,
    fooled,
    objective,
    objective_gradient,
    per_sample,
    per_sample_where,
    projection_onto,
)

# Steps between two checks for finished samples: each check is one host sync (a nonzero()),
# and the fooled samples found leave the batch.
SHRINK_EVERY = 5


class Run(NamedTuple):
    """What one run returns per sample: the example, whether it fools the model, its objective.

    ``score`` is the objective of the final iterate (None when not checked); it only ranks
    samples that no run fooled.
    """

    x_adv: torch.Tensor
    fooled: torch.Tensor
    score: torch.Tensor
    passes: torch.Tensor | None = None  # int64 gradient passes per sample (None: ``steps``)


def ascend(model, x, labels, threat, *, start, steps, step_size, targeted, check_final=False):
    """Run ``steps`` projected ascent steps from ``start``; see :class:`Run`.

    A sample the model misclassifies is frozen: its step size drops to zero, so it stays at its
    first fooling iterate (clamping a point already inside the linf box returns it unchanged;
    other norms restore it explicitly).  Every :data:`SHRINK_EVERY` steps one host sync finds
    the frozen samples and drops them from the batch (no copy while none is frozen); samples
    are independent, so the result is the same as stepping the whole batch to the end (linf:
    bit for bit; l2: up to the float rounding of passes on small batches, as with chunking:
    on CPU a pass on 1 to 3 samples rounds differently from one on more).
    ``passes`` counts each sample's gradient passes: ``steps``, or the step at which it left.
    Without ``check_final`` no pass follows the last step: ``fooled`` then covers the iterates
    before it and ``score`` is None.
    """
    active = _Active(x, labels, start, steps, threat, step_size)
    for step in range(steps):
        if step and step % SHRINK_EVERY == 0 and not active.shrink(step):
            break
        with declared(active.index):
            grad, logits = objective_gradient(model, active.x_adv, active.labels, targeted)
        active.done = active.done | fooled(logits, active.labels, targeted)
        rates = per_sample((~active.done).to(start.dtype) * active.step_size, active.x_adv)
        stepped = active.project(torch.addcmul(active.x_adv, rates,
                                               ascent_direction(threat.norm, grad)))
        active.x_adv = (stepped if threat.norm == "linf"
                        else per_sample_where(active.done, active.x_adv, stepped))
    x_adv, done = active.whole()
    if not check_final:
        return Run(x_adv, done, None, active.passes)
    with torch.no_grad():
        logits = model(x_adv)
    return Run(x_adv, done | fooled(logits, labels, targeted),
               objective(logits, labels, targeted), active.passes)


class _Active:
    """The samples of :func:`ascend` still stepping, and the finished ones set aside."""

    def __init__(self, x, labels, start, steps, threat, step_size):
        self.x, self.labels, self.x_adv, self.threat = x, labels, start, threat
        self.step_size = step_size  # a number, or per sample with a per-sample eps
        self.done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.passes = torch.full((len(x),), steps, dtype=torch.int64, device=x.device)
        self.project = projection_onto(threat, x)
        self.index = None  # rows of the whole batch still stepping; None: all of them
        # (model calls on the active samples declare it: ``with declared(active.index)``)
        self.out_x = self.out_done = None  # the whole batch, once a sample has left

    def shrink(self, step):
        """Set the fooled samples aside (they took ``step`` passes); False if none is left."""
        keep = (~self.done).nonzero().squeeze(1)  # the one host sync of these steps
        if len(keep) == len(self.done):
            return True
        if self.out_x is None:  # the first to leave: the batch is still the whole one
            self.out_x, self.out_done = self.x_adv, self.done  # stepped tensors, ours alone
            self.index = torch.arange(len(self.done), device=self.done.device)
        else:
            self.out_x[self.index[self.done]] = self.x_adv[self.done]
            self.out_done[self.index[self.done]] = True
        self.passes[self.index[self.done]] = step
        self.index, self.x, self.labels = self.index[keep], self.x[keep], self.labels[keep]
        self.x_adv, self.done = self.x_adv[keep], self.done[keep]
        self.threat = self.threat.select(keep)
        if torch.is_tensor(self.step_size):
            self.step_size = self.step_size[keep]
        self.project = projection_onto(self.threat, self.x)
        return len(keep) > 0

    def whole(self):
        """``(x_adv, done)`` of the whole batch."""
        if self.out_x is None:
            return self.x_adv, self.done
        self.out_x[self.index] = self.x_adv
        self.out_done[self.index] = self.done
        return self.out_x, self.out_done


def with_restarts(one_run, x, labels, *, steps, restarts):
    """``(x_adv, queries)`` of ``one_run(x, labels, None)`` followed by ``restarts - 1`` further
    runs ``one_run(x[index], labels[index], index)`` on the samples no run has fooled yet,
    keeping per sample the strongest result (:func:`merge`).

    Each run costs up to ``steps`` passes per sample it attacks (the run's ``passes`` where it
    counts them), plus one comparison pass when there are restarts; one host sync per restart
    (never per step) selects the samples left.
    """
    best = one_run(x, labels, None)
    queries = _passes(best, steps) + (restarts > 1)
    for _ in range(restarts - 1):
        index = (~best.fooled).nonzero().squeeze(1)
        if index.numel() == 0:
            break
        with advx.for_samples(index):  # the run calls the model on these samples only
            run = one_run(x[index], labels[index], index)
        queries[index] += _passes(run, steps) + 1
        best = merge(best, run, index)
    return best.x_adv, queries


def _passes(run, steps):
    """The run's gradient passes per sample (``steps`` each when it does not count them)."""
    if run.passes is not None:
        return run.passes.clone()
    return torch.full((len(run.x_adv),), steps, dtype=torch.int64, device=run.x_adv.device)


def merge(best, run, index):
    """``best`` with the samples at ``index`` replaced where ``run`` is stronger.

    Stronger means: it fools the model and the kept result does not, or neither fools it and the
    run's objective is higher.  Earlier results win ties, so adding restarts never weakens one.
    """
    kept_fooled = best.fooled[index]
    stronger = (run.fooled & ~kept_fooled) | (
        ~run.fooled & ~kept_fooled & (run.score > best.score[index]))
    x_adv = best.x_adv.clone()
    x_adv[index] = per_sample_where(stronger, run.x_adv, best.x_adv[index])
    fooled_now = best.fooled.clone()
    fooled_now[index] = kept_fooled | run.fooled
    score = best.score.clone()
    score[index] = torch.where(stronger, run.score, best.score[index])
    return Run(x_adv, fooled_now, score)


def attack_labels(y, targets, threat):
    """The labels the objective uses: the targets when targeted, else the true labels."""
    return targets if threat.targeted else y


def steps_field(default):
    """The ``steps`` parameter of an iterative attack."""
    return attrs.field(
        default=default, validator=whole(1),
        metadata={"help": "number of gradient steps"})


def step_size_field(rule):
    """The optional absolute ``step_size`` parameter; ``rule`` says what None means."""
    return attrs.field(
        default=None, converter=to_float,
        validator=finite(0, MAX_SCALE, low_open=True, optional=True),
        metadata={"help": f"absolute step size on the input scale (default: {rule})"})


def resolve_step_size(step_size, eps, steps, travel, rel_step_size=None):
    """The absolute step: ``step_size`` if given, else ``rel_step_size * eps``, else the step
    that lets ``steps`` steps travel ``travel * eps`` in all."""
    if step_size is not None:
        return step_size
    if rel_step_size is not None:
        return rel_step_size * eps
    return travel * eps / steps


def select(value, index):
    """``value[index]`` for a per-sample tensor (all of it when ``index`` is None), else
    ``value`` itself."""
    return value[index] if torch.is_tensor(value) and index is not None else value


def constant_queries(x, count):
    """A per-sample query count of ``count`` model evaluations."""
    return torch.full((len(x),), count, dtype=torch.int64, device=x.device)
