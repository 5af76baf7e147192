"""Run specs: a TOML file naming a dataset, models, attacks with threat models, and a protocol.

    [dataset]
    name = "mnist"

    [[models]]
    name = "blog-cnn"          # plugin name; other keys are the plugin's parameters
    train = { epochs = 3 }     # optional recipe overrides, or: checkpoint = "weights.h5"

    [[attacks]]
    name = "pgd"
    norm = "linf"              # the threat model: norm, eps (a number or a list), targeted
    eps = [0.1, 0.3]           # or a linear range, ends included:
    steps = 40                 # eps = { from = 0.01, to = 0.3, count = 30 }

    [protocol]
    name = "robust-accuracy"
    limit = 1000

Every error names the file, the key and what is allowed (:class:`SpecError`, exit code 2).
"""

import tomllib
from fractions import Fraction
from pathlib import Path

import attrs

from ..kernel.attack import TransferAttack
from ..kernel.errors import UsageError
from ..kernel.threat import NORMS
from .picture_run import parse_pictures
from .specdict import model_spec_dict
from .specmodels import MODEL_RESERVED, parse_model, parse_models
from .specparts import (  # noqa: F401  (re-exported: the spec's pieces live in specparts)
    TARGET_MODES,
    AttackSpec,
    ModelSpec,
    PluginSpec,
    SpecError,
    Where,
    array_of_tables,
    no_unknown,
    plugin_entry,
    table_at,
    unique_id,
)

ATTACK_RESERVED = ("id", "norm", "eps", "targeted", "target")
TOP_LEVEL_KEYS = ("title", "description", "dataset", "models", "attacks", "protocol",
                  "pictures")
DEFAULT_PROTOCOL = "robust-accuracy"


@attrs.frozen
class RunSpec:
    dataset: PluginSpec
    models: tuple
    attacks: tuple
    protocol: PluginSpec
    title: str = ""
    source: str = "<spec>"
    pictures: object = None  # a picture_run.PicturesSpec, or None for the defaults

    def to_dict(self):
        """The resolved spec as plain data (what `advx run` writes beside the report)."""
        from .specdict import spec_to_dict  # specdict imports nothing from here

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
    no_unknown(data, TOP_LEVEL_KEYS, source, "the top level")
    where = Where(source)
    dataset, _ = plugin_entry(registry, "datasets", table_at(data, "dataset", where),
                              where.at("dataset"))
    models = parse_models(registry, data.get("models"), where, base_dir)
    attacks = _attacks(registry, data.get("attacks", []), where, base_dir)
    protocol_table = dict(data.get("protocol", {"name": DEFAULT_PROTOCOL}))
    protocol_table.setdefault("name", DEFAULT_PROTOCOL)
    protocol, _ = plugin_entry(registry, "protocols", protocol_table, where.at("protocol"))
    title = data.get("title", "")
    if not isinstance(title, str):
        raise SpecError(f"{source}: title must be a string")
    pictures = parse_pictures(data.get("pictures"), models, attacks, where)
    return RunSpec(dataset, models, attacks, protocol, title, source, pictures)


def _attacks(registry, value, where, base_dir):
    attacks, used = [], set()
    for i, table in enumerate(array_of_tables(value, where.at("attacks"), allow_empty=True)):
        at = where.at(f"attacks[{i}]")
        ident = unique_id(table, used, at)
        plugin, attack = plugin_entry(registry, "attacks", table, at, ATTACK_RESERVED)
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
    model = parse_model(registry, source, "source", at.at("source"), base_dir)
    params["source"] = model_spec_dict(model, with_id=False)
    table = params.get("source_attack")
    if not isinstance(table, dict):
        raise at.error("source_attack must be an attack table, e.g. "
                       "source_attack = { name = \"pgd\", steps = 40 }")
    if set(table) & set(ATTACK_RESERVED):
        raise at.at("source_attack").error(
            f"the source attack runs under the entry's own threat model: leave out "
            f"{', '.join(sorted(set(table) & set(ATTACK_RESERVED)))}")
    plugin_entry(registry, "attacks", table, at.at("source_attack"))
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
    if isinstance(value, dict):
        value = _eps_range(value, at)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise at.error("eps must not be an empty list")
    out = []
    for v in values:
        eps = _eps_number(v, at)
        _check_eps_range(eps, norm, at)
        out.append(eps)
    return tuple(out)


def _eps_range(table, at):
    """The eps values of ``{ from = A, to = B, count = N }``: N evenly spaced, A and B included
    (each rounded to 12 significant digits, so 0.01 steps print as such)."""
    unknown = sorted(set(table) - {"from", "to", "count"})
    missing = [k for k in ("from", "to", "count") if k not in table]
    if unknown or missing:
        raise at.error("an eps range is { from = 0.01, to = 0.3, count = 30 }; "
                       + (f"unknown key {', '.join(map(repr, unknown))}" if unknown
                          else f"it lacks {', '.join(missing)}"))
    count = table["count"]
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= 1000:
        raise at.error(f"eps range count must be a whole number from 2 to 1000, got {count!r}")
    low, high = (_eps_number(table[k], at) for k in ("from", "to"))
    if not low < high:
        raise at.error(f"eps range needs from < to, got from = {low:g}, to = {high:g}")
    step = (high - low) / (count - 1)
    return [float(f"{low + i * step:.12g}") for i in range(count - 1)] + [high]


def _eps_number(v, at):
    try:
        eps = float(Fraction(v)) if isinstance(v, str) else v
        if isinstance(eps, bool) or not isinstance(eps, int | float):
            raise ValueError
    except (ValueError, ZeroDivisionError):
        raise at.error(f"eps must be numbers like 0.3 or \"8/255\", got {v!r}") from None
    return float(eps)


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
