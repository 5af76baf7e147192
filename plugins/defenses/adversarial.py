"""Adversarial training (Madry et al., 2018) and fast adversarial training (Wong et al., 2020).

Both replace each training batch by adversarials of it, made by the ``pgd`` attack of the run's
registry on the model being trained.  The attack runs on the model in eval mode (the core's
attack call sets it and restores train mode), so batch-norm statistics are not updated by its
passes; its random streams are seeded by the recipe's seed and the batch's position, so
training stays reproducible.  Fast adversarial training is the one-step case: FGSM from a
uniformly random start in the eps ball, with a step of 1.25 eps, projected back into the ball.
"""

import hashlib
import json

import advx
import attrs
import torch.nn.functional as F
from advx import MAX_SCALE, finite, whole
from attrs import validators as v

from ._recipe import RecipeOverrides

NORMS = ("linf", "l2")


def _positive(default, help_text, integer=False):
    check = whole(1) if integer else finite(0, MAX_SCALE, low_open=True)
    return attrs.field(default=default, validator=check, metadata={"help": help_text})


def _eps_in_range(instance, attribute, value):
    """linf: 0 < eps <= 1 (inputs lie in [0, 1], as an attack entry's eps); l2: finite > 0."""
    finite(0, 1 if instance.norm == "linf" else None, low_open=True)(instance, attribute, value)


@attrs.frozen(kw_only=True)
class _AdversaryTraining(RecipeOverrides):
    """Shared fields: the threat model, the clean-loss mix and the recipe fields a preset sets."""

    norm: str = attrs.field(default="linf", validator=v.in_(NORMS),
                            metadata={"help": "the threat model's norm: linf or l2"})
    eps: float = attrs.field(default=0.3, validator=_eps_in_range, metadata={
        "help": "radius of the training threat model (linf: at most 1)"})
    clean_weight: float = attrs.field(
        default=0.0, validator=finite(0, 1),
        metadata={"help": "weight of the clean loss mixed in (0: adversarial loss only)"})

    def attack_params(self):
        """The ``pgd`` parameters of the training adversary."""
        raise NotImplementedError

    def threat(self, bounds):
        """The training threat model for inputs in ``bounds``."""
        return advx.ThreatModel(norm=self.norm, eps=self.eps, bounds=bounds)

    def train(self, module, recipe, context):
        attack = context.create("attacks", "pgd", **self.attack_params())
        threat = self.threat(context.dataset.info.bounds)
        return context.fit(module, recipe, loss=adversarial_loss(attack, threat,
                                                                 self.clean_weight, recipe.seed))


def adversarial_loss(attack, threat, clean_weight, seed):
    """The batch loss of adversarial training: the cross-entropy of ``attack``'s adversarials
    of the batch, mixed with the clean loss by ``clean_weight``."""
    def loss(module, x, y, position):
        x_adv = attack(module, x, y, threat, seed=batch_seed(seed, *position)).x_adv
        value = F.cross_entropy(module(x_adv), y)
        if clean_weight:
            value = (1 - clean_weight) * value + clean_weight * F.cross_entropy(module(x), y)
        return value

    return loss


def batch_seed(seed, epoch, batch):
    """The adversary's seed for one batch of training: from the recipe seed and its position."""
    text = json.dumps([seed, "adversary", epoch, batch])
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


@attrs.frozen(kw_only=True)
class AdversarialTraining(_AdversaryTraining):
    """Madry et al.'s PGD adversarial training: each batch replaced by PGD adversarials.

    The inner maximisation is ``pgd`` with a random start (``steps`` of ``step_size``) under
    the ``norm`` ball of radius ``eps``; ``clean_weight`` mixes in the clean loss.  Presets:
    ``paper`` is Madry et al.'s MNIST recipe (eps 0.3, 40 steps of 0.01, Adam at 1e-4, batches
    of 50 for 100,000 iterations: 83 epochs of 60,000 digits; for a GPU and the full MNIST);
    ``cpu`` fits a 2-core machine on the embedded MNIST sample (eps 0.3, 7 steps of 0.1,
    5 epochs: about 9 minutes on one core).
    """

    name = "adversarial-training"
    presets = {
        "paper": {"eps": 0.3, "steps": 40, "step_size": 0.01, "epochs": 83, "lr": 1e-4,
                  "batch_size": 50, "optimizer": "adam", "lr_schedule": "constant"},
        "cpu": {"eps": 0.3, "steps": 7, "step_size": 0.1, "epochs": 5},
    }

    steps: int = _positive(40, "PGD steps of the inner maximisation", integer=True)
    step_size: float = _positive(0.01, "PGD step size")
    random_start: bool = attrs.field(default=True, validator=v.instance_of(bool),
                                     metadata={"help": "start PGD at a random point of the ball"})

    def attack_params(self):
        return {"steps": self.steps, "step_size": self.step_size,
                "random_start": self.random_start}


@attrs.frozen(kw_only=True)
class FastAdversarialTraining(_AdversaryTraining):
    """Wong et al.'s "fast is better than free": FGSM from a random start as the adversary.

    Each batch is replaced by one signed-gradient step of ``alpha`` (1.25 eps in the paper) from
    a point drawn uniformly in the eps ball, projected back into it: ``pgd`` with one step.
    Presets: ``paper`` (MNIST: eps 0.3, alpha 0.375, 10 epochs, batches of 100, learning rate
    peaking at 5e-3; the paper's cyclic schedule is approximated by a cosine decay), ``cpu``
    (eps 0.3, alpha 0.375, 5 epochs on the MNIST sample).
    """

    name = "fast-adversarial-training"
    presets = {
        "paper": {"eps": 0.3, "alpha": 0.375, "epochs": 10, "lr": 5e-3, "batch_size": 100,
                  "optimizer": "adam", "lr_schedule": "cosine"},
        "cpu": {"eps": 0.3, "alpha": 0.375, "epochs": 5},
    }

    alpha: float = _positive(0.375, "FGSM step size (Wong et al.: 1.25 eps)")

    def attack_params(self):
        return {"steps": 1, "step_size": self.alpha, "random_start": True}
