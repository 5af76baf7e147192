"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"): score-based random search.

Each iteration proposes, for every sample still unfooled, a change confined to a random square
window and keeps it if the logit margin drops.  The side of the window shrinks with the
iteration as the fraction ``p`` of changed pixels halves on the paper's schedule.  All samples
share the side in one iteration; the positions and signs are drawn per sample.
"""

import math

import advx
import attrs
import torch
from advx import finite, to_float, whole

from ._gradients import fooled, per_sample, per_sample_where
from ._iterative import attack_labels
from ._losses import margin

# p halves after these iterations of a 10,000-query run; other budgets rescale them.
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SIGN_DRAWS = 4  # linf: sign vectors tried per proposal before falling back to a sure change


def p_schedule(p_init, iteration, budget):
    """The fraction of pixels to change at ``iteration`` (0-based, after the first query of the
    start point) of a ``budget``-query run: ``p_init`` halved once per mark of
    :data:`P_HALVINGS` that ``iteration * 10000 / budget`` has passed."""
    scaled = int(iteration / budget * 10000)
    return p_init / 2 ** sum(scaled > mark for mark in P_HALVINGS)


def window_side(p, shape, norm):
    """The square's side for fraction ``p`` on images of ``shape`` (C, H, W).

    ``round(sqrt(p * H * W))``, at least 1 (linf) or an odd number at least 3 (l2, whose
    windows hold a +/- pattern), and at most ``min(H, W)``.
    """
    _, h, w = shape
    side = round(math.sqrt(p * h * w))
    if norm == "l2":
        side = max(side, 3)
        side += 1 - side % 2
    return max(1, min(side, h, w))


def windows(side, shape, rng):
    """Per-sample square windows: ``(mask (n, 1, H, W) bool, rows (n,), cols (n,))``, one per
    stream of ``rng``.

    The top-left corner is uniform over all positions where the window fits.
    """
    _, h, w = shape
    device = rng.device
    rows = rng.randint(0, h - side + 1)
    cols = rng.randint(0, w - side + 1)
    r = torch.arange(h, device=device)
    c = torch.arange(w, device=device)
    in_rows = (r >= rows[:, None]) & (r < rows[:, None] + side)
    in_cols = (c >= cols[:, None]) & (c < cols[:, None] + side)
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1), rows, cols


def random_signs(shape, rng, like):
    """+-1 of per-sample ``shape`` (a tensor (n, *shape)), in ``like``'s dtype."""
    return (2 * rng.randint(0, 2, shape) - 1).to(like.dtype)


@attrs.frozen(kw_only=True)
class Square(advx.FixedEpsilonAttack):
    """Random search over square-shaped changes, reading only the model's logits.

    linf: starts from vertical stripes of +-eps and sets a random window to x +- eps per
    channel (a sign vector that would change nothing is redrawn).  l2: starts from a grid of
    +/- bumps and moves perturbation mass into a window from a second window (plus the budget
    left), keeping the total norm eps.  A proposal is kept when it lowers the margin
    ``z_y - max_{j != y} z_j`` (targeted: ``max_{j != t} z_j - z_t``) or fools the model.
    Costs at most ``queries`` forward passes per sample (one on the clean input, one on the
    start, one per iteration) and runs under ``torch.no_grad``: no gradient is ever read.
    A fooled sample stops querying; finding which samples are left costs one host
    synchronisation per iteration (the forward pass on exactly those samples needs it).
    """

    name = "square"
    norms = frozenset({"linf", "l2"})
    access = "score"
    supports_targeted = True

    queries: int = attrs.field(
        default=5000, validator=whole(1),
        metadata={"help": "query budget per sample: forward passes, the clean input included"})
    p_init: float = attrs.field(
        default=0.8, converter=to_float, validator=finite(0, 1, low_open=True),
        metadata={"help": "initial fraction of pixels in the square; halves on the paper's "
                          "schedule (rescaled to the query budget)"})
    schedule_queries: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(whole(1)),
        metadata={"help": "the budget the schedule of p is laid out for (default: queries; "
                          "AutoAttack runs 5,000 queries on the 10,000-query schedule)"})

    @torch.no_grad()
    def run(self, model, x, y, threat, *, targets, rng):
        if x.dim() != 4:
            raise advx.UsageError(f"attack {self.name!r} needs image batches (N, C, H, W)")
        labels = attack_labels(y, targets, threat)
        spent = torch.ones(len(x), dtype=torch.int64, device=x.device)
        logits = model(x)
        done = fooled(logits, labels, threat.targeted)
        x_best = x.clone()
        loss = margin(logits, labels, threat.targeted)
        search = _Search(self, x, threat)
        for iteration in range(-1, self.queries - 2):  # -1: the start point
            index = (~done).nonzero().squeeze(1)  # the host sync of this iteration
            if index.numel() == 0:
                break
            streams = rng.select(index)
            if iteration < 0:
                proposal = search.start(index, streams)
            else:
                proposal = search.propose(index, x_best[index], iteration, streams)
            with advx.for_samples(index):
                logits = model(proposal)
            spent[index] += 1
            new_loss = margin(logits, labels[index], threat.targeted)
            hit = fooled(logits, labels[index], threat.targeted)
            keep = hit | (new_loss < loss[index]) | (iteration < 0)
            x_best[index] = per_sample_where(keep, proposal, x_best[index])
            loss[index] = torch.where(keep, new_loss, loss[index])
            done[index] = hit
        return x_best, spent


