"""Salt-and-pepper noise of growing density until the model errs (Foolbox's baseline)."""

import math

import advx
import attrs
import torch

from ._queries import adversarial, count_field, no_queries, pixel_shape, pixel_view, where_sample

BLOCK = 10  # steps between host syncs that drop the samples done with the current repeat


@attrs.frozen(kw_only=True)
class SaltAndPepper(advx.MinimizationAttack):
    """Adds salt-and-pepper noise of growing density until misclassified (Foolbox 2's idea).

    A sample the model already gets wrong is returned as x (one query).  Otherwise each repeat
    walks the density p over ``steps`` equal increments up to a ceiling (1 at first): every step
    sets each pixel (all its channels) to the upper bound with probability p / 2 and to the lower
    bound with probability p / 2.  The repeat stops for a sample at its first adversarial, which
    lowers its ceiling to 1.2 p for the next repeat.  The adversarial with the fewest changed
    pixels over all repeats is kept; a sample with none is returned as x.  A sample within eps
    (if given) stops.  Per sample at most
    1 + ``steps * repeats`` queries; one host sync per ten steps.
    """

    name = "salt-and-pepper"
    norms = frozenset({"l0"})
    access = "decision"
    supports_targeted = False

    steps: int = count_field(1000, "noise densities tried per repeat, evenly up to the ceiling")
    repeats: int = count_field(10, "searches; each after a hit searches below 1.2 times it")

    def run(self, model, x, y, threat, *, targets, generator):
        queries = no_queries(x)
        best, _ = salt_and_pepper_search(model, x, y, threat, queries, generator,
                                         steps=self.steps, repeats=self.repeats)
        return best, queries


def salt_and_pepper_search(model, x, labels, threat, queries, generator, *, steps, repeats,
                           budget=None):
    """``(x_adv, found)``: the sparsest salt-and-pepper adversarial per sample, else x.

    ``queries`` is increased in place and, with a ``budget``, never beyond it.  Targeted, an
    adversarial is noise the model classifies as the target.
    """
    found = adversarial(model, x, labels, threat.targeted)
    queries += 1
    ones = torch.ones(len(x), device=x.device, dtype=x.dtype)
    state = {"best": x.clone(), "l0": torch.where(found, 0.0, math.inf * ones), "ceiling": ones}
    for _ in range(repeats):
        stopped = state["l0"] <= (threat.eps or 0)  # clean or within eps: decided
        for first in range(0, steps, BLOCK):
            budget_left = queries < budget if budget is not None else True
            index = (~stopped & budget_left).nonzero().squeeze(1)  # one host sync per block
            if index.numel() == 0:
                break
            done = _block(model, x[index], labels[index], threat, generator, state, index,
                          queries, range(first, min(first + BLOCK, steps)), steps, budget)
            stopped[index] = done
    return state["best"], state["l0"] < math.inf


def _block(model, x, labels, threat, generator, state, index, queries, steps, total, budget):
    """Up to ten steps for the samples ``index``; returns which of them stopped this repeat."""
    lower, upper = threat.bounds
    best, l0, ceiling = state["best"][index], state["l0"][index], state["ceiling"][index]
    spent = queries[index]
    stopped = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for step in steps:
        density = ceiling * (step + 1) / total
        u = torch.rand(pixel_shape(x), generator=generator, device=x.device, dtype=x.dtype)
        half = density.view(-1, 1, 1, 1) / 2
        images = pixel_view(x)
        noisy = torch.where(u >= 1 - half, upper, torch.where(u < half, lower, images))
        noisy = noisy.view_as(x)
        asks = ~stopped & (spent < budget if budget is not None else True)
        hit = adversarial(model, noisy, labels, threat.targeted) & asks
        spent = spent + asks
        changed = threat.distance(x, noisy)  # changed pixels: the norm is l0
        better = hit & (changed < l0)
        best, l0 = where_sample(better, noisy, best), torch.where(better, changed, l0)
        ceiling = torch.where(hit, (1.2 * density).clamp_max(1.0), ceiling)
        stopped = stopped | hit | ~asks
    state["best"][index], state["l0"][index], state["ceiling"][index] = best, l0, ceiling
    queries[index] = spent
    return stopped
