"""FAB: the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020, "Minimally distorted
adversarial examples with a fast adaptive boundary attack"), for linf, l2 and l1.

Each step linearises the classifier at the iterate ``x_i``: for each class k other than the
label y, ``f_k(z) ~ f_k(x_i) + <w_k, z - x_i>`` with ``f_k = Z_k - Z_y`` and ``w_k`` its input
gradient.  The boundary closest in the norm (``|f_k| / ||w_k||_dual``) is the hyperplane
``pi``; both the iterate and the clean input x are projected onto ``pi`` intersected with the
input box (:mod:`._fab_projection`), giving moves ``d_i`` and ``d_x``, and the next iterate is

    x_{i+1} = clip((1 - alpha) (x_i + eta d_i) + alpha (x + eta d_x)),
    alpha = min(||d_i|| / (||d_i|| + ||d_x||), alpha_max),

the paper's bias toward the original point, with the overshoot ``eta``.  When ``x_{i+1}`` is
adversarial it is recorded if it is the closest one yet, and the search steps back toward x:
``x_{i+1} := x + beta (x_{i+1} - x)``.  The first run starts at x; each restart starts on the
sphere of radius ``min(best, eps) / 2`` around x (``best``: the sample's smallest adversarial
distance so far; without eps, samples with none found are not restarted): uniform on the l2
sphere (a normalised Gaussian), on the l1 sphere (normalised Laplace noise), and for linf a
uniform point of the cube scaled to the sphere, as AutoAttack draws it.

Targeted at a class t (AutoAttack's FAB-T, or a targeted threat model), only the boundary
``Z_t - Z_r = 0`` is linearised: one gradient per step.  FAB-T (``target_classes = n``) runs
FAB toward each of the n classes the clean logits rank highest after y in turn, with the
untargeted success criterion; a targeted threat model takes r as the strongest class other
than t at the iterate and asks for t.
"""

import math

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, fold_rejection, reject_index, to_float, whole

from ._fab_projection import dual_lengths, lengths, project_onto_hyperplane
from ._gradients import chunk_size, fooled, per_sample, per_sample_where
from ._iterative import constant_queries, steps_field

TINY = 1e-12  # added to the dual norm of a gradient before dividing by it
MIN_MOVE = 1e-8  # floor of the lengths of the two projections in alpha


