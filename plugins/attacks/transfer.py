"""Transfer: black-box attacks by adversarials crafted on another model (Papernot et al., 2017;
the black-box part of Madry et al., 2018)."""

import advx
import attrs
import torch


def _is_table_or_module(instance, attribute, value):
    if not isinstance(value, dict | torch.nn.Module):
        raise TypeError(f"{attribute.name} must be a model table (name, parameters, train or "
                        f"checkpoint) or, from Python, a torch module; got {value!r}")
    if isinstance(value, dict) and not isinstance(value.get("name"), str):
        raise ValueError(f"{attribute.name} needs name = \"<model plugin>\"")


def _is_attack(instance, attribute, value):
    if not isinstance(value, advx.Attack):
        raise ValueError(f"{attribute.name} must be an attack table with name = \"<attack>\" "
                         f"and its parameters; got {value!r}")


@attrs.frozen(kw_only=True)
class Transfer(advx.TransferAttack):
    """Adversarials of ``source_attack`` on the ``source`` model, evaluated on the target model.

    The target is never queried while the examples are made: this is the black-box transfer
    setting. In ``advx run`` the source set comes from the adversarial-set cache (computed once
    if absent, then shared by every run and target that asks for it) with the same samples,
    threat model and targets as the entry. Called directly from Python, ``source`` must be a
    module: the source attack then runs on it for the batch at hand.
    """

    name = "transfer"
    norms = frozenset(advx.NORMS)
    supports_targeted = True

    source: object = attrs.field(validator=_is_table_or_module, metadata={
        "help": "source model table: name, parameters, and train = {...} or checkpoint = "
                "\"...\" (e.g. { name = \"madry-cnn\", train = { seed = 2 } })",
        "identity": False})  # a set's identity holds the source set's key instead
    source_attack: advx.Attack = attrs.field(
        factory=lambda: {"name": "pgd"}, validator=_is_attack,
        metadata={"help": "attack run on the source model: name and parameters "
                          "(e.g. { name = \"pgd\", steps = 40, step_size = 0.01 })",
                  "plugin": "attacks"})

    def run(self, model, x, y, threat, *, targets, rng):
        if not isinstance(self.source, torch.nn.Module):
            raise advx.UsageError("a transfer attack whose source is a model table runs "
                                  "inside `advx run`; from Python, give source=<torch module>")
        result = self.source_attack(self.source.to(x.device), x, y, threat, targets=targets,
                                    seed=rng.spawn())
        return result.x_adv, torch.zeros(len(x), dtype=torch.int64, device=x.device)
