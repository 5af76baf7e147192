"""Random-noise baselines at the threat model's radius: Gaussian (L2) and uniform (Linf)."""

import advx
import attrs
import torch

from ._gradients import ascent_direction
from ._iterative import attack_labels
from ._queries import adversarial, count_field, no_queries


@attrs.frozen(kw_only=True)
class _NoiseAttack(advx.FixedEpsilonAttack):
    """Draws ``repeats`` noise images per sample and keeps the first that fools the model.

    A draw fools the model when it is misclassified or, targeted, classified as the target
    (random noise rarely is: the targeted mode is a baseline, not an attack).  A sample no draw
    fools gets its last draw.  Every draw is clipped to the bounds and checked (one query);
    later draws go only to the samples not fooled yet, with one host sync per draw.
    """

    access = "decision"
    supports_targeted = True

    repeats: int = count_field(1, "noise draws per sample; the first that fools the model is kept")

    def run(self, model, x, y, threat, *, targets, rng):
        labels = attack_labels(y, targets, threat)
        queries = no_queries(x)
        x_adv = x.clone()
        pending = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.repeats):
            index = pending.nonzero().squeeze(1)  # one host sync per draw
            if index.numel() == 0:
                break
            noise = self.delta(x[index], threat.eps, rng.select(index))
            draw = (x[index] + noise).clamp(*threat.bounds)
            with advx.for_samples(index):
                hit = adversarial(model, draw, labels[index], threat.targeted)
            queries[index] += 1
            x_adv[index] = draw
            pending[index] = ~hit
        return x_adv, queries

    def delta(self, x, eps, rng):
        """One noise perturbation per sample inside the ball of radius ``eps``."""
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class GaussianNoise(_NoiseAttack):
    """Gaussian noise scaled to L2 norm eps, clipped to the bounds (a decision baseline).

    The direction is uniform on the sphere (a normalised Gaussian); clipping only shortens it.
    Of ``repeats`` draws per sample the first that fools the model is kept (targeted: that is
    classified as the target, which random noise rarely is), else the last.  One query per
    draw; later draws only for samples not fooled yet (one host sync per draw).
    """
    name = "gaussian-noise"
    norms = frozenset({"l2"})

    def delta(self, x, eps, rng):
        gaussian = rng.randn(x.shape[1:], dtype=x.dtype)
        return ascent_direction("l2", gaussian) * eps


@attrs.frozen(kw_only=True)
class UniformNoise(_NoiseAttack):
    """Noise uniform in [-eps, eps] per coordinate, clipped to the bounds (a decision baseline).

    Of ``repeats`` draws per sample the first that fools the model is kept (targeted: that is
    classified as the target, which random noise rarely is), else the last.  One query per
    draw; later draws only for samples not fooled yet (one host sync per draw).
    """
    name = "uniform-noise"
    norms = frozenset({"linf"})

    def delta(self, x, eps, rng):
        noise = rng.rand(x.shape[1:], dtype=x.dtype)
        return (2 * noise - 1) * eps
