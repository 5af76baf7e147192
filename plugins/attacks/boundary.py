"""The Boundary Attack: a random walk along the decision boundary (Brendel et al., 2018)."""

import math

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, to_float, whole

from ._iterative import attack_labels
from ._queries import (
    adversarial,
    count_field,
    l2_norms,
    no_queries,
    uniform_noise,
    where_sample,
)

CHECK_EVERY = 10  # steps per round; the last step of a round also tries the spherical candidate
SPHERICAL_WINDOW = 100  # outcomes of spherical candidates kept per sample (as in Foolbox 3)
SOURCE_WINDOW = 30  # outcomes of full candidates kept per sample
CONVERGED = 1e-7  # a sample whose source step falls below this stops walking


def _covers_the_start(instance, attribute, value):
    if value < instance.init_search_steps + 2:
        raise ValueError(f"queries ({value}) must cover the start search: one clean check, one "
                         f"noise draw and init_search_steps ({instance.init_search_steps})")


def _step_field(default, help_text, above=0.0, below=MAX_SCALE):
    return attrs.field(default=default, converter=to_float,
                       validator=finite(above, below, low_open=True, high_open=True),
                       metadata={"help": help_text})


@attrs.frozen(kw_only=True)
class Boundary(advx.MinimizationAttack):
    """Decision-based random walk that shrinks an adversarial toward x (Brendel et al., 2018).

    Start: a sample the model already gets wrong stays x (one query).  Otherwise uniform noise
    over the bounds is drawn until one image is adversarial (misclassified, or classified as the
    target; at most ``init_draws`` draws), then blended toward x by a binary search of
    ``init_search_steps`` queries.  A sample with no adversarial start is returned as x: this is
    common for targeted attacks, whose start must be noise the model assigns to the target.
    Walk: each step draws Gaussian noise orthogonal to x - x_adv, of length ``spherical_step``
    times the distance, projects it onto the sphere around x, clips it, then moves
    ``source_step`` of the distance toward x and clips again; the candidate replaces x_adv when
    it is adversarial and closer (one query).  Every tenth step also tries the spherical
    candidate alone (one more query).  As in Foolbox 3, the step sizes adapt per sample from
    windows of recent outcomes: spherical success above 50% (below 20%) multiplies (divides) both
    steps by ``step_adaptation``; full-step success above 25% (below 10%) scales the source step.
    Unlike Foolbox 3, every sample draws its own noise, and full-step outcomes are recorded
    at every step (they cost no query), not every tenth, so the source step adapts sooner; and
    a spherical candidate that is adversarial and closer (clipping to the bounds can shorten
    it) is kept, so the closest adversarial queried is returned.  A sample stops when its
    ``queries`` budget is spent (never exceeded: within a round of steps, its rows then ask
    for its current adversarial again), its source step falls below 1e-7 or it lies within
    eps (if given).  One host sync per noise draw and per round of ten steps.
    """

    name = "boundary"
    norms = frozenset({"l2"})
    access = "decision"
    supports_targeted = True
    revision = 2  # a closer adversarial spherical candidate is kept

    queries: int = attrs.field(
        default=5000, validator=[whole(1), _covers_the_start],
        metadata={"help": "model evaluations per sample, start search included"})
    spherical_step: float = _step_field(0.01, "initial orthogonal step, relative to the distance")
    source_step: float = _step_field(0.01, "initial step toward x, relative to the distance",
                                     below=1.0)
    step_adaptation: float = _step_field(1.5, "factor by which the step sizes grow or shrink",
                                         above=1.0)
    init_draws: int = count_field(100, "most uniform noise images drawn for a start")
    init_search_steps: int = count_field(
        10, "binary-search steps blending the noise start toward x", minimum=0)

    def run(self, model, x, y, threat, *, targets, rng):
        labels = attack_labels(y, targets, threat)
        queries = no_queries(x)
        draws = min(self.init_draws, self.queries - 1 - self.init_search_steps)
        start, walking = blended_start(model, x, labels, threat, queries, rng,
                                       draws=draws, search_steps=self.init_search_steps)
        if walking.numel() == 0:
            return start, queries
        walk = _Walk(self, model, x[walking], labels[walking], threat, rng.select(walking))
        with advx.for_samples(walking):  # the walk calls the model on these samples only
            adv, spent = walk.run(start[walking], queries[walking])
        start[walking] = adv
        queries[walking] = spent
        return start, queries


