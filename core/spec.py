"""Run specs: a TOML file naming a dataset, models, attacks with threat models, and a protocol.

    [dataset]
    name = "mnist"

    [[models]]
    name = "blog-cnn"          # plugin name; other keys are the plugin's parameters
    train = { epochs = 3 }     # optional recipe overrides, or: checkpoint = "weights.h5"

    [[attacks]]
    name = "pgd"
    norm = "linf"              # the threat model: norm, eps (a number or a list), targeted
    eps = [0.1, 0.3]
    steps = 40

    [protocol]
    name = "robust-accuracy"
    limit = 1000

Every error names the file, the key and what is allowed (:class:`SpecError`, exit code 2).
"""

import tomllib
from fractions import Fraction
from pathlib import Path

import attrs

from .adversarial_training import adversary_of
from .attack import TransferAttack
from .defense_stack import instances as defense_instances
from .defense_stack import parse_defenses
from .errors import UsageError
from .threat import NORMS, ThreatModel
from .training import TrainRecipe

MODEL_RESERVED = ("id", "train", "checkpoint", "defenses", "adaptive", "show_non_adaptive")
ATTACK_RESERVED = ("id", "norm", "eps", "targeted", "target")
TOP_LEVEL_KEYS = ("title", "description", "dataset", "models", "attacks", "protocol")
TARGET_MODES = ("random", "next", "least-likely")
DEFAULT_PROTOCOL = "robust-accuracy"


class SpecError(UsageError):
    """A run spec that cannot be used as written."""


@attrs.frozen
class PluginSpec:
    """A plugin name with its parameters, as written in the spec."""

    name: str
    params: dict = attrs.field(factory=dict)


@attrs.frozen
class ModelSpec:
    id: str
    plugin: PluginSpec
    train: dict = attrs.field(factory=dict)
    checkpoint: str | None = None
    defenses: tuple = ()  # PluginSpecs, in the order an input meets them
    adaptive: bool = True  # preprocessors pass a straight-through (BPDA) gradient


@attrs.frozen
class AttackSpec:
    id: str
    plugin: PluginSpec
    norm: str
    eps: tuple  # floats; (None,) for a minimisation attack without eps
    targeted: bool = False
    target: object = None  # an int class, or one of TARGET_MODES

    def threat(self, eps, bounds):
        return ThreatModel(norm=self.norm, eps=eps, bounds=bounds, targeted=self.targeted)


@attrs.frozen
class RunSpec:
    dataset: PluginSpec
    models: tuple
    attacks: tuple
    protocol: PluginSpec
    title: str = ""
    source: str = "<spec>"

    def to_dict(self):
        """The resolved spec as plain data (what `advx run` writes beside the report)."""
        return spec_to_dict(self)


def load_spec(path, registry):
    """Read and validate the TOML spec at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc}") from None
    return parse_spec(text, registry, source=str(path), base_dir=path.parent)


def parse_spec(text, registry, source="<spec>", base_dir=None):
    """Validate a spec given as TOML text; see the module docstring for the shape."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not valid TOML: {exc}") from None
    return spec_from_dict(data, registry, source=source, base_dir=base_dir)


def spec_from_dict(data, registry, source="<spec>", base_dir=None):
    _no_unknown(data, TOP_LEVEL_KEYS, source, "the top level")
    where = _Where(source)
    dataset, _ = _plugin(registry, "datasets", _table(data, "dataset", where), where.at("dataset"))
    models = _models(registry, data.get("models"), where, base_dir)
    attacks = _attacks(registry, data.get("attacks", []), where, base_dir)
    protocol_table = dict(data.get("protocol", {"name": DEFAULT_PROTOCOL}))
    protocol_table.setdefault("name", DEFAULT_PROTOCOL)
    protocol, _ = _plugin(registry, "protocols", protocol_table, where.at("protocol"))
    title = data.get("title", "")
    if not isinstance(title, str):
        raise SpecError(f"{source}: title must be a string")
    return RunSpec(dataset, models, attacks, protocol, title, source)


