"""Propagation accounting: what an attack spent per sample, its budget, and the best it saw.

Around every attack call (:meth:`advx.Attack.__call__`) the core opens a :class:`Ledger` on
the attacked model: a forward hook on the model counts, per sample, every row the attack
evaluates (one forward propagation) and every gradient that flows back through those rows
(one backward propagation), as AttackBench counts them (Cinà et al., 2025).  The rows of a
call are matched to the batch's samples by :func:`advx.for_samples` (see
:mod:`advx.kernel.accounting`).

With a per-sample ``budget`` of propagations (forwards + backwards), a row beyond its
sample's budget gets nothing useful: its logits are zeros cut from the graph and its gradient
is zero; the sample is marked out of budget.  The ledger also keeps, per sample, the distance
of the best adversarial the attack queried within its budget (inside the threat model), so a
report can say when an attack returned a worse point than one it had already seen.

Ledgers nest: an attack called inside another's run (an ensemble's parts, a search's probes)
on the same model counts for both; each maps the rows to its own batch.  The ledgers of a
call live in a context variable, so two threads attacking one module do not mix.
"""

import contextlib
import contextvars
import threading

import numpy as np
import torch

from .accounting import declared_rows, fresh_rows

# The per-sample counts of a result (AttackResult fields, set columns) and their value where
# nothing was counted (a set computed before advx counted, a result made outside the core).
COUNTS = ("forwards", "backwards", "best_distance", "out_of_budget")
UNCOUNTED = {"forwards": -1, "backwards": -1, "best_distance": float("nan"),
             "out_of_budget": False}


def uncounted(name, n, distance_dtype):
    """``n`` rows of the :data:`UNCOUNTED` value of the count ``name`` (a numpy array)."""
    dtype = {"forwards": np.int64, "backwards": np.int64, "out_of_budget": bool,
             "best_distance": distance_dtype}[name]
    return np.full(n, UNCOUNTED[name], dtype=dtype)


_LEDGERS = contextvars.ContextVar("advx_ledgers", default=())
_HOOKS = {}  # id(module) -> [hook handle, number of open ledgers]
_HOOKS_LOCK = threading.Lock()


class Ledger:
    """The per-sample account of one attack call on a batch ``x`` (see the module docstring).

    :param goal: the labels to escape (untargeted) or the targets to reach (targeted).
    :param rejected: the model's reject output index (a detector), or None.
    :param budget: propagations per sample: a whole number, an int64 tensor of one per sample
        (what a search that calls an attack several times has left), or None (unlimited).
    :param base: the rows of the enclosing ledger's batch that this batch's samples are (the
        :func:`advx.for_samples` block the call was made in), or None.
    """

    def __init__(self, model, x, goal, threat, *, rejected=None, budget=None, base=None):
        self.model, self.x, self.goal, self.threat = model, x.detach(), goal, threat
        n, device = len(x), x.device
        if torch.is_tensor(budget):
            budget = budget.to(device)
        self.rejected, self.budget, self.base = rejected, budget, base
        self.forwards = torch.zeros(n, dtype=torch.int64, device=device)
        self.backwards = torch.zeros(n, dtype=torch.int64, device=device)
        self.refusals = torch.zeros(n, dtype=torch.int64, device=device)
        self.best = torch.full((n,), float("inf"), dtype=x.dtype, device=device)

    @property
    def refused(self):
        """Per sample: the budget refused it a propagation."""
        return self.refusals > 0

    def rows_of(self, inputs, declared):
        """The samples of this batch that the rows of ``inputs`` are."""
        n, m = len(self.x), len(inputs)
        if declared is not None and len(declared) == m:
            return declared.to(self.x.device)
        if m == n:
            return torch.arange(n, device=self.x.device)
        return nearest(self.x, inputs)

    def allowed(self, rows):
        """Per row: whether its sample has a propagation left (rows of one sample are served
        in order)."""
        if self.budget is None:
            return torch.ones(len(rows), dtype=torch.bool, device=rows.device)
        spent = (self.forwards + self.backwards)[rows]
        budget = self.budget[rows] if torch.is_tensor(self.budget) else self.budget
        return spent + rank_within(rows, len(self.x)) < budget

    def count(self, counter, rows, allowed, asked):
        """Count the ``asked`` rows' propagations in ``counter`` where ``allowed``, and a
        refusal where not (masks, not selections: no host synchronisation)."""
        counter.index_add_(0, rows, (asked & allowed).to(torch.int64))
        self.refusals.index_add_(0, rows, (asked & ~allowed).to(torch.int64))

    def observe(self, rows, inputs, logits, allowed):
        """Keep the distance of every adversarial among the rows (within budget and the
        threat model) when it beats the sample's best."""
        x = self.x[rows]
        pred = logits.argmax(1)
        hit = pred == self.goal[rows] if self.threat.targeted else pred != self.goal[rows]
        if self.rejected is not None:
            hit &= pred != self.rejected
        inputs = inputs.to(x.dtype)
        hit &= allowed & self.threat.select(rows).contains(x, inputs)
        distance = self.threat.distance(x, inputs).to(self.best.dtype)
        distance = torch.where(hit, distance, torch.full_like(distance, float("inf")))
        self.best.scatter_reduce_(0, rows, distance, "amin")