@attrs.frozen(kw_only=True)
class FAB(advx.MinimizationAttack):
    """The Fast Adaptive Boundary attack: projections onto the closest linearised boundary,
    biased toward the clean input, stepping back after every adversarial iterate.

    Per sample the closest adversarial across steps, restarts and target classes is kept
    (an iterate is also recorded when the gradient pass at it shows it adversarial, which
    costs nothing); samples never fooled return x, as do samples already adversarial at x
    (one forward pass each, no search).  Cost per step and attacked sample: two forward passes
    (the gradients' and the check of the new iterate) and, untargeted, one backward pass per
    class other than y (the gradients of ``Z_k - Z_y``, through one forward pass: K - 1
    passes, against K forward and K backward ones for a Jacobian of K repeated rows);
    targeted or FAB-T, one backward pass.  ``queries`` counts the forward passes: 1 +
    2 steps per run.  Host syncs: one per call and one per restart, never per step.
    """

    name = "fab"
    norms = frozenset({"linf", "l2", "l1"})
    access = "gradient"
    supports_targeted = True

    steps: int = steps_field(100)
    restarts: int = attrs.field(
        default=1, validator=whole(1),
        metadata={"help": "runs per target: the first from x, the others from random points "
                          "at half the smallest adversarial distance found (or eps)"})
    target_classes: int = attrs.field(
        default=0, validator=whole(0),
        metadata={"help": "0: untargeted FAB; n > 0: FAB-T, FAB toward each of the n most "
                          "likely other classes in turn (one gradient per step)"})
    alpha_max: float = attrs.field(
        default=0.1, converter=to_float, validator=finite(0, 1),
        metadata={"help": "largest weight of the step from the clean input (the bias toward "
                          "the original point)"})
    eta: float = attrs.field(
        default=1.05, converter=to_float, validator=finite(0, MAX_SCALE, low_open=True),
        metadata={"help": "overshoot: projections are stretched by this factor"})
    beta: float = attrs.field(
        default=0.9, converter=to_float, validator=finite(0, 1, low_open=True),
        metadata={"help": "after an adversarial iterate, the search moves back to x + beta "
                          "(x_adv - x)"})

    def check_threat(self, threat):
        super().check_threat(threat)
        if threat.targeted and self.target_classes:
            raise advx.UsageError(f"attack {self.name!r}: target_classes (FAB-T) chooses its "
                                  "own targets; a targeted threat model gives them")

    def run(self, model, x, y, threat, *, targets, rng):
        with torch.no_grad():
            clean = model(x)
        queries = constant_queries(x, 1)
        labels = targets if threat.targeted else y
        done = fooled(clean, labels, threat.targeted)
        best = x.clone()
        best_dist = torch.where(done, 0.0, math.inf).to(x.dtype)
        attacked = (~done).nonzero().squeeze(1)  # host sync: once per call
        if attacked.numel() == 0:
            return best, queries
        for goal in self._goals(clean, y, targets, reject_index(model)):
            for restart in range(self.restarts):
                rows = attacked if restart == 0 else _restartable(attacked, best_dist, threat)
                if rows.numel() == 0:
                    break
                start = (x[rows] if restart == 0 else _random_start(
                    threat, x[rows], best_dist[rows], rng.select(rows)))
                with advx.for_samples(rows):
                    best[rows], best_dist[rows] = self._descend(
                        model, x[rows], goal.select(rows), start, best[rows], best_dist[rows],
                        threat)
                queries[rows] += 2 * self.steps
        return best, queries

    def _goals(self, clean, y, targets, reject):
        """The runs' goals over the whole batch: all boundaries, FAB-T's targets or the
        threat model's."""
        if targets is not None:
            return [_Goal(targets, targets.unsqueeze(1), True)]
        others = _other_classes(clean, y, reject)
        if self.target_classes == 0:
            return [_Goal(y, others, False)]
        count = min(self.target_classes, others.shape[1])
        return [_Goal(y, others[:, k:k + 1], False) for k in range(count)]

    def _descend(self, model, x, goal, start, best, best_dist, threat):
        """One run of ``steps`` steps from ``start``; the closest adversarials
        ``(best, best_dist)`` updated with its iterates."""
        x_i = start
        for _ in range(self.steps):
            f, w, logits = _closest_boundary(model, x_i, goal, threat.norm)
            best, best_dist = _keep_closer(threat, x, x_i, goal.reached(logits), best,
                                           best_dist)
            x_i = self._step(threat, x, x_i, f, w)
            with torch.no_grad():
                reached = goal.reached(model(x_i))
            best, best_dist = _keep_closer(threat, x, x_i, reached, best, best_dist)
            x_i = per_sample_where(reached, torch.lerp(x, x_i, self.beta), x_i)
        return best, best_dist

    def _step(self, threat, x, x_i, f, w):
        """FAB's update: projections of x_i and x onto ``f + <w, z - x_i> = 0`` in the box,
        combined with the bias toward x and stretched by eta."""
        here, origin = x_i.flatten(1), x.flatten(1)
        offset = (w * here).sum(1) - f  # the hyperplane <w, z> = offset
        moves = project_onto_hyperplane(threat.norm, torch.cat([here, origin]),
                                        torch.cat([w, w]), torch.cat([offset, offset]),
                                        threat.bounds)
        d_here, d_origin = moves.split(len(here))
        a_here = lengths(threat.norm, d_here).clamp_min(MIN_MOVE)
        a_origin = lengths(threat.norm, d_origin).clamp_min(MIN_MOVE)
        alpha = (a_here / (a_here + a_origin)).clamp(0, self.alpha_max).unsqueeze(1)
        moved = torch.lerp(here + self.eta * d_here, origin + self.eta * d_origin, alpha)
        return moved.clamp(*threat.bounds).view_as(x_i)