class _Where:
    """The file and key path an error is about."""

    def __init__(self, source, key=""):
        self.source, self.key = source, key

    def at(self, key):
        return _Where(self.source, f"{self.key}.{key}" if self.key else key)

    def error(self, message):
        return SpecError(f"{self.source}: [{self.key}] {message}")


def _no_unknown(table, allowed, source, what):
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise SpecError(f"{source}: unknown key {', '.join(map(repr, unknown))} in {what}; "
                        f"allowed: {', '.join(allowed)}")


def _table(data, key, where):
    value = data.get(key)
    if not isinstance(value, dict):
        raise where.at(key).error("is missing or not a table; it needs at least name = \"...\"")
    return value


def _plugin(registry, kind, table, where, reserved=()):
    """``(PluginSpec, instance)`` of the plugin named by ``table["name"]``; the remaining keys
    are its parameters, validated by building the instance."""
    name = table.get("name")
    if not isinstance(name, str):
        raise where.error(f"needs name = \"...\", one of: {', '.join(registry.names(kind))}")
    params = {k: v for k, v in table.items() if k != "name" and k not in reserved}
    try:
        instance = registry.create(kind, name, **params)
    except UsageError as exc:
        raise where.error(str(exc)) from None
    return PluginSpec(name, params), instance


def _array_of_tables(value, where, allow_empty):
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise where.error("must be an array of tables ([[...]] entries)")
    if not value and not allow_empty:
        raise where.error("needs at least one entry")
    return value


def _unique_id(table, used, where):
    ident = table.get("id", table.get("name"))
    if not isinstance(ident, str) or not ident:
        raise where.error("id must be a non-empty string")
    if ident in used:
        raise where.error(f"id {ident!r} is used twice; give each entry its own id = \"...\"")
    used.add(ident)
    return ident


def _models(registry, value, where, base_dir):
    models, used = [], set()
    for i, table in enumerate(_array_of_tables(value, where.at("models"), allow_empty=False)):
        at = where.at(f"models[{i}]")
        model = _model(registry, table, _unique_id(table, used, at), at, base_dir)
        models.append(model)
        if _flag(registry, table, "show_non_adaptive", model, at):
            naive = attrs.evolve(model, id=f"{model.id} (non-adaptive)", adaptive=False)
            _unique_id({"id": naive.id}, used, at)
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


def _model(registry, table, ident, at, base_dir):
    """The :class:`ModelSpec` of one model table (plugin, parameters, train or checkpoint)."""
    plugin, _ = _plugin(registry, "models", table, at, MODEL_RESERVED)
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
    defenses = parse_defenses(registry, table.get("defenses"), at, PluginSpec, checkpoint)
    model = ModelSpec(ident, plugin, dict(train), checkpoint, defenses)
    return attrs.evolve(model, adaptive=_flag(registry, table, "adaptive", model, at))


