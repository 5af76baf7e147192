"""Specs as plain data in the shape of the TOML file (for spec.toml, provenance and reports)."""


def spec_to_dict(spec):
    """Plain data for a :class:`RunSpec`, in the shape of the TOML file."""
    data = {"title": spec.title} if spec.title else {}
    data["dataset"] = {"name": spec.dataset.name, **spec.dataset.params}
    data["models"] = [model_spec_dict(m) for m in spec.models]
    data["attacks"] = [attack_spec_dict(a) for a in spec.attacks]
    data["protocol"] = {"name": spec.protocol.name, **spec.protocol.params}
    if spec.pictures is not None:
        data["pictures"] = spec.pictures.to_dict()
    return data


def model_spec_dict(model, with_id=True):
    """A model entry as the TOML table that describes it."""
    entry = {"id": model.id} if with_id else {}
    entry.update({"name": model.plugin.name, **model.plugin.params})
    if model.train:
        entry["train"] = dict(model.train)
    if model.checkpoint:
        entry["checkpoint"] = model.checkpoint
    if model.defenses:
        entry["defenses"] = [{"name": d.name, **d.params} for d in model.defenses]
    if not model.adaptive:
        entry["adaptive"] = False
    return entry


def attack_spec_dict(attack):
    """An attack entry as the TOML table that describes it."""
    entry = {"id": attack.id, "name": attack.plugin.name, "norm": attack.norm,
             **attack.plugin.params}
    if attack.eps != (None,):
        entry["eps"] = list(attack.eps)
    entry["targeted"] = attack.targeted
    if attack.targeted:
        entry["target"] = attack.target
    return entry