def blended_start(model, x, labels, threat, queries, rng, *, draws, search_steps):
    """Adversarial starts and the indices of the samples that need a walk from them.

    Clean adversarials start (and stay) at x; samples without an adversarial noise draw are
    returned as x and not walked.  ``queries`` is increased in place per sample.
    """
    done = adversarial(model, x, labels, threat.targeted)
    queries += 1
    noise, found = x.clone(), done.clone()
    for _ in range(draws):
        index = (~found).nonzero().squeeze(1)  # one host sync per draw
        if index.numel() == 0:
            break
        draw = uniform_noise(x[index], threat.bounds, rng.select(index))
        with advx.for_samples(index):
            hit = adversarial(model, draw, labels[index], threat.targeted)
        queries[index] += 1
        noise[index] = where_sample(hit, draw, noise[index])
        found[index] |= hit
    walking = (found & ~done).nonzero().squeeze(1)
    x_w, noise_w = x[walking], noise[walking]
    low = torch.zeros(len(walking), device=x.device, dtype=x.dtype)
    high = torch.ones_like(low)
    for _ in range(search_steps):
        middle = (low + high) / 2
        with advx.for_samples(walking):
            hit = adversarial(model, _blend(x_w, noise_w, middle), labels[walking],
                              threat.targeted)
        high, low = torch.where(hit, middle, high), torch.where(hit, low, middle)
    queries[walking] += search_steps
    start = x.clone()
    start[walking] = _blend(x_w, noise_w, high)
    return start, walking


def _blend(x, noise, weight):
    """``(1 - weight) x + weight noise`` per sample; weight 1 gives the noise exactly."""
    return torch.lerp(x, noise, weight.view(-1, *[1] * (x.dim() - 1)))


