"""Per-sample search for the smallest grid eps at which a fixed-eps attack fools a sample.

A sample's *threshold* is the index of the first grid eps ``e_0 < ... < e_{K-1}`` at which the
attack misclassifies it (K: none).  The search *assumes monotonicity*: a sample fooled at an
eps is fooled at every larger one.  Each sample keeps an interval ``(lo, hi)``: ``lo`` the
largest index at which a probe left it robust, ``hi`` the smallest at which one fooled it (or
whose ball holds the distance of an example found at a larger eps: that part is exact).  Every
round probes each open sample at one index inside its interval: one attack call for the whole
round when the attack takes a per-sample eps (``per_sample_eps``; linf and l2), else one call
per distinct index; one host sync per round; it ends when every interval is closed, and the
threshold is ``hi``.  Under monotonicity any choice of probes gives the same thresholds; the
choice only decides the cost.

The cost is lopsided: a probe that leaves a sample robust runs the attack to the end, while one
that fools it stops early in attacks that drop fooled samples (PGD).  Plain bisection takes
about log2(K + 1) probes per sample, about half of them full-cost ones.  Instead the search is
*guided* by the clean margin ``z_y - max_{j != y} z_j`` (free: the clean logits exist anyway),
which ranks thresholds well (Spearman 0.94 on madry-cnn, Linf PGD):

1. Pilot: ``PILOT`` correctly classified samples, evenly spaced in margin order, are bisected.
2. A least-squares line ``log eps_threshold ~ a + b log margin`` is fitted on the pilot, and
   each other sample gets a prior over its threshold: a kernel density of the pilot's residuals
   (``BANDWIDTH`` in log eps) around its own prediction, plus ``FLOOR`` at every index.
3. Each of a guided sample's first ``GUIDED_PROBES`` probes goes to the median of its prior
   restricted to its interval; later ones bisect, so no sample takes more than
   ``GUIDED_PROBES + ceil(log2(K + 1))`` probes.

With fewer than ``2 * PILOT`` correctly classified samples, or no usable fit, every sample is
bisected.  Probes are seeded by ``seed(round, index)``, rounds counted across both stages.
"""

import math

import torch

from ..kernel.threat import PER_SAMPLE_NORMS

RTOL, ATOL = 1e-5, 1e-6  # the tolerance of ThreatModel.contains (its defaults)
PILOT = 24  # samples per call bisected to calibrate the guide
GUIDED_PROBES = 4  # probes per guided sample placed at its prior's median, before bisection
BANDWIDTH = 0.08  # of the residuals' kernel density, in log eps
FLOOR = 1e-3  # prior mass at every index beyond the kernels: no threshold is ruled out


def find_thresholds(attack, model, x, y, threats, *, targets=None, clean_logits=None,
                    seed=lambda r, m: 0):
    """Search ``attack``'s threshold per sample over ``threats`` (one per grid eps, sorted).

    Returns per sample the smallest misclassified example found (the clean input where none;
    clean-misclassified samples are not probed): tensors x_adv, success, distance, pred, and
    queries = the number of probes.  A probe costs the attack's own cost on its samples.
    """
    if clean_logits is None:
        with torch.no_grad():
            clean_logits = model(x)
    search = _Search(attack, model, x, y, threats, targets, clean_logits.argmax(1), seed)
    pilot = pilot_samples(clean_logits, y, PILOT)
    if pilot is None:
        search.rounds(search.correct, bisection)
    else:
        search.rounds(pilot, bisection)
        log_eps = extended_log_eps([t.eps for t in threats])
        prior = guide_prior(log_margin(clean_logits, y), pilot, search.hi, log_eps)
        rest = search.correct & ~pilot
        if prior is None:
            search.rounds(rest, bisection)
        else:
            search.rounds(rest, lambda lo, hi, probes: torch.where(
                probes < GUIDED_PROBES, prior_median(prior, lo, hi), bisection(lo, hi)))
    return search.found()


