"""The projection FAB takes at every step: onto a hyperplane intersected with the input box.

For a point ``p`` of the box ``[lower, upper]^n``, a normal ``w`` and an offset ``c``,
:func:`project_onto_hyperplane` returns the move ``d`` of smallest ``norm`` (linf, l2 or l1)
with ``<w, p + d> = c`` and ``p + d`` in the box (Croce & Hein, 2020, eq. 6).  Where no point
of the box reaches the hyperplane it returns the move to the box point that comes closest:
every coordinate with ``w_i != 0`` goes to the bound on the hyperplane's side, the others stay.

The solution never moves a coordinate away from the hyperplane (that costs norm and progress),
so with ``r = c - <w, p>`` the needed progress and ``g_i = |w_i|`` the progress per unit move,
the problem is ``min ||e||`` over ``0 <= e_i <= room_i`` with ``sum g_i e_i = |r|``, where
``room_i`` is the distance from ``p_i`` to the bound it moves toward; then
``d_i = e_i sign(r w_i)``.  Its solutions, per norm:

- linf: ``e_i = min(t, room_i)`` (where ``g_i > 0``) for the level ``t`` that reaches ``|r|``;
- l2 (KKT): ``e_i = min(lambda g_i, room_i)`` for the multiplier ``lambda`` that reaches it;
- l1 (a fractional knapsack): the coordinates of largest ``g_i`` are filled to their room in
  turn, the last one partly.

Each is one sort of n values per row, cumulative sums and a ``searchsorted``: batched over the
rows, no host synchronisation.  The sums are taken in float64: in float32 the level found from
hundreds of accumulated terms misses the hyperplane by more than the attack's tolerance.
"""

import torch


def project_onto_hyperplane(norm, points, w, c, bounds):
    """The move ``d`` (like ``points``) of least ``norm`` onto ``<w, p + d> = c`` in the box.

    :param norm: "linf", "l2" or "l1".
    :param points: (B, n) points inside ``bounds``.
    :param w: (B, n) normals of the hyperplanes.
    :param c: (B,) offsets of the hyperplanes.
    :param bounds: ``(lower, upper)`` of every coordinate.
    """
    points64, w64 = points.double(), w.double()
    residual = c.double() - (w64 * points64).sum(1)
    toward = w64 * torch.where(residual < 0, -1.0, 1.0).unsqueeze(1)  # progress per unit +move
    lower, upper = bounds
    room = torch.where(toward > 0, upper - points64, points64 - lower).clamp_min(0)
    gain = toward.abs()
    need = residual.abs().unsqueeze(1)
    solve = {"linf": _water_level, "l2": _water_level, "l1": _knapsack}[norm]
    moves = solve(norm, gain, room, need)
    return (moves * toward.sign()).to(points.dtype)


def _water_level(norm, gain, room, need):
    """``e_i = min(s h_i, room_i)`` with the least ``s`` reaching ``need``: ``h_i = 1`` (linf)
    or ``g_i`` (l2) where ``g_i > 0``, 0 elsewhere.

    The progress ``sum g_i min(s h_i, room_i)`` is piecewise linear and nondecreasing in
    ``s``, with breakpoints ``room_i / h_i``.  After sorting them, the progress at the k-th
    is ``A_k + s_k H_k`` (``A_k``: the progress of the k coordinates already at their room,
    ``H_k = sum g_j h_j`` over the rest); the k breakpoints whose progress falls short of
    ``need`` fix the piece on which ``s = (need - A_k) / H_k`` (the first piece that reaches
    it: a later one may be flat, when the gains left are tiny).  No piece reaches it: ``s``
    is infinite and every coordinate moves to its room.
    """
    moving = gain > 0
    slope = moving.to(gain.dtype) if norm == "linf" else gain
    breaks = torch.where(moving, room / torch.where(moving, slope, 1.0), 0.0)
    breaks, order = breaks.sort(1)
    gain_sorted, room_sorted, slope_sorted = (t.gather(1, order) for t in (gain, room, slope))
    zero = torch.zeros_like(need)
    filled = torch.cat([zero, (gain_sorted * room_sorted).cumsum(1)], 1)  # A_0 .. A_n
    rest = (gain_sorted * slope_sorted).flip(1).cumsum(1).flip(1)
    rest = torch.cat([rest, zero], 1)  # H_0 .. H_n
    reached = filled[:, 1:] + breaks * rest[:, 1:]  # progress at each breakpoint
    k = torch.searchsorted(reached.contiguous(), need.contiguous())
    a_k, h_k = filled.gather(1, k), rest.gather(1, k)
    level = torch.where(h_k > 0, (need - a_k) / torch.where(h_k > 0, h_k, 1.0), torch.inf)
    level = level.clamp_min(0)
    return torch.where(moving, torch.minimum(level * slope, room), 0.0)


def _knapsack(norm, gain, room, need):
    """``min sum e_i`` reaching ``need``: fill the coordinates in decreasing order of ``g_i``
    (progress per unit of l1 norm), each to its room, until the next one suffices."""
    gain_sorted, order = gain.sort(dim=1, descending=True, stable=True)
    room_sorted = room.gather(1, order)
    progress = (gain_sorted * room_sorted).cumsum(1)
    full = torch.searchsorted(progress.contiguous(), need.contiguous())  # filled to their room
    before = torch.cat([torch.zeros_like(need), progress], 1).gather(1, full)
    position = torch.arange(gain.shape[1], device=gain.device).unsqueeze(0)
    last = full.clamp_max(gain.shape[1] - 1)
    partial = ((need - before) / gain_sorted.gather(1, last).clamp_min(1e-300))
    partial = torch.minimum(partial, room_sorted.gather(1, last))
    moves = torch.where(position < full, room_sorted, 0.0)
    moves = moves.scatter(1, last, torch.where(full < gain.shape[1], partial,
                                               moves.gather(1, last)))
    return torch.zeros_like(moves).scatter(1, order, moves)


def lengths(norm, flat):
    """Per-row ``norm`` of the (B, n) tensor ``flat``."""
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return torch.linalg.vector_norm(flat, 2, dim=1)
    return flat.abs().sum(1)


def dual_lengths(norm, flat):
    """Per-row dual norm of ``flat`` (l1 for linf, l2 for l2, linf for l1): the distance to a
    hyperplane ``f + <w, z - p> = 0`` in ``norm`` is ``|f| / dual(w)``."""
    return lengths({"linf": "l1", "l2": "l2", "l1": "linf"}[norm], flat)