class _Search:
    """The proposals of one Square Attack run on a batch (the samples picked by ``index``)."""

    def __init__(self, attack, x, threat):
        self.attack, self.x, self.threat = attack, x, threat
        self.shape = tuple(x.shape[1:])
        self.patterns = {}  # side -> the l2 bump of that side
        if threat.norm == "linf":
            lower, upper = threat.bounds
            self.low = (x - threat.eps).clamp_min(lower)
            self.high = (x + threat.eps).clamp_max(upper)

    def start(self, index, rng):
        """The first point: stripes (linf) or a grid of bumps (l2)."""
        if self.threat.norm == "linf":
            c, _, w = self.shape
            signs = random_signs((c, 1, w), rng, self.x)
            return torch.where(signs > 0, self.high[index], self.low[index])
        return self._l2_point(self.x[index], _bump_grid(self.shape, rng, self.x))

    def propose(self, index, x_best, iteration, rng):
        """A candidate for each sample of ``index``, changed inside one random window."""
        attack = self.attack
        p = p_schedule(attack.p_init, iteration, attack.schedule_queries or attack.queries)
        side = window_side(p, self.shape, self.threat.norm)
        mask, rows, cols = windows(side, self.shape, rng)
        if self.threat.norm == "linf":
            return self._linf(index, x_best, mask, rng)
        return self._l2(self.x[index], x_best, side, mask, rows, cols, rng)

    def _linf(self, index, x_best, mask, rng):
        """Set the window to x + s_c eps per channel c, with a sign vector s that changes the
        window if one of :data:`SIGN_DRAWS` draws does, else the flip of the first draw (which
        always does: a window cannot sit at both x + eps and x - eps)."""
        low, high = self.low[index], self.high[index]
        at_high = ((x_best != high) & mask).flatten(2).any(2).logical_not()  # (n, C)
        at_low = ((x_best != low) & mask).flatten(2).any(2).logical_not()
        n, c = at_high.shape
        draws = random_signs((SIGN_DRAWS, c), rng, x_best).transpose(0, 1)  # (draws, n, C)
        wasted = torch.where(draws > 0, at_high, at_low).all(2)  # (draws, n)
        first = (~wasted).to(torch.int8).argmax(0)
        signs = draws[first, torch.arange(n, device=x_best.device)]
        signs = torch.where(wasted.all(0)[:, None], -draws[0], signs)
        values = torch.where(signs.view(n, c, 1, 1) > 0, high, low)
        return torch.where(mask, values, x_best)

    def _l2(self, x, x_best, side, mask, rows, cols, rng):
        """The paper's l2 proposal: window 1 receives the mass of windows 1 and 2 plus the
        unused budget (per channel), shaped as a +/- bump plus its old content; window 2 is
        emptied; the whole perturbation is then rescaled to norm eps."""
        eps, c = self.threat.eps, self.shape[0]
        delta = x_best - x
        mask2, _, _ = windows(side, self.shape, rng)
        squared = delta.square()
        image_norm = squared.flatten(1).sum(1).sqrt()
        window_norm = (squared * mask).sum((2, 3), keepdim=True).sqrt()  # (n, C, 1, 1)
        union_norm = (squared * (mask | mask2)).sum((2, 3), keepdim=True).sqrt()
        old = _take(delta, rows, cols, side) / (window_norm + 1e-10)
        signs = random_signs((c, 1, 1), rng, x)
        if side not in self.patterns:
            self.patterns[side] = _bump(side, x)
        new = _oriented(self.patterns[side], rng).unsqueeze(1) * signs + old
        budget = (eps ** 2 - image_norm.square()).clamp_min(0) / c
        scale = (per_sample(budget, new) + union_norm.square()).sqrt()
        new = new / (new.square().sum((2, 3), keepdim=True).sqrt() + 1e-12) * scale
        delta = _put(delta * ~mask2, new, rows, cols, side)
        return self._l2_point(x, delta)

    def _l2_point(self, x, delta):
        """``x + eps * delta / ||delta||`` clipped to the bounds (inside the ball)."""
        lengths = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        moved = x + delta * per_sample(self.threat.eps / lengths, delta)
        return self.threat.project(x, moved)