def _attacks(registry, value, where, base_dir):
    attacks, used = [], set()
    for i, table in enumerate(_array_of_tables(value, where.at("attacks"), allow_empty=True)):
        at = where.at(f"attacks[{i}]")
        ident = _unique_id(table, used, at)
        plugin, attack = _plugin(registry, "attacks", table, at, ATTACK_RESERVED)
        if isinstance(attack, TransferAttack):
            plugin = _transfer_plugin(registry, plugin, at, base_dir)
        norm = table.get("norm")
        if norm not in NORMS:
            raise at.error(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        eps = _eps_list(table.get("eps"), norm, attack, at)
        targeted, target = _targeting(table, at)
        spec = AttackSpec(ident, plugin, norm, eps, targeted, target)
        _check_threat(spec, attack, at)
        attacks.append(spec)
    return tuple(attacks)


def _check_threat(spec, attack, at):
    """The attack (and a transfer attack's source attack) can run under the entry's threat."""
    try:
        attack.check_threat(spec.threat(spec.eps[0], (0.0, 1.0)))
    except UsageError as exc:
        raise at.error(str(exc)) from None


def _transfer_plugin(registry, plugin, at, base_dir):
    """A transfer entry's parameters with its source model and attack tables checked."""
    params = dict(plugin.params)
    source = params.get("source")
    if not isinstance(source, dict):
        raise at.error("source must be a model table, e.g. source = { name = \"madry-cnn\", "
                       "train = { seed = 2 } }")
    model = _model(registry, source, "source", at.at("source"), base_dir)
    params["source"] = model_spec_dict(model, with_id=False)
    table = params.get("source_attack")
    if not isinstance(table, dict):
        raise at.error("source_attack must be an attack table, e.g. "
                       "source_attack = { name = \"pgd\", steps = 40 }")
    if set(table) & set(ATTACK_RESERVED):
        raise at.at("source_attack").error(
            f"the source attack runs under the entry's own threat model: leave out "
            f"{', '.join(sorted(set(table) & set(ATTACK_RESERVED)))}")
    _plugin(registry, "attacks", table, at.at("source_attack"))
    return PluginSpec(plugin.name, params)


def transfer_source(attack_spec, attack):
    """``(ModelSpec, AttackSpec)`` of a transfer entry's source model and source attack."""
    source = dict(attack.source)
    model = ModelSpec(f"{attack_spec.id}/source", PluginSpec(
        source.pop("name"), {k: v for k, v in source.items() if k not in MODEL_RESERVED}),
        dict(source.get("train", {})), source.get("checkpoint"))
    table = dict(attack.source_attack)
    source_attack = AttackSpec(f"{attack_spec.id}/source-attack", PluginSpec(
        table.pop("name"), table), attack_spec.norm, attack_spec.eps, attack_spec.targeted,
        attack_spec.target)
    return model, source_attack


def _eps_list(value, norm, attack, at):
    if value is None:
        if attack.kind == "fixed-eps":
            raise at.error(f"attack {attack.name!r} needs eps (a number or a list of numbers)")
        return (None,)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise at.error("eps must not be an empty list")
    out = []
    for v in values:
        try:
            eps = float(Fraction(v)) if isinstance(v, str) else v
            if isinstance(eps, bool) or not isinstance(eps, int | float):
                raise ValueError
        except (ValueError, ZeroDivisionError):
            raise at.error(f"eps must be numbers like 0.3 or \"8/255\", got {v!r}") from None
        _check_eps_range(float(eps), norm, at)
        out.append(float(eps))
    return tuple(out)


def _check_eps_range(eps, norm, at):
    limit = 1.0 if norm == "linf" else float("inf")
    if not 0 <= eps <= limit or eps != eps:
        allowed = "0 <= eps <= 1 (inputs lie in [0, 1])" if norm == "linf" else "a finite eps >= 0"
        raise at.error(f"eps {eps:g} is out of range for {norm}: allowed {allowed}")
    if norm == "l0" and eps != int(eps):
        raise at.error(f"eps of an l0 attack counts pixels and must be whole, got {eps:g}")


def _targeting(table, at):
    targeted = table.get("targeted", False)
    if not isinstance(targeted, bool):
        raise at.error(f"targeted must be true or false, got {targeted!r}")
    target = table.get("target")
    if target is not None and not targeted:
        raise at.error("target is set but targeted is not true")
    if targeted:
        target = "random" if target is None else target
        ok = target in TARGET_MODES or (isinstance(target, int) and not isinstance(target, bool)
                                        and target >= 0)
        if not ok:
            raise at.error(f"target must be a class index or one of {', '.join(TARGET_MODES)}")
    return targeted, target


def spec_to_dict(spec):
    """Plain data for a :class:`RunSpec`, in the shape of the TOML file."""
    data = {"title": spec.title} if spec.title else {}
    data["dataset"] = {"name": spec.dataset.name, **spec.dataset.params}
    data["models"] = [model_spec_dict(m) for m in spec.models]
    data["attacks"] = [attack_spec_dict(a) for a in spec.attacks]
    data["protocol"] = {"name": spec.protocol.name, **spec.protocol.params}
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