def nearest(x, inputs):
    """For each row of ``inputs``, the index of the nearest row of ``x`` (L2)."""
    flat_x = x.flatten(1).to(torch.float64)
    flat = inputs.detach().flatten(1).to(flat_x)
    return torch.cdist(flat, flat_x).argmin(1)


def rank_within(rows, n):
    """Per row, how many earlier rows name the same sample (0 for the first)."""
    order = torch.argsort(rows, stable=True)
    ordered = rows[order]
    counts = torch.bincount(ordered, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.empty_like(rows)
    ranks[order] = torch.arange(len(rows), device=rows.device) - starts[ordered]
    return ranks


@contextlib.contextmanager
def ledger_open(ledger):
    """Count the propagations of ``ledger.model`` on ``ledger``'s batch while the block runs
    (the block starts with no declared rows: see :func:`advx.kernel.accounting.fresh_rows`)."""
    token = _LEDGERS.set(_LEDGERS.get() + (ledger,))
    _attach(ledger.model)
    try:
        with fresh_rows():
            yield ledger
    finally:
        _detach(ledger.model)
        _LEDGERS.reset(token)


def _attach(module):
    with _HOOKS_LOCK:
        entry = _HOOKS.get(id(module))
        if entry is None:
            _HOOKS[id(module)] = [module.register_forward_hook(_on_forward), 1]
        else:
            entry[1] += 1


def _detach(module):
    with _HOOKS_LOCK:
        entry = _HOOKS[id(module)]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].remove()
            del _HOOKS[id(module)]


def _on_forward(module, args, output):
    ledgers = [ledger for ledger in _LEDGERS.get() if ledger.model is module]
    if not ledgers or not args or not torch.is_tensor(args[0]) or not torch.is_tensor(output):
        return None
    inputs = args[0]
    if len(inputs) == 0 or output.dim() != 2 or len(output) != len(inputs):
        return None
    with torch.no_grad():
        chain = _chain(ledgers, inputs)
        allowed = torch.ones(len(inputs), dtype=torch.bool, device=inputs.device)
        for ledger, rows in chain:
            allowed &= ledger.allowed(rows)
        asked = torch.ones_like(allowed)
        for ledger, rows in chain:
            ledger.count(ledger.forwards, rows, allowed, asked)
            ledger.observe(rows, inputs, output.detach(), allowed)
    if output.requires_grad:
        output.register_hook(_backward_counter(chain, allowed))
    if all(ledger.budget is None for ledger, _ in chain):
        return None
    keep = allowed.unsqueeze(1)
    return torch.where(keep, output, torch.zeros_like(output).detach())


def _chain(ledgers, inputs):
    """``[(ledger, rows)]`` from the innermost ledger out: each maps the call's rows to its
    own batch (through the inner ledger's base when it has one)."""
    chain, rows, declared = [], None, declared_rows()
    for ledger in reversed(ledgers):
        if rows is None:
            rows = ledger.rows_of(inputs, declared)
        else:
            inner = chain[-1][0]
            rows = (inner.base.to(rows.device)[rows] if inner.base is not None
                    else ledger.rows_of(inputs, rows if len(inner.x) == len(ledger.x) else None))
        chain.append((ledger, rows))
    return chain


def _backward_counter(chain, served):
    limited = any(ledger.budget is not None for ledger, _ in chain)

    def hook(grad):
        with torch.no_grad():
            allowed = served.clone()
            for ledger, rows in chain:
                allowed &= ledger.allowed(rows)
            for ledger, rows in chain:
                ledger.count(ledger.backwards, rows, allowed, served)
        return grad * allowed.unsqueeze(1).to(grad.dtype) if limited else None
    return hook


def returned_worse(kind, success, distance, best, rtol=1e-5):
    """Per sample: the attack queried an adversarial better than the one it returned (for a
    minimisation attack, closer by more than ``rtol``; for a fixed-eps attack, any adversarial
    when it returned none)."""
    seen = torch.isfinite(best)
    if kind == "minimization":
        closer = best < distance * (1 - rtol)
        return seen & (~success | closer)
    return seen & ~success