def _window_index(rows, cols, side):
    """Advanced indices selecting each sample's ``side`` x ``side`` window (all channels)."""
    steps = torch.arange(side, device=rows.device)
    samples = torch.arange(len(rows), device=rows.device)[:, None, None]
    return samples, (rows[:, None] + steps)[:, :, None], (cols[:, None] + steps)[:, None, :]


def _take(t, rows, cols, side):
    """Each sample's window of ``t``: shape (n, C, side, side)."""
    samples, r, c = _window_index(rows, cols, side)
    return t[samples, :, r, c].permute(0, 3, 1, 2)


def _put(t, values, rows, cols, side):
    """A copy of ``t`` with each sample's window replaced by ``values`` (n, C, side, side)."""
    samples, r, c = _window_index(rows, cols, side)
    out = t.clone()
    out[samples, :, r, c] = values.permute(0, 2, 3, 1)
    return out


def _rectangle_bump(height, width, like):
    """Concentric rectangles of weight 1 / (k + 1)^2 around the centre, unnormalised.

    A cell at Chebyshev distance d from the centre ``(height // 2, width // 2)`` is covered by
    the rings k = d .. K - 1, with K = max(height // 2, width // 2) + 1.
    """
    rings = max(height // 2, width // 2) + 1
    weights = 1 / torch.arange(1, rings + 1, device=like.device, dtype=like.dtype).square()
    tails = weights.flip(0).cumsum(0).flip(0)  # tails[d] = sum of weights[d:]
    dr = (torch.arange(height, device=like.device) - height // 2).abs()
    dc = (torch.arange(width, device=like.device) - width // 2).abs()
    return tails[torch.maximum(dr[:, None], dc[None, :])]


def _bump(side, like):
    """The l2 window pattern: a positive bump over the top half, a negative one below, unit
    norm (the paper's ``meta_pseudo_gaussian_pert``)."""
    top = _rectangle_bump(side // 2, side, like)
    bottom = -_rectangle_bump(side - side // 2, side, like)
    pattern = torch.cat([top, bottom])
    return pattern / pattern.norm().clamp_min(1e-12)


def _oriented(pattern, rng, copies=None):
    """Per stream of ``rng`` one copy of a square pattern (or ``copies`` of them: shape (n,
    copies, side, side)), each transposed with probability 1/2."""
    shape = (1, 1) if copies is None else (copies, 1, 1)
    flip = rng.randint(0, 2, shape).bool()
    return torch.where(flip, pattern.T, pattern)


def _bump_grid(shape, rng, like):
    """The l2 start: tiles of side max(H // 5, 1), centred, each a bump with a random sign per
    sample and channel (and a random orientation per sample and tile)."""
    c, h, w = shape
    side = max(h // 5, 1)
    tiles_h, tiles_w = h // side, w // side
    n = len(rng)
    bumps = _oriented(_bump(side, like), rng, tiles_h * tiles_w)
    bumps = bumps.view(n, 1, tiles_h, tiles_w, side, side)
    signs = random_signs((c, tiles_h, tiles_w, 1, 1), rng, like)
    grid = (bumps * signs).permute(0, 1, 2, 4, 3, 5).reshape(n, c, tiles_h * side,
                                                             tiles_w * side)
    top, left = (h - tiles_h * side) // 2, (w - tiles_w * side) // 2
    delta = like.new_zeros((n, *shape))
    delta[:, :, top:top + tiles_h * side, left:left + tiles_w * side] = grid
    return delta
