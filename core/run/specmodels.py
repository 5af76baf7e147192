"""The ``[[models]]`` tables of a run spec: plugin, recipe or checkpoint, and defenses."""

from pathlib import Path

import attrs

from ..kernel.errors import UsageError
from ..train.adversarial import adversary_of
from ..train.loop import TrainRecipe
from .specparts import ModelSpec, array_of_tables, plugin_entry, unique_id
from .stack import instances as defense_instances
from .stack import parse_defenses

MODEL_RESERVED = ("id", "train", "checkpoint", "defenses", "adaptive", "show_non_adaptive")


def parse_models(registry, value, where, base_dir):
    models, used = [], set()
    for i, table in enumerate(array_of_tables(value, where.at("models"), allow_empty=False)):
        at = where.at(f"models[{i}]")
        model = parse_model(registry, table, unique_id(table, used, at), at, base_dir)
        models.append(model)
        if _flag(registry, table, "show_non_adaptive", model, at):
            naive = attrs.evolve(model, id=f"{model.id} (non-adaptive)", adaptive=False)
            unique_id({"id": naive.id}, used, at)
            models.append(naive)
    return tuple(models)


def _flag(registry, table, key, model, at):
    """The model table's boolean ``key`` (adaptive: default true; show_non_adaptive: false)."""
    default = key == "adaptive"
    flag = table.get(key, default)
    if not isinstance(flag, bool):
        raise at.error(f"{key} must be true or false, got {flag!r}")
    if flag != default and not defense_instances(registry, model)[1]:
        raise at.error(f"{key} = {str(flag).lower()} needs a preprocessor among the model's "
                       "defenses")
    return flag


def parse_model(registry, table, ident, at, base_dir):
    """The :class:`ModelSpec` of one model table (plugin, parameters, train or checkpoint)."""
    plugin, _ = plugin_entry(registry, "models", table, at, MODEL_RESERVED)
    train = table.get("train", {})
    if not isinstance(train, dict):
        raise at.error("train must be a table of recipe fields")
    try:
        recipe = TrainRecipe.from_dict(train)
        if recipe.adversary is not None:
            adversary_of(recipe)
    except UsageError as exc:
        raise at.at("train").error(str(exc)) from None
    checkpoint = table.get("checkpoint")
    if checkpoint is not None:
        path = Path(checkpoint)
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        if not path.is_file():
            raise at.error(f"checkpoint {checkpoint!r} is not a file")
        checkpoint = str(path)
    defenses = parse_defenses(registry, table.get("defenses"), at, checkpoint)
    model = ModelSpec(ident, plugin, dict(train), checkpoint, defenses)
    return attrs.evolve(model, adaptive=_flag(registry, table, "adaptive", model, at))