class _Search:
    """The intervals, probe counts and smallest examples of one search."""

    def __init__(self, attack, model, x, y, threats, targets, clean_pred, seed):
        self.attack, self.model, self.x, self.y = attack, model, x, y
        self.threats, self.targets, self.seed = threats, targets, seed
        self.allow = allowances([t.eps for t in threats], threats[0].norm).to(x.device)
        # one call per round, each sample at its own eps, where the attack takes that
        self.merged = (getattr(attack, "per_sample_eps", False)
                       and threats[0].norm in PER_SAMPLE_NORMS)
        self.eps = torch.tensor([t.eps for t in threats], dtype=x.dtype, device=x.device)
        self.correct = clean_pred == y
        self.best = {"x_adv": x.clone(), "pred": clean_pred.clone(),
                     "success": clean_pred == targets if targets is not None else ~self.correct,
                     "distance": torch.where(self.correct, torch.inf, 0.0).to(x.dtype)}
        self.lo = torch.full_like(y, -1)
        self.hi = torch.where(self.correct, len(threats), 0)
        self.probes = torch.zeros_like(y)
        self.round = 0

    def rounds(self, members, choose):
        """Probe the open ``members`` at ``choose(lo, hi, probes)`` until all are closed."""
        while True:
            open_ = members & (self.hi - self.lo > 1)
            at = choose(self.lo, self.hi, self.probes)
            if self.merged:
                index = open_.nonzero().squeeze(1)  # the round's host sync
                if not len(index):
                    return
                self.probe(index, at[index])
            else:
                indices = torch.unique(at[open_]).tolist()  # the round's host sync
                if not indices:
                    return
                for m in indices:
                    index = (open_ & (at == m)).nonzero().squeeze(1)
                    self.probe(index, torch.full_like(index, m), m)
            self.round += 1

    def probe(self, index, at, m=None):
        """One attack call on the samples ``index``, each at its grid index ``at``: all at
        index ``m``, or (``m`` None) each at its own eps."""
        y = self.y[index]
        if m is None:
            threat, seed = self.threats[0].with_eps(self.eps[at]), self.seed(self.round, -1)
        else:
            threat, seed = self.threats[m], self.seed(self.round, m)
        result = self.attack(self.model, self.x[index], y, threat, seed=seed,
                             targets=None if self.targets is None else self.targets[index])
        fooled = result.pred != y
        cap = torch.minimum(certified(self.allow, result.distance), at)
        self.hi[index] = torch.where(fooled, torch.minimum(self.hi[index], cap), self.hi[index])
        self.lo[index] = torch.where(fooled, self.lo[index], at)
        self.probes[index] += 1
        better = fooled & (result.distance < self.best["distance"][index])
        rows = index[better]
        for name in ("x_adv", "pred", "success"):
            self.best[name][rows] = getattr(result, name)[better]
        self.best["distance"][rows] = result.distance[better].to(self.best["distance"].dtype)

    def found(self):
        best = dict(self.best)
        best["distance"] = torch.where(torch.isinf(best["distance"]), 0.0, best["distance"])
        return {**best, "queries": self.probes}


def bisection(lo, hi, probes=None):
    """The middle index of each interval (``probes``, unused, as :meth:`_Search.rounds`
    passes it)."""
    return torch.div(lo + hi, 2, rounding_mode="floor")


def log_margin(logits, y):
    """log of the clean margin ``z_y - max_{j != y} z_j`` (floored at 1e-12)."""
    own = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, y.unsqueeze(1), -torch.inf).amax(1)
    return (own - others).double().clamp_min(1e-12).log()


def pilot_samples(logits, y, size):
    """Mask of ``size`` correctly classified samples evenly spaced in margin order, or None
    when fewer than ``2 * size`` are correctly classified (then everything is bisected)."""
    correct = (logits.argmax(1) == y).nonzero().squeeze(1)
    if len(correct) < 2 * size:
        return None
    order = correct[log_margin(logits[correct], y[correct]).argsort()]
    ranks = torch.linspace(0, len(order) - 1, size, device=y.device).round().long()
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[order[ranks]] = True
    return mask


def extended_log_eps(grid):
    """log eps per threshold index 0..K: the grid, then one log step beyond it (index K,
    robust at every eps); eps are floored at 1e-12."""
    logs = [math.log(max(e, 1e-12)) for e in grid]
    step = logs[-1] - logs[-2] if len(logs) > 1 else math.log(2.0)
    return torch.tensor(logs + [logs[-1] + step], dtype=torch.float64)


def guide_prior(log_m, pilot, threshold, log_eps):
    """(N, K + 1) prior weights over each sample's threshold, from the pilot's thresholds;
    None when the pilot cannot fit a line (fewer than two distinct inner thresholds)."""
    k = len(log_eps) - 1
    t = threshold[pilot].cpu()
    m = log_m[pilot].cpu()
    inner = (t > 0) & (t < k)
    if int(inner.sum()) < 2 or float(m[inner].var()) == 0.0:
        return None
    design = torch.stack([torch.ones_like(m[inner]), m[inner]], 1)
    coef = torch.linalg.lstsq(design, log_eps[t[inner]].unsqueeze(1)).solution.squeeze(1)
    predicted = coef[0] + coef[1] * log_m.cpu()
    residuals = log_eps[t] - predicted[pilot.cpu()]
    z = (log_eps[None, :, None] - predicted[:, None, None] - residuals[None, None, :]) / BANDWIDTH
    return (torch.exp(-0.5 * z * z).mean(2) + FLOOR).to(threshold.device)


def prior_median(prior, lo, hi):
    """Per sample the probe index inside ``(lo, hi)`` at the median of its prior restricted
    to thresholds ``lo + 1 .. hi``."""
    k = prior.shape[1] - 1
    index = torch.arange(k + 1, device=prior.device)
    inside = (index > lo.unsqueeze(1)) & (index <= hi.unsqueeze(1))
    mass = torch.where(inside, prior, 0.0).cumsum(1)
    reached = mass >= 0.5 * mass[:, -1:]
    median = reached.to(torch.int8).argmax(1)
    return torch.minimum(torch.maximum(median, lo + 1), hi - 1)


def allowances(grid, norm):
    """Per grid eps, the largest distance the core accepts inside that ball (float32, as
    :meth:`advx.ThreatModel.contains` compares float32 distances)."""
    slack = [0.0 if norm == "l0" else e * RTOL + ATOL for e in grid]
    return torch.tensor([e + s for e, s in zip(grid, slack)], dtype=torch.float32)


def certified(allow, distance):
    """Per sample, the first grid index whose ball holds ``distance`` (K when none does)."""
    return torch.searchsorted(allow.to(distance.device),
                              distance.to(torch.float32).contiguous(), side="left")
