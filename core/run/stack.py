"""The defenses of a model entry: parsed from its spec table, applied to its module.

``defenses`` lists them in the order an input meets them: preprocessors wrap the trained
module (the first listed sees the raw input), and at most one training defense decides how the
weights are trained.  ``show_non_adaptive = true`` on the model adds a second entry, ``<id>
(non-adaptive)``, whose preprocessors pass their exact (for binarization: zero) gradient, so
the report shows the naive number beside the adaptive one.
"""

from ..kernel.errors import UsageError
from .specparts import PluginSpec

KINDS_IN_STACK = ("preprocessor", "training")


def parse_defenses(registry, value, at, checkpoint):
    """The model's defenses as a tuple of :class:`PluginSpec`, each validated; ``at`` says
    where in the spec (errors name it)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise at.error("defenses must be an array of tables, e.g. "
                       "[{ name = \"binarize\" }, { name = \"adversarial-training\" }]")
    parsed, training = [], []
    for i, table in enumerate(value):
        where = at.at(f"defenses[{i}]")
        name = table.get("name")
        if not isinstance(name, str):
            raise where.error(f"needs name = \"...\", one of: "
                              f"{', '.join(registry.names('defenses'))}")
        params = {k: v for k, v in table.items() if k != "name"}
        try:
            defense = registry.create("defenses", name, **params)
        except UsageError as exc:
            raise where.error(str(exc)) from None
        if defense.kind not in KINDS_IN_STACK:
            raise where.error(f"defense {name!r} is a {defense.kind}; a model's defenses may be "
                              f"{' or '.join(KINDS_IN_STACK)} defenses")
        if defense.kind == "training":
            training.append(name)
        parsed.append(PluginSpec(name, params))
    if len(training) > 1:
        raise at.error(f"defenses: at most one training defense per model, got "
                       f"{', '.join(training)}")
    if training and checkpoint is not None:
        raise at.error(f"defenses: the training defense {training[0]!r} cannot apply to weights "
                       "loaded from a checkpoint")
    return tuple(parsed)


def instances(registry, model_spec):
    """``(training defense or None, [preprocessors in input order])`` of a model entry."""
    built = [registry.create("defenses", d.name, **d.params) for d in model_spec.defenses]
    training = next((d for d in built if d.kind == "training"), None)
    return training, [d for d in built if d.kind == "preprocessor"]


def wrap(module, preprocessors, adaptive):
    """``module`` behind ``preprocessors`` (the first one sees the raw input)."""
    for preprocessor in reversed(preprocessors):
        module = preprocessor.wrap(module, adaptive=adaptive)
    return module.eval()


def identity(registry, model_spec):
    """The defense stack as plain data for a set's identity: each defense's name, kind and
    resolved parameters (presets applied), and whether gradients are adaptive."""
    from ..train.zoo import defense_identity  # zoo imports the package lazily

    built = [registry.create("defenses", d.name, **d.params) for d in model_spec.defenses]
    return [{**defense_identity(d), "kind": d.kind,
             **({"adaptive": model_spec.adaptive} if d.kind == "preprocessor" else {})}
            for d in built]
