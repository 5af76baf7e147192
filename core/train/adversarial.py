"""Adversarial training: each batch is replaced by an attack's adversarials of it (Madry et al.,
2018), optionally mixed with the clean loss.

A recipe's ``adversary`` table names the attack and its threat model::

    train = { epochs = 10, adversary = { name = "pgd", norm = "linf", eps = 0.3, steps = 40,
                                         step_size = 0.01, clean_weight = 0.0 } }

The attack runs on the model in eval mode (the core's attack call sets it and restores train
mode), so batch-norm statistics are not updated by the attack's passes; its random stream is
seeded by the recipe's seed and the batch's position, so training stays reproducible.
"""

import torch.nn.functional as F

from ..kernel.errors import ParameterError, UsageError
from ..kernel.threat import ThreatModel
from ..store.identity import unit_seed

THREAT_KEYS = ("norm", "eps", "clean_weight")


def adversary_of(recipe, bounds=(0.0, 1.0)):
    """``(attack, threat, clean_weight)`` of a recipe's adversary; ParameterError if unusable."""
    from .. import get_registry  # the package imports this module lazily

    table = dict(recipe.adversary)
    name = table.pop("name")
    try:
        threat = ThreatModel(norm=table.pop("norm", "linf"), eps=table.pop("eps", None),
                             bounds=bounds)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"train recipe: adversary: {exc}") from None
    clean_weight = table.pop("clean_weight", 0.0)
    if isinstance(clean_weight, bool) or not isinstance(clean_weight, int | float) \
            or not 0 <= clean_weight <= 1:
        raise ParameterError(f"train recipe: adversary: clean_weight must be a number in [0, 1], "
                             f"got {clean_weight!r}")
    try:
        attack = get_registry().create("attacks", name, **table)
        if attack.kind != "fixed-eps" or threat.eps is None:
            raise UsageError(f"adversarial training needs a fixed-eps attack with an eps; "
                             f"{name!r} is a {attack.kind} attack" if attack.kind != "fixed-eps"
                             else "adversarial training needs an eps in adversary")
        attack.check_threat(threat)
    except UsageError as exc:
        raise ParameterError(f"train recipe: adversary: {exc}") from None
    return attack, threat, float(clean_weight)


def adversarial_loss(recipe, bounds):
    """The per-batch loss of adversarial training by ``recipe.adversary``."""
    attack, threat, clean_weight = adversary_of(recipe, bounds)

    def loss(module, x, y, position):
        seed = unit_seed(recipe.seed, "adversary", *position)
        x_adv = attack(module, x, y, threat, seed=seed).x_adv
        value = F.cross_entropy(module(x_adv), y)
        if clean_weight:
            value = (1 - clean_weight) * value + clean_weight * F.cross_entropy(module(x), y)
        return value

    return loss
