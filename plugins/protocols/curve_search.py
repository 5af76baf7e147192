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

1. Pilot (:func:`fit_guide`, once per set): ``PILOT`` correctly classified samples of the whole
   set, evenly spaced in margin order, are bisected.
2. A least-squares line ``log eps_threshold ~ a + b log margin`` is fitted on them
   (:class:`Guide`), and every other sample gets a prior over its threshold: a kernel density
   of the pilot's residuals (``BANDWIDTH`` in log eps) around its own prediction, plus
   ``FLOOR`` at every index.
3. Each of a guided sample's first ``GUIDED_PROBES`` probes goes to the median of its prior
   restricted to its interval; later ones bisect, so no sample takes more than
   ``GUIDED_PROBES + ceil(log2(K + 1))`` probes.

With fewer than ``2 * PILOT`` correctly classified samples, or no usable fit, every sample is
bisected.  Each probe of a sample is seeded from the sample's own seed, its probe count and
the grid index, and the guide comes from the whole set: a sample's probes do not depend on
which samples share its batch.
"""

import math

import advx
import attrs
import torch

RTOL, ATOL = 1e-5, 1e-6  # the tolerance of ThreatModel.contains (its defaults)
PILOT = 32  # samples of the set bisected to calibrate the guide
GUIDED_PROBES = 4  # probes per guided sample placed at its prior's median, before bisection
BANDWIDTH = 0.08  # of the residuals' kernel density, in log eps
FLOOR = 1e-3  # prior mass at every index beyond the kernels: no threshold is ruled out


def find_thresholds(attack, model, x, y, threats, *, seeds, targets=None, clean_logits=None,
                    guide=None, skip=None, rejected=None, walk=False, budget=None):
    """Search ``attack``'s threshold per sample over ``threats`` (one per grid eps, sorted).

    Returns per sample the smallest misclassified example found (the clean input where none;
    clean-misclassified samples, and those ``skip`` marks, are not probed): tensors x_adv,
    success, distance, pred, queries = the number of probes, and threshold.  ``seeds`` holds
    one int64 per sample; with a :class:`Guide` the samples are guided, else bisected.  A
    prediction equal to ``rejected`` (a detector's reject output) does not count as fooled.
    With ``walk`` every sample climbs the grid from its smallest eps until a probe fools it
    (:func:`walk_up`): no monotonicity assumed.  The core's propagation counts are summed over
    a sample's probes (forwards, backwards, out_of_budget; best_distance the smallest), and
    ``budget`` (propagations per sample) holds for the whole search: each probe may spend
    what the sample's earlier probes left.
    """
    if clean_logits is None:
        with torch.no_grad():
            clean_logits = model(x)
    search = _Search(attack, model, x, y, threats, targets, clean_logits.argmax(1), seeds,
                     rejected, budget)
    members = search.correct if skip is None else search.correct & ~skip
    if walk:
        search.rounds(members, walk_up)
    elif guide is None:
        search.rounds(members, bisection)
    else:
        prior = guide.prior(log_margin(clean_logits, y)).to(x.device)
        search.rounds(members, lambda lo, hi, probes: torch.where(
            probes < GUIDED_PROBES, prior_median(prior, lo, hi), bisection(lo, hi)))
    return search.found()


def fit_guide(attack, model, x, y, threats, *, seeds, targets, clean_logits, device,
              rejected=None, budget=None):
    """``(pilot indices, their search results, Guide or None)`` for the whole set (given as
    CPU tensors; the pilot runs on ``device``, where its results stay), or None when the set
    is too small for a pilot (then every sample is bisected)."""
    pilot = pilot_samples(clean_logits, y, PILOT)
    if pilot is None:
        return None
    found = find_thresholds(attack, model, x[pilot].to(device), y[pilot].to(device), threats,
                            seeds=seeds[pilot].to(device), rejected=rejected,
                            targets=None if targets is None else targets[pilot].to(device),
                            clean_logits=clean_logits[pilot].to(device), budget=budget)
    log_eps = extended_log_eps([t.eps for t in threats])
    guide = Guide.fit(log_margin(clean_logits[pilot], y[pilot]), found["threshold"], log_eps)
    return pilot, found, guide


class _Search:
    """The intervals, probe counts and smallest examples of one search."""

    def __init__(self, attack, model, x, y, threats, targets, clean_pred, seeds, rejected,
                 budget=None):
        self.attack, self.model, self.x, self.y = attack, model, x, y
        self.threats, self.targets, self.seeds = threats, targets, seeds.to(x.device)
        self.rejected = rejected
        self.allow = allowances([t.eps for t in threats], threats[0].norm).to(x.device)
        # one call per round, each sample at its own eps, where the attack takes that
        self.merged = (attack.per_sample_eps and threats[0].norm in advx.PER_SAMPLE_NORMS)
        self.eps = torch.tensor([t.eps for t in threats], dtype=x.dtype, device=x.device)
        self.correct = clean_pred == y
        self.best = {"x_adv": x.clone(), "pred": clean_pred.clone(),
                     "success": clean_pred == targets if targets is not None else ~self.correct,
                     "distance": torch.where(self.correct, torch.inf, 0.0).to(x.dtype)}
        self.lo = torch.full_like(y, -1)
        self.hi = torch.where(self.correct, len(threats), 0)
        self.probes = torch.zeros_like(y)
        self.budget, self.counted = budget, True
        self.counts = {"forwards": torch.zeros_like(y), "backwards": torch.zeros_like(y),
                       "best_distance": torch.full((len(y),), torch.inf, dtype=x.dtype,
                                                   device=x.device),
                       "out_of_budget": torch.zeros_like(y, dtype=torch.bool)}

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

    def probe(self, index, at, m=None):
        """One attack call on the samples ``index``, each at its grid index ``at``: all at
        index ``m``, or (``m`` None) each at its own eps.  Each sample's probe is seeded by
        its seed, its probe count and ``at``."""
        y = self.y[index]
        threat = self.threats[0].with_eps(self.eps[at]) if m is None else self.threats[m]
        seeds = advx.derive_seeds(self.seeds[index], self.probes[index], at)
        result = self.attack(self.model, self.x[index], y, threat, seed=seeds,
                             targets=None if self.targets is None else self.targets[index],
                             budget=self.left(index))
        self.count(index, result)
        fooled = result.pred != y
        if self.rejected is not None:
            fooled &= result.pred != self.rejected
        cap = torch.minimum(certified(self.allow, result.distance), at)
        self.hi[index] = torch.where(fooled, torch.minimum(self.hi[index], cap), self.hi[index])
        self.lo[index] = torch.where(fooled, self.lo[index], at)
        self.probes[index] += 1
        better = fooled & (result.distance < self.best["distance"][index])
        rows = index[better]
        for name in ("x_adv", "pred", "success"):
            self.best[name][rows] = getattr(result, name)[better]
        self.best["distance"][rows] = result.distance[better].to(self.best["distance"].dtype)

    def left(self, index):
        """The propagations the samples ``index`` have left (None: no budget)."""
        if self.budget is None or not self.counted:
            return self.budget
        spent = self.counts["forwards"][index] + self.counts["backwards"][index]
        return (self.budget - spent).clamp_min(0)

    def count(self, index, result):
        """Add a probe's propagation counts to its samples' (a result without counts, from
        an attack called outside the core, leaves the search's rows not counted)."""
        if result.forwards is None:
            self.counted = False
        if not self.counted:
            return
        counts = self.counts
        counts["forwards"][index] += result.forwards
        counts["backwards"][index] += result.backwards
        counts["out_of_budget"][index] |= result.out_of_budget
        counts["best_distance"][index] = torch.minimum(
            counts["best_distance"][index], result.best_distance.to(counts["best_distance"]))

    def found(self):
        best = dict(self.best)
        best["distance"] = torch.where(torch.isinf(best["distance"]), 0.0, best["distance"])
        counts = self.counts if self.counted else {  # the store's "not counted" values
            "forwards": torch.full_like(self.probes, -1),
            "backwards": torch.full_like(self.probes, -1),
            "best_distance": torch.full_like(self.counts["best_distance"], torch.nan),
            "out_of_budget": self.counts["out_of_budget"]}
        return {**best, **counts, "queries": self.probes, "threshold": self.hi}


def walk_up(lo, hi, probes=None):
    """The next index above the largest one known robust: the walk probes every grid eps in
    turn until one fools the sample.  Behind a detector, an attack at a larger eps is not
    stronger (its perturbations are more often detected), so a sample fooled at a small eps
    may be robust at a larger one, and bisection would miss it; the walk does not assume
    monotonicity.  Its threshold is the first grid eps whose ball holds a fooling example
    found by any probe so far: robust at ``e_j`` means no probe at any eps up to ``e_j``
    fooled it, the attacker's worst case over the eps of the ball (every smaller ball lies
    inside it).  It costs up to K probes per sample (K for every sample never fooled)."""
    return lo + 1


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
    """Indices of ``size`` correctly classified samples evenly spaced in margin order, or None
    when fewer than ``2 * size`` are correctly classified (then everything is bisected)."""
    correct = (logits.argmax(1) == y).nonzero().squeeze(1)
    if len(correct) < 2 * size:
        return None
    order = correct[log_margin(logits[correct], y[correct]).argsort(stable=True)]
    ranks = torch.linspace(0, len(order) - 1, size, device=y.device).round().long()
    return order[ranks].sort().values


def extended_log_eps(grid):
    """log eps per threshold index 0..K: the grid, then one log step beyond it (index K,
    robust at every eps); eps are floored at 1e-12."""
    logs = [math.log(max(e, 1e-12)) for e in grid]
    step = logs[-1] - logs[-2] if len(logs) > 1 else math.log(2.0)
    return torch.tensor(logs + [logs[-1] + step], dtype=torch.float64)


@attrs.frozen(eq=False)
class Guide:
    """The line ``log eps_threshold ~ a + b log margin`` fitted on the pilot, and the pilot's
    residuals around it."""

    coef: torch.Tensor  # (a, b), float64
    residuals: torch.Tensor  # the pilot's log eps_threshold minus the line's prediction
    log_eps: torch.Tensor  # per threshold index 0..K (see extended_log_eps)

    @classmethod
    def fit(cls, log_m, threshold, log_eps):
        """The guide of the pilot's log margins and thresholds; None when the pilot cannot
        fit a line (fewer than two distinct inner thresholds)."""
        k = len(log_eps) - 1
        t, m = threshold.cpu(), log_m.cpu()
        inner = (t > 0) & (t < k)
        if int(inner.sum()) < 2 or float(m[inner].var()) == 0.0:
            return None
        design = torch.stack([torch.ones_like(m[inner]), m[inner]], 1)
        coef = torch.linalg.lstsq(design, log_eps[t[inner]].unsqueeze(1)).solution.squeeze(1)
        return cls(coef, log_eps[t] - (coef[0] + coef[1] * m), log_eps)

    def prior(self, log_m):
        """(N, K + 1) prior weights over each sample's threshold."""
        predicted = self.coef[0] + self.coef[1] * log_m.cpu()
        z = (self.log_eps[None, :, None] - predicted[:, None, None]
             - self.residuals[None, None, :]) / BANDWIDTH
        return torch.exp(-0.5 * z * z).mean(2) + FLOOR


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
