"""The Pointwise Attack: undo a noise adversarial one pixel at a time (Schott et al., 2019)."""

import bisect

import advx
import attrs
import torch

from ._iterative import attack_labels
from ._queries import adversarial, budget_field, count_field, no_queries, pixel_view
from .salt_pepper import salt_and_pepper_search


def _covers_a_start(instance, value):
    if value < 2:
        raise ValueError(f"queries ({value}) must cover a clean check and one noise draw")


@attrs.frozen(kw_only=True)
class Pointwise(advx.MinimizationAttack):
    """Resets the pixels of a salt-and-pepper adversarial to x while it stays adversarial.

    Schott et al. (2019), as in Foolbox.  Start: a sample the model already gets wrong stays x;
    otherwise ``salt-and-pepper`` with ``init_steps`` draws gives the sparsest adversarial
    start it finds; a sample with none is
    returned as x (common when targeted: the noise must be classified as the target).  Then in
    passes, each sample visits its changed pixels in a fresh random order and resets each (all
    channels) to x if the image stays adversarial (one query per pixel); passes repeat until one
    resets nothing.  Optionally a last pass moves each remaining pixel toward x by a binary
    search of ``search_steps`` queries, which lowers the L2 distance but not the L0 one.  A
    sample within eps (if given) stops resetting.  All
    samples try their j-th pixel in the same forward pass.  The ``queries`` budget is never
    exceeded.  One host sync per noise block of ten steps and per pass.
    """

    name = "pointwise"
    norms = frozenset({"l0"})
    access = "decision"
    supports_targeted = True
    revision = 2  # its salt-and-pepper start changed

    queries: int | None = budget_field(
        None, "most model evaluations per sample (None: until no pixel can be reset)",
        _covers_a_start)
    init_steps: int = count_field(100, "salt-and-pepper draws for the start")
    search_steps: int = count_field(
        0, "binary-search steps per remaining pixel after the resets (0: none; Foolbox uses "
           "10); lowers L2 but not L0", minimum=0)

    def run(self, model, x, y, threat, *, targets, rng):
        labels = attack_labels(y, targets, threat)
        queries = no_queries(x)
        steps = self.init_steps if self.queries is None else min(self.init_steps,
                                                                  self.queries - 1)
        start, found = salt_and_pepper_search(model, x, labels, threat, queries, rng,
                                              steps=steps, budget=self.queries)
        index = (found & (start != x).flatten(1).any(1)).nonzero().squeeze(1)
        sweep = _Sweep(model, x[index], labels[index], threat, self.queries, rng.select(index))
        adv, spent = start[index], queries[index]
        improved = torch.ones(len(index), dtype=torch.bool, device=x.device)
        with advx.for_samples(index):  # the sweeps call the model on these samples only
            while True:
                adv, improved, spent, tried = sweep(adv, spent, improved, search_steps=0)
                if not tried:
                    break
            if self.search_steps:
                everyone = torch.ones_like(improved)
                adv, _, spent, _ = sweep(adv, spent, everyone, search_steps=self.search_steps)
        start[index], queries[index] = adv, spent
        return start, queries


class _Sweep:
    """One pass over the changed pixels of the samples that ask for it."""

    def __init__(self, model, x, labels, threat, budget, rng):
        self.model, self.x, self.labels, self.targeted = model, x, labels, threat.targeted
        self.eps = threat.eps
        self.budget, self.rng = budget, rng

    def __call__(self, adv, spent, active, *, search_steps):
        """``(x_adv, improved, queries, tried)``: ``tried`` is False when no sample had a pixel
        to try (the pass did nothing)."""
        cost = max(search_steps, 1)
        x, images = pixel_view(self.x), pixel_view(adv).clone()
        changed = (images != x).any(1).flatten(1)
        count = changed.sum(1)
        if self.eps is not None and not search_steps:  # within eps the sample is decided
            active = active & (count > self.eps)
        tries = torch.where(active, count, 0)
        if self.budget is not None:
            tries = torch.minimum(tries, (self.budget - spent) // cost)
        improved = torch.zeros_like(active)
        counts = tries.tolist()  # one host sync per pass
        rows = sorted((i for i, n in enumerate(counts) if n > 0), key=lambda i: -counts[i])
        if not rows:
            return adv, improved, spent, False
        descending = [-counts[i] for i in rows]
        rows = torch.tensor(rows, device=x.device)
        # Only the samples that try pixels draw an order: a sample's draws follow its own passes.
        keys = self.rng.select(rows).rand(changed.shape[1:])
        order = torch.where(changed[rows], keys, 2.0).argsort(dim=1)  # changed first, shuffled
        mine, theirs, labels = images[rows], x[rows], self.labels[rows]
        hits = torch.zeros(len(rows), dtype=torch.bool, device=x.device)
        for j in range(-descending[0]):
            k = bisect.bisect_left(descending, -j)  # samples with more than j pixels to try
            with advx.for_samples(rows[:k]):
                value, hit = self._pixel(theirs[:k], mine[:k], order[:k, j], labels[:k],
                                         search_steps)
            _write(mine[:k], order[:k, j], value)
            hits[:k] |= hit
        images[rows] = mine
        improved[rows] = hits
        return images.view_as(adv), improved, spent + tries * cost, True

    def _pixel(self, x, adv, pixel, labels, search_steps):
        """New values (k, C) of one pixel per sample and whether it moved toward x.

        Without ``search_steps`` the pixel is reset to x if the image stays adversarial;
        with them, a binary search finds the smallest adversarial blend toward x.
        """
        original, current = _read(x, pixel), _read(adv, pixel)
        if search_steps == 0:
            hit = self._asks(adv, pixel, original, labels)
            return torch.where(hit[:, None], original, current), hit
        low = torch.zeros(len(x), 1, device=x.device, dtype=x.dtype)
        high = torch.ones_like(low)
        for _ in range(search_steps):
            middle = (low + high) / 2
            hit = self._asks(adv, pixel, torch.lerp(original, current, middle), labels)[:, None]
            high, low = torch.where(hit, middle, high), torch.where(hit, low, middle)
        return torch.lerp(original, current, high), high.squeeze(1) < 1

    def _asks(self, images, pixel, value, labels):
        """Whether the images with ``pixel`` set to ``value`` are adversarial (one query)."""
        candidate = images.clone()
        _write(candidate, pixel, value)
        return adversarial(self.model, candidate.view(-1, *self.x.shape[1:]), labels,
                           self.targeted)


def _read(images, pixel):
    """The (k, C) values at one pixel per image of a (k, C, H, W) batch."""
    flat = images.flatten(2)
    return flat.gather(2, pixel.view(-1, 1, 1).expand(-1, flat.shape[1], 1)).squeeze(2)


def _write(images, pixel, value):
    """Set one pixel per image of a (k, C, H, W) batch to ``value`` (k, C), in place."""
    flat = images.flatten(2)
    flat.scatter_(2, pixel.view(-1, 1, 1).expand(-1, flat.shape[1], 1), value.unsqueeze(2))
