"""The projected steepest-ascent loop shared by BIM and PGD, and PGD's merge of restarts.

One run starts at a given point and takes ``steps`` projected ascent steps.  Per sample it keeps
the first iterate the model misclassifies (read from the logits already computed for the
gradient, so no extra forward pass per step) and otherwise returns the final iterate.  When runs
are compared (PGD's restarts), one forward pass at the end checks and scores the final iterate.
"""

from typing import NamedTuple

import attrs
import torch

from ._gradients import (
    ascent_direction,
    fooled,
    objective,
    objective_gradient,
    per_sample,
    per_sample_where,
    projection_onto,
)


class Run(NamedTuple):
    """What one run returns per sample: the example, whether it fools the model, its objective.

    ``score`` is the objective of the final iterate (None when not checked); it only ranks
    samples that no run fooled.
    """

    x_adv: torch.Tensor
    fooled: torch.Tensor
    score: torch.Tensor


def ascend(model, x, labels, threat, *, start, steps, step_size, targeted, check_final=False):
    """Run ``steps`` projected ascent steps from ``start``; see :class:`Run`.

    A sample the model misclassifies is frozen: its step size drops to zero, so it stays at its
    first fooling iterate (clamping a point already inside the linf box returns it unchanged;
    other norms restore it explicitly).  Without ``check_final`` no pass follows the last step:
    ``fooled`` then covers the iterates before it and ``score`` is None.
    """
    project = projection_onto(threat, x)
    x_adv = start
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        grad, logits = objective_gradient(model, x_adv, labels, targeted)
        done = done | fooled(logits, labels, targeted)
        rates = per_sample((~done).to(x_adv.dtype) * step_size, x_adv)
        stepped = project(torch.addcmul(x_adv, rates, ascent_direction(threat.norm, grad)))
        x_adv = stepped if threat.norm == "linf" else per_sample_where(done, x_adv, stepped)
    if not check_final:
        return Run(x_adv, done, None)
    with torch.no_grad():
        logits = model(x_adv)
    return Run(x_adv, done | fooled(logits, labels, targeted), objective(logits, labels, targeted))


def with_restarts(one_run, x, labels, *, steps, restarts):
    """``(x_adv, queries)`` of ``one_run(x, labels)`` followed by ``restarts - 1`` further runs
    on the samples no run has fooled yet, keeping per sample the strongest result (:func:`merge`).

    Each run costs ``steps`` passes per sample it attacks, plus one comparison pass when there
    are restarts; one host sync per restart (never per step) selects the samples left.
    """
    queries = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    best = one_run(x, labels)
    queries += steps + (restarts > 1)
    for _ in range(restarts - 1):
        index = (~best.fooled).nonzero().squeeze(1)
        if index.numel() == 0:
            break
        queries[index] += steps + 1
        best = merge(best, one_run(x[index], labels[index]), index)
    return best.x_adv, queries


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
        default=default, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)],
        metadata={"help": "number of gradient steps"})


def step_size_field(rule):
    """The optional absolute ``step_size`` parameter; ``rule`` says what None means."""
    return attrs.field(
        default=None, converter=attrs.converters.optional(float),
        validator=attrs.validators.optional(attrs.validators.gt(0)),
        metadata={"help": f"absolute step size on the input scale (default: {rule})"})


def resolve_step_size(step_size, eps, steps, travel, rel_step_size=None):
    """The absolute step: ``step_size`` if given, else ``rel_step_size * eps``, else the step
    that lets ``steps`` steps travel ``travel * eps`` in all."""
    if step_size is not None:
        return step_size
    if rel_step_size is not None:
        return rel_step_size * eps
    return travel * eps / steps


def constant_queries(x, count):
    """A per-sample query count of ``count`` model evaluations."""
    return torch.full((len(x),), count, dtype=torch.int64, device=x.device)