class _Walk:
    """The walk of the samples that have an adversarial start; state is per sample."""

    def __init__(self, attack, model, x, labels, threat, rng):
        self.attack, self.model, self.x, self.labels = attack, model, x, labels
        self.threat, self.rng = threat, rng
        like = {"device": x.device, "dtype": x.dtype}
        self.spherical = torch.full((len(x),), attack.spherical_step, **like)
        self.source = torch.full((len(x),), attack.source_step, **like)
        self.outcomes = {"spherical": torch.full((len(x), SPHERICAL_WINDOW), math.nan, **like),
                         "source": torch.full((len(x), SOURCE_WINDOW), math.nan, **like)}
        self.recorded = {"spherical": 0, "source": 0}

    def run(self, adv, spent):
        """Walk until every sample's budget is spent or it converged; ``(x_adv, queries)``."""
        budget = self.attack.queries
        while True:
            # One host sync per round of CHECK_EVERY steps: walk only the live samples.
            live = (self.source >= CONVERGED) & (spent < budget)
            if self.threat.eps is not None:  # within eps the sample is decided: stop early
                live &= l2_norms(adv - self.x) > self.threat.eps
            rows = live.nonzero().squeeze(1)
            if rows.numel() == 0:
                return adv, spent
            adv[rows], spent[rows] = self._round(rows, adv[rows], spent[rows])

    def _round(self, rows, adv, spent):
        x, labels, budget = self.x[rows], self.labels[rows], self.attack.queries
        steps = {"spherical": self.spherical[rows], "source": self.source[rows]}
        windows = {key: window[rows] for key, window in self.outcomes.items()}
        for step in range(CHECK_EVERY):
            check = step == CHECK_EVERY - 1
            candidate, on_sphere = _proposals(x, adv, steps["spherical"], steps["source"],
                                              self.threat.bounds, self.rng.select(rows))
            can_step = spent < budget
            can_check = spent + can_step < budget
            # A sample whose budget is spent asks for its current adversarial again: its
            # rows (the batch's step evaluates them anyway) reveal nothing it ignores.
            tried = where_sample(can_step, candidate, adv)
            if check:
                tried = torch.cat([tried, where_sample(can_check, on_sphere, adv)])
            with advx.for_samples(rows.repeat(1 + check)):  # one or two rows per sample
                hit = adversarial(self.model, tried, labels.repeat(1 + check),
                                  self.threat.targeted)
            closer = l2_norms(candidate - x) < l2_norms(adv - x)
            adv = where_sample(hit[:len(x)] & closer & can_step, candidate, adv)
            spent = spent + can_step
            self._record(windows, "source", hit[:len(x)], can_step)
            if check:  # clipping can bring the spherical candidate closer: keep it then
                closer = l2_norms(on_sphere - x) < l2_norms(adv - x)
                adv = where_sample(hit[len(x):] & closer & can_check, on_sphere, adv)
                spent = spent + can_check
                self._record(windows, "spherical", hit[len(x):], can_check)
                self._adapt(windows, steps)
        self.spherical[rows], self.source[rows] = steps["spherical"], steps["source"]
        for key, window in windows.items():
            self.outcomes[key][rows] = window
        return adv, spent

    def _record(self, windows, key, outcome, asked):
        """Append one outcome per sample (where it was asked) to a window of recent ones."""
        window = windows[key]
        column = self.recorded[key] % window.shape[1]
        window[:, column] = torch.where(asked, outcome.to(window.dtype), window[:, column])
        self.recorded[key] += 1

    def _adapt(self, windows, steps):
        """Scale the step sizes of samples whose full windows show a success rate out of range.

        Spherical success above 50% (below 20%) grows (shrinks) both steps, full-step success
        above 25% (below 10%) the source step; a window that caused a change is emptied.
        """
        factor = self.attack.step_adaptation
        for key, high, low, scaled in (("spherical", 0.5, 0.2, ("spherical", "source")),
                                       ("source", 0.25, 0.1, ("source",))):
            rate, full = _rate(windows[key])
            grow, shrink = full & (rate > high), full & (rate < low)
            scale = torch.where(grow, factor, 1.0) / torch.where(shrink, factor, 1.0)
            for name in scaled:
                steps[name] = steps[name] * scale.to(steps[name].dtype)
            windows[key] = _clear(windows[key], grow | shrink)


def _rate(window):
    """Per-sample success rate over a window of outcomes, and whether the window is full."""
    return window.nanmean(dim=1), ~window.isnan().any(dim=1)


def _clear(window, rows):
    """The window with the outcomes of the flagged samples forgotten."""
    return torch.where(rows[:, None], math.nan, window)


def _proposals(x, adv, spherical, source, bounds, rng):
    """The full candidate and the spherical candidate of one step, per sample.

    The spherical candidate lies (before clipping) on the sphere around x through x_adv, at an
    angle set by ``spherical``; the full candidate then moves ``source`` times the distance
    toward x, corrected for the distance clipping changed.
    """
    shape, flat_x = x.shape, x.flatten(1)
    toward_x = flat_x - adv.flatten(1)
    distance = l2_norms(toward_x).clamp_min(1e-12)
    unit = toward_x / distance[:, None]
    eta = rng.randn(flat_x.shape[1:], dtype=x.dtype)
    eta = eta - (eta * unit).sum(1, keepdim=True) * unit
    eta = eta * (spherical * distance / l2_norms(eta).clamp_min(1e-12))[:, None]
    on_sphere = flat_x + (eta - toward_x) / (spherical.square() + 1).sqrt()[:, None]
    on_sphere = on_sphere.clamp(*bounds)
    step_back = flat_x - on_sphere
    back_distance = l2_norms(step_back).clamp_min(1e-12)
    length = (source * distance + back_distance - distance).clamp_min(0) / back_distance
    candidate = (on_sphere + length[:, None] * step_back).clamp(*bounds)
    return candidate.view(shape), on_sphere.view(shape)
