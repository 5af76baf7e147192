"""Latent descent: the attack Schott et al. (2019) designed against their ABS model.

A generative classifier explains an input by each class's generative model; the input is
adversarial once another class explains it better.  Latent descent walks the input toward
the reconstruction of the class that explains it best after the true one (the target, when
targeted), ``x <- x + step * (r_c(x) - x)``, reading both the scores and the reconstructions
from one pass of the model (:func:`advx.class_reconstructions`), until the prediction changes;
then it bisects the segment from the clean input to that adversarial for the closest point that
is still adversarial.  The binary variant (for binary ABS) walks toward binarized
reconstructions and finally resets every pixel whose binarized value did not change to its
clean value and moves every other just across the threshold: the binarized image, and so the
model's answer, stays the same at a much smaller distance.
"""

import advx
import attrs
import torch
from advx import finite

from ._iterative import attack_labels
from ._queries import count_field, no_queries

_fraction = finite(0, 1, low_open=True)


@attrs.frozen(kw_only=True)
class LatentDescent(advx.MinimizationAttack):
    """Toward the reconstruction of the most likely other class, then a bisection back.

    Needs a model that offers class-conditional reconstructions (``abs``, ``binary-abs``).
    One query per walking step of a sample still correctly classified, one per bisection
    step, and for ``binary`` one to check the snapped example.  Deterministic.  One host sync
    per walking step (a pass of ABS costs far more).
    """

    name = "latent-descent"
    norms = frozenset({"l0", "l1", "l2", "linf"})
    access = "score"
    supports_targeted = True
    requires = frozenset({"class-reconstructions"})

    steps: int = count_field(50, "walking steps toward the other class's reconstruction")
    step: float = attrs.field(default=0.05, validator=_fraction, metadata={
        "help": "fraction of the way to the reconstruction taken per walking step"})
    bisection: int = count_field(10, "bisection steps back toward the clean input", minimum=0)
    binary: bool = attrs.field(default=False, validator=advx.boolean, metadata={
        "help": "the binary variant (binary ABS): binarized reconstructions, pixels snapped "
                "just across the threshold"})
    threshold: float = attrs.field(default=0.5, validator=_fraction, metadata={
        "help": "the binarization threshold of the binary variant (value > threshold is 1)"})

    def run(self, model, x, y, threat, *, targets, rng):
        labels = attack_labels(y, targets, threat)
        queries = no_queries(x)
        adversarial, found = self.walk(model, x, labels, threat, queries)
        index = found.nonzero().squeeze(1)
        if not len(index):
            return adversarial, queries
        with advx.for_samples(index):  # the samples found: bisected (and snapped) alone
            closer = self.bisect(model, x[index], adversarial[index], labels[index], threat,
                                 queries, index)
            if self.binary:
                closer = self.snap(model, x[index], closer, labels[index], threat, queries,
                                   index)
        return adversarial.index_copy(0, index, closer), queries

    def walk(self, model, x, labels, threat, queries):
        """``(adversarial or x, found)``: each sample walked until misclassified or out of
        steps."""
        current, adversarial = x.clone(), x.clone()
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        active = torch.arange(len(x), device=x.device)
        for step in range(self.steps + 1):
            with advx.for_samples(active):
                logits, reconstructions = advx.class_reconstructions(model, current[active])
            queries.index_add_(0, active, torch.ones_like(active))
            fooled = _fooled(logits, labels[active], threat.targeted)
            adversarial[active[fooled]] = current[active[fooled]]
            found[active[fooled]] = True
            keep = ~fooled
            active, logits, reconstructions = active[keep], logits[keep], reconstructions[keep]
            if step == self.steps or not len(active):
                break
            goal = _goal(logits, reconstructions, labels[active], threat.targeted)
            if self.binary:
                goal = (goal > self.threshold).to(goal.dtype)
            moved = current[active] + self.step * (goal - current[active])
            current[active] = moved.clamp(*threat.bounds)
        return adversarial, found

    def bisect(self, model, x, adversarial, labels, threat, queries, index):
        """The point of each segment ``x -> adversarial`` closest to ``x`` that a bisection
        of ``bisection`` steps finds still adversarial."""
        low = torch.zeros(len(x), 1, *[1] * (x.dim() - 2), dtype=x.dtype, device=x.device)
        high = torch.ones_like(low)
        for _ in range(self.bisection):
            middle = (low + high) / 2
            fooled = self.fooled(model, x + middle * (adversarial - x), labels, threat,
                                 queries, index).view_as(low)
            high, low = torch.where(fooled, middle, high), torch.where(fooled, low, middle)
        return x + high * (adversarial - x)

    def snap(self, model, x, adversarial, labels, threat, queries, index):
        """Binary variant: pixels whose binarized value is unchanged back to ``x``, the others
        just across the threshold; kept where the model still answers as before (always, for
        a model that binarizes at ``threshold``)."""
        threshold = torch.tensor(self.threshold, dtype=x.dtype, device=x.device)
        above = torch.nextafter(threshold, torch.ones_like(threshold))
        flipped = (adversarial > threshold) != (x > threshold)
        snapped = torch.where(flipped, torch.where(adversarial > threshold, above, threshold), x)
        snapped = snapped.clamp(*threat.bounds)
        kept = self.fooled(model, snapped, labels, threat, queries, index)
        return torch.where(kept.view(-1, *[1] * (x.dim() - 1)), snapped, adversarial)

    def fooled(self, model, x, labels, threat, queries, index):
        queries.index_add_(0, index, torch.ones_like(index))
        with torch.no_grad():
            return _fooled(model(x), labels, threat.targeted)


def _fooled(logits, labels, targeted):
    pred = logits.argmax(1)
    return pred == labels if targeted else pred != labels


def _goal(logits, reconstructions, labels, targeted):
    """Per sample the reconstruction of the target, or of the best-scoring other class."""
    if targeted:
        chosen = labels
    else:
        chosen = logits.scatter(1, labels.unsqueeze(1), -torch.inf).argmax(1)
    return reconstructions[torch.arange(len(labels), device=labels.device), chosen]