@attrs.frozen(eq=False)
class _Goal:
    """What a run crosses: the boundaries between a rival and each of ``classes``.

    Untargeted (``targeted`` False) the rival is the label and success is any other class;
    targeted, ``labels`` are the targets, ``classes`` holds them, the rival is the strongest
    other class at the iterate and success is the target.
    """

    labels: torch.Tensor  # (B,)
    classes: torch.Tensor  # (B, C)
    targeted: bool

    def select(self, rows):
        return _Goal(self.labels[rows], self.classes[rows], self.targeted)

    def reached(self, logits):
        return fooled(logits, self.labels, self.targeted)

    def differences(self, logits):
        """``(B, C)``: ``Z_k - Z_rival`` for each k of ``classes`` (a detector's rejection
        folded into the label, untargeted)."""
        folded = fold_rejection(logits, self.labels, self.targeted)
        rival = self.labels.unsqueeze(1)
        if self.targeted:
            rival = folded.detach().scatter(1, rival, -math.inf).argmax(1, keepdim=True)
        return folded.gather(1, self.classes) - folded.gather(1, rival)


def _other_classes(clean, y, reject):
    """``(N, C)``: the classes other than y (and a detector's rejection), most likely first
    by the clean logits."""
    folded = fold_rejection(clean, y)
    masked = folded.scatter(1, y.unsqueeze(1), -math.inf)
    count = folded.shape[1] - 1
    if reject is not None and reject < folded.shape[1]:  # the folded reject column stays
        masked[:, reject] = -math.inf
        count -= 1
    return masked.sort(dim=1, descending=True, stable=True).indices[:, :count]


def _closest_boundary(model, x_i, goal, norm):
    """``(f, w, logits)`` at ``x_i``: per sample the value and flat gradient of the goal's
    difference whose linearised boundary is closest in ``norm``, and the logits.

    Rows run in chunks (:func:`._gradients.chunk_size`); per chunk one forward pass and one
    backward pass per column of the goal's differences, w.r.t. the input only.
    """
    size, parts = chunk_size(x_i), []
    for begin in range(0, len(x_i), size):
        rows = torch.arange(begin, min(begin + size, len(x_i)), device=x_i.device)
        with advx.for_samples(rows), torch.enable_grad():
            leaf = x_i[rows].detach().requires_grad_(True)
            logits = model(leaf)
            differences = goal.select(rows).differences(logits)
            parts.append((*_closest(differences, leaf, norm), logits.detach()))
    return tuple(torch.cat(part) for part in zip(*parts))


def _closest(differences, leaf, norm):
    """``(f, w)`` of the column of ``differences`` whose boundary is closest (the first of
    equals), its gradient flattened; one backward pass per column, kept one at a time."""
    count, kept = differences.shape[1], None
    for k in range(count):
        grad = torch.autograd.grad(differences[:, k].sum(), leaf,
                                   retain_graph=k < count - 1)[0].flatten(1)
        f = differences[:, k].detach()
        distance = f.abs() / (dual_lengths(norm, grad) + TINY)
        if kept is not None:
            closer = distance < kept[0]
            distance = torch.where(closer, distance, kept[0])
            f = torch.where(closer, f, kept[1])
            grad = torch.where(closer.unsqueeze(1), grad, kept[2])
        kept = (distance, f, grad)
    return kept[1], kept[2]


def _keep_closer(threat, x, x_i, reached, best, best_dist):
    """``(best, best_dist)`` with x_i where it is adversarial and closer."""
    distance = threat.distance(x, x_i)
    closer = reached & (distance < best_dist)
    return (per_sample_where(closer, x_i, best), torch.where(closer, distance, best_dist))


def _restartable(attacked, best_dist, threat):
    """The attacked samples a restart has a radius for (host sync: once per restart)."""
    if threat.eps is not None:
        return attacked
    return attacked[best_dist[attacked].isfinite()]


def _random_start(threat, x, best_dist, rng):
    """A point on the sphere of radius ``min(best_dist, eps) / 2`` around x, clipped to the
    box (see the module docstring for the distribution per norm)."""
    shape = x.shape[1:]
    if threat.norm == "linf":
        noise = 2 * rng.rand(shape, dtype=x.dtype) - 1
    elif threat.norm == "l2":
        noise = rng.randn(shape, dtype=x.dtype)
    else:  # Laplace: exponential magnitudes with random signs
        magnitude = -torch.log1p(-rng.rand(shape, dtype=x.dtype))
        noise = magnitude * torch.where(rng.rand(shape, dtype=x.dtype) < 0.5, -1.0, 1.0)
    radius = best_dist if threat.eps is None else best_dist.clamp_max(threat.eps)
    scale = radius / 2 / lengths(threat.norm, noise.flatten(1)).clamp_min(TINY)
    return (x + noise * per_sample(scale, x)).clamp(*threat.bounds)
