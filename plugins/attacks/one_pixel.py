"""The one-pixel attack: differential evolution over a few pixels (Su, Vargas & Sakurai, 2019)."""

import advx
import attrs
import torch

from ._gradients import fooled
from ._iterative import attack_labels
from ._queries import (
    budget_field,
    count_field,
    label_probability,
    logits_of,
    no_queries,
    pixel_view,
)

SCALE = 0.5  # the mutation factor F of DE/rand/1 in the paper


def _covers_one_generation(instance, value):
    if value < instance.population:
        raise ValueError(f"queries ({value}) must cover the initial population "
                         f"({instance.population})")


@attrs.frozen(kw_only=True)
class OnePixel(advx.FixedEpsilonAttack):
    """Differential evolution of n-pixel perturbations, n the L0 radius (Su et al., 2019).

    A candidate is n tuples (row, column, one value per channel).  The population starts with
    coordinates uniform over the image and values Gaussian around the middle of the bounds with
    half their width as deviation (the paper's N(128, 127) on 0..255), clipped to the bounds.
    Each generation makes one child per member by DE/rand/1 without crossover, as in the paper:
    ``a + 0.5 * (b - c)`` for three distinct random members, clipped.  A child replaces its parent
    when its fitness is at least as good.  Fitness is the probability of the true class
    (untargeted, minimised) or of the target (targeted, maximised); a candidate that fools the
    model beats any that does not.  A sample stops once one member fools the model (the paper
    stops at probability thresholds instead).  Per sample: ``population`` queries for the start
    and per generation, for up to ``iterations`` generations or until the ``queries`` budget is
    spent (a last partial generation evolves only the first members).  One host sync per
    generation selects the samples still running.  n = floor(eps); an L0 radius of 0 returns x.
    """

    name = "one-pixel"
    norms = frozenset({"l0"})
    access = "score"
    supports_targeted = True

    population: int = count_field(400, "candidates per sample (the paper uses 400)", minimum=4)
    iterations: int = count_field(100, "generations of differential evolution", minimum=0)
    queries: int | None = budget_field(
        None, "most model evaluations per sample, at least population "
              "(None: population * (iterations + 1))", _covers_one_generation)
    max_batch: int = count_field(4096, "most perturbed images per forward pass")

    def run(self, model, x, y, threat, *, targets, rng):
        queries = no_queries(x)
        pixels = int(threat.eps)
        if pixels == 0 or len(x) == 0:
            return x.clone(), queries
        images = pixel_view(x)
        labels = attack_labels(y, targets, threat)
        budget = self.queries or self.population * (self.iterations + 1)
        score = _Scorer(model, images, x.shape[1:], labels, threat.targeted, self.max_batch)
        everyone = torch.arange(len(x), device=x.device)
        members = _initial(images, pixels, self.population, threat.bounds, rng)
        fitness, hit = score(everyone, members)
        queries += self.population
        spent = self.population
        for _ in range(self.iterations):
            size = min(self.population, budget - spent)
            # One host sync per generation: evolve only the samples no member fools yet.
            active = (~hit.any(1)).nonzero().squeeze(1)
            if size <= 0 or active.numel() == 0:
                break
            parents = members[active]
            children = _mutate(parents, size, images.shape[2:], threat.bounds, rng.select(active))
            child_fitness, child_hit = score(active, children)
            better = child_fitness <= fitness[active, :size]
            parents[:, :size] = torch.where(better[..., None, None], children, parents[:, :size])
            members[active] = parents
            fitness[active, :size] = torch.where(better, child_fitness, fitness[active, :size])
            hit[active, :size] = torch.where(better, child_hit, hit[active, :size])
            queries[active] += size
            spent += size
        best = members[everyone, fitness.argmin(1)].unsqueeze(1)
        return _apply(images, best, everyone).view_as(x), queries


class _Scorer:
    """Evaluates candidates of chosen samples in chunks of at most ``max_batch`` images."""

    def __init__(self, model, images, shape, labels, targeted, max_batch):
        self.model, self.images, self.shape, self.labels = model, images, shape, labels
        self.targeted, self.max_batch = targeted, max_batch

    def __call__(self, index, candidates):
        """Fitness to minimise per candidate of the samples ``index`` (shape (A, S)), and
        whether each fools the model.  Fooling candidates rank below all others (-2)."""
        count, size = candidates.shape[:2]
        owner = index.repeat_interleave(size)
        flat = candidates.flatten(0, 1)
        fitness, hit = [], []
        for rows in torch.arange(len(flat), device=flat.device).split(self.max_batch):
            images = _apply(self.images, flat[rows].unsqueeze(1), owner[rows])
            with advx.for_samples(owner[rows]):  # one row per candidate, of its sample
                logits = logits_of(self.model, images.view(-1, *self.shape))
            labels = self.labels[owner[rows]]
            probability = label_probability(logits, labels, self.targeted)
            is_hit = fooled(logits, labels, self.targeted)
            fitness.append((-probability if self.targeted else probability) - 2 * is_hit)
            hit.append(is_hit)
        return torch.cat(fitness).view(count, size), torch.cat(hit).view(count, size)


def _initial(images, pixels, population, bounds, rng):
    """The first population: (N, population, pixels, 2 + C) tuples (row, column, values)."""
    _, channels, height, width = images.shape
    coords = rng.rand(population, pixels, 2, dtype=images.dtype)
    coords = coords * torch.tensor([height, width], device=images.device, dtype=images.dtype)
    lower, upper = bounds
    values = rng.randn(population, pixels, channels, dtype=images.dtype)
    values = ((lower + upper) / 2 + (upper - lower) / 2 * values).clamp(lower, upper)
    return torch.cat([coords, values], dim=3)


def _mutate(members, size, side, bounds, rng):
    """DE/rand/1 children ``a + F (b - c)`` for the first ``size`` members of each sample."""
    population = members.shape[1]
    first = rng.randint(0, population, size)
    second = (first + 1 + rng.randint(0, population - 1, size)) % population
    # A third index uniform over the others: draw among population - 2, skip the two taken.
    low, high = torch.minimum(first, second), torch.maximum(first, second)
    third = rng.randint(0, population - 2, size)
    third = third + (third >= low)
    third = third + (third >= high)
    def pick(index):
        return members.gather(1, index[..., None, None].expand(-1, -1, *members.shape[2:]))

    children = pick(first) + SCALE * (pick(second) - pick(third))
    height, width = side
    limits = [(0, height), (0, width), bounds]
    children[..., 0].clamp_(*limits[0])
    children[..., 1].clamp_(*limits[1])
    children[..., 2:].clamp_(*limits[2])
    return children


def _apply(images, candidates, owner):
    """Images of ``owner`` with each candidate's pixels set: (rows * S, C, H, W).

    ``candidates`` has shape (rows, S, pixels, 2 + C) and ``owner`` gives each row's image.
    Pixels are written one tuple at a time, so a position named twice takes its last value.
    """
    _, channels, height, width = images.shape
    size, pixels = candidates.shape[1:3]
    out = images[owner.repeat_interleave(size)].reshape(-1, channels, height * width)
    flat = candidates.flatten(0, 1)
    rows = flat[..., 0].floor().clamp(0, height - 1).long()
    cols = flat[..., 1].floor().clamp(0, width - 1).long()
    position = rows * width + cols
    for k in range(pixels):
        index = position[:, k].view(-1, 1, 1).expand(-1, channels, 1)
        out.scatter_(2, index, flat[:, k, 2:].unsqueeze(2))
    return out.view(-1, channels, height, width)
