"""The ``[[models]]`` tables of a run spec: plugin, recipe or checkpoint, and defenses.

``defenses`` lists them in the order an input meets them; at most one is a training defense,
which decides how the weights are trained (and cannot apply to a checkpoint).
``show_non_adaptive = true`` adds a second entry, ``<id> (non-adaptive)``, whose defenses pass
their exact gradient (for binarization: zero), so the report shows the naive number beside the
adaptive one.
"""

from pathlib import Path

import attrs

from ..kernel.defense import Detector, TrainingDefense, holdout_shortfall
from ..kernel.entries import NAIVE_SUFFIX, ModelSpec
from ..kernel.errors import UsageError
from ..train.zoo import resolve_recipe
from .spec_parts import array_of_tables, plugin_entry, unique_id

MODEL_RESERVED = ("id", "train", "checkpoint", "defenses", "adaptive", "show_non_adaptive")


def parse_models(registry, value, where, base_dir):
    models, used = [], set()
    for i, table in enumerate(array_of_tables(value, where.at("models"), allow_empty=False)):
        at = where.at(f"models[{i}]")
        model = parse_model(registry, table, unique_id(table, used, at), at, base_dir)
        models.append(model)
        if _flag(table, "show_non_adaptive", model, at):
            naive = attrs.evolve(model, id=f"{model.id}{NAIVE_SUFFIX}", adaptive=False)
            unique_id({"id": naive.id}, used, at)
            models.append(naive)
    return tuple(models)


def _flag(table, key, model, at):
    """The model table's boolean ``key`` (adaptive: default true; show_non_adaptive: false)."""
    default = key == "adaptive"
    flag = table.get(key, default)
    if not isinstance(flag, bool):
        raise at.error(f"{key} must be true or false, got {flag!r}")
    if flag != default and not model.wrappers:
        raise at.error(f"{key} = {str(flag).lower()} needs a defense that wraps the model "
                       "(a preprocessor, say) among the model's defenses")
    return flag


def parse_model(registry, table, ident, at, base_dir):
    """The :class:`ModelSpec` of one model table (plugin, parameters, train or checkpoint)."""
    plugin = plugin_entry(registry, "models", table, at, MODEL_RESERVED)
    train = table.get("train", {})
    if not isinstance(train, dict):
        raise at.error("train must be a table of recipe fields")
    try:
        recipe = resolve_recipe(plugin, train)
    except UsageError as exc:
        raise at.at("train").error(str(exc)) from None
    checkpoint = _checkpoint(table.get("checkpoint"), at, base_dir)
    defenses = parse_defenses(registry, table.get("defenses"), at, checkpoint)
    _check_holdout(defenses, recipe, at)
    model = ModelSpec(ident, plugin, recipe, checkpoint, defenses)
    return attrs.evolve(model, adaptive=_flag(table, "adaptive", model, at))


def _check_holdout(defenses, recipe, at):
    """A detector's threshold at ``fpr`` needs ``ceil(1 / fpr)`` held-out clean samples: said
    before anything trains."""
    for i, defense in enumerate(defenses):
        if isinstance(defense, Detector):
            shortfall = holdout_shortfall(defense, recipe.holdout)
            if shortfall:
                raise at.at(f"defenses[{i}]").error(shortfall)


def _checkpoint(checkpoint, at, base_dir):
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, str):
        raise at.error(f"checkpoint must be a path (a string), got {checkpoint!r}")
    path = Path(checkpoint)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise at.error(f"checkpoint {checkpoint!r} is not a file")
    return str(path)


def parse_defenses(registry, value, at, checkpoint):
    """The model's defenses as a tuple of instances, each validated; ``at`` says where in the
    spec (errors name it)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise at.error("defenses must be an array of tables, e.g. "
                       "[{ name = \"binarize\" }, { name = \"adversarial-training\" }]")
    defenses = tuple(plugin_entry(registry, "defenses", table, at.at(f"defenses[{i}]"))
                     for i, table in enumerate(value))
    training = [d.name for d in defenses if isinstance(d, TrainingDefense)]
    if len(training) > 1:
        raise at.error(f"defenses: at most one training defense per model, got "
                       f"{', '.join(training)}")
    if training and checkpoint is not None:
        raise at.error(f"defenses: the training defense {training[0]!r} cannot apply to weights "
                       "loaded from a checkpoint")
    return defenses
