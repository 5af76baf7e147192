"""Specs as plain data in the shape of the TOML file (for spec.toml, provenance and reports).

Plugins are written as their tables: the name and every parameter that differs from its
default (a preset's values are written out), so ``advx run runs/<...>/spec.toml`` builds the
same instances again.
"""

from ..kernel.params import plugin_params, plugin_table
from ..train.zoo import resolve_recipe


def spec_to_dict(spec):
    """Plain data for a :class:`advx.RunSpec`, in the shape of the TOML file."""
    data = {"title": spec.title} if spec.title else {}
    if spec.description:
        data["description"] = spec.description
    data["dataset"] = plugin_table(spec.dataset, defaults=True)
    data["models"] = [model_spec_dict(m) for m in spec.models]
    data["attacks"] = [attack_spec_dict(a) for a in spec.attacks]
    data["protocol"] = plugin_table(spec.protocol)
    if spec.executor is not None:
        data["executor"] = plugin_table(spec.executor)
    data.update(spec.written_tables)
    return data


def model_spec_dict(model, with_id=True):
    """A model entry as the TOML table that describes it."""
    entry = {"id": model.id} if with_id else {}
    entry.update(plugin_table(model.plugin))
    train = model.recipe.overrides(resolve_recipe(model.plugin))
    if train:
        entry["train"] = train
    if model.checkpoint:
        entry["checkpoint"] = model.checkpoint
    if model.defenses:
        entry["defenses"] = [plugin_table(d) for d in model.defenses]
    if not model.adaptive:
        entry["adaptive"] = False
    return entry


def attack_spec_dict(attack):
    """An attack entry as the TOML table that describes it."""
    entry = {"id": attack.id, **plugin_table(attack.attack), "norm": attack.norm}
    if attack.source is not None:
        entry["source"] = model_spec_dict(attack.source, with_id=False)
    if attack.eps != (None,):
        entry["eps"] = list(attack.eps)
    entry["targeted"] = attack.targeted
    if attack.targeted:
        entry["target"] = attack.target
    if attack.models is not None:
        entry["models"] = list(attack.models)
    if attack.budget is not None:
        entry["propagations"] = attack.budget
    return entry


def dataset_table(spec):
    """The dataset's table with every parameter (what a set's provenance records)."""
    return {"name": spec.dataset.name, **plugin_params(spec.dataset)}
