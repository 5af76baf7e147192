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

    [executor]                 # optional: where the sets' shards are computed
    name = "ray"               # default "local"; "ray" needs pip install advx[ray]
    address = "auto"           # ray: join the running cluster (default: a local instance)
    gpus_per_worker = 0.5      # ray: GPU share of each actor (a run on cuda needs it)

A spec file is a regular file of at most 1 MiB (``/dev/zero`` or a pipe is refused before it
is read) whose values nest at most :data:`~advx.run.spec_parts.MAX_DEPTH` deep.

Other top-level tables belong to the plugins that claim them (``advx_register_tables``; the
built-in reports plugin reads ``[pictures]``).  The result is a :class:`advx.RunSpec` of
validated plugin instances.  Every error names the file, the key and what is allowed
(:class:`SpecError`, exit code 2).
"""

import os
import stat
import tomllib
from pathlib import Path

import attrs

from ..kernel.entries import RunSpec
from ..kernel.errors import UsageError
from .spec_attacks import check_eps_scale, parse_attacks
from .spec_models import parse_models
from .spec_parts import MAX_DEPTH, SpecError, Where, check_depth, plugin_entry, table_at

CORE_KEYS = ("title", "description", "dataset", "models", "attacks", "protocol", "executor")
DEFAULT_PROTOCOL = "robust-accuracy"
MAX_SPEC_BYTES = 1 << 20


def load_spec(path, registry):
    """Read and validate the TOML spec at ``path``."""
    path = Path(path)
    return parse_spec(read_spec_text(path), registry, source=str(path), base_dir=path.parent)


def read_spec_text(path):
    """The text of the spec file ``path``: a regular file of at most :data:`MAX_SPEC_BYTES`
    (a device or a pipe is refused before it is opened)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise SpecError(f"{path}: not a regular file; a spec is a TOML file")
        with open(path, "rb") as file:
            data = file.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror or exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: the spec is larger than {MAX_SPEC_BYTES >> 20} MiB; "
                        "allowed: a TOML file of at most 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def parse_spec(text, registry, source="<spec>", base_dir=None):
    """Validate a spec given as TOML text; see the module docstring for the shape."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise SpecError(f"{source}: tables and arrays nest too deeply; allowed: at most "
                        f"{MAX_DEPTH} levels") from None
    check_depth(data, source)
    return spec_from_dict(data, registry, source=source, base_dir=base_dir)


def spec_from_dict(data, registry, source="<spec>", base_dir=None):
    """The :class:`RunSpec` of a spec given as plain data (parsed TOML)."""
    parsers = registry.tables()
    unknown = sorted(set(data) - set(CORE_KEYS) - set(parsers))
    if unknown:
        raise SpecError(f"{source}: unknown key {', '.join(map(repr, unknown))} at the top "
                        f"level; allowed: {', '.join(CORE_KEYS + tuple(sorted(parsers)))}")
    where = Where(source)
    dataset = plugin_entry(registry, "datasets", table_at(data, "dataset", where),
                           where.at("dataset"))
    models = parse_models(registry, data.get("models"), where, base_dir)
    attacks = parse_attacks(registry, data.get("attacks", []), where, base_dir)
    _check_model_ids(models, attacks, where)
    _check_access(models, attacks, where)
    protocol_table = data.get("protocol", {"name": DEFAULT_PROTOCOL})
    if not isinstance(protocol_table, dict):
        raise where.at("protocol").error("must be a table, e.g. [protocol] with name = \"...\"")
    protocol = plugin_entry(registry, "protocols", {"name": DEFAULT_PROTOCOL, **protocol_table},
                            where.at("protocol"))
    _check_classes(dataset.info.num_classes, protocol, attacks, where)
    check_eps_scale(dataset.info, attacks, where)
    executor = None
    if "executor" in data:  # where shards are computed: no part of any result
        executor = plugin_entry(registry, "executors", table_at(data, "executor", where),
                                where.at("executor"))
    spec = RunSpec(dataset, models, attacks, protocol, _text(data, "title", source),
                   _text(data, "description", source), source, executor=executor)
    return attrs.evolve(spec, tables=_claimed(data, parsers, spec, where),
                        written_tables={k: data[k] for k in parsers if k in data})


def _check_model_ids(models, attacks, where):
    """Every id an attack entry's ``models`` names is a model entry's."""
    known = [m.id for m in models]
    for i, attack in enumerate(attacks):
        unknown = [m for m in attack.models or () if m not in known]
        if unknown:
            raise where.at(f"attacks[{i}]").error(
                f"models names no model entry {', '.join(map(repr, unknown))}; the model "
                f"ids are {', '.join(map(repr, known))}")


def _check_access(models, attacks, where):
    """Every attack runs only on models that give it what it needs: no gradient attack on a
    model that offers scores only (its plugin's ``access``), nothing an attack ``requires``
    that the model's plugin does not ``offer``; a transfer entry's source attack is checked
    against its source model."""
    pairs = [(m, a.attack, f"attacks[{i}]") for i, a in enumerate(attacks) for m in models
             if a.runs_on(m)]
    pairs += [(a.source, a.attack.source_attack, f"attacks[{i}].source_attack")
              for i, a in enumerate(attacks) if a.source is not None]
    for model, attack, at in pairs:
        missing = sorted(set(attack.requires) - set(model.plugin.offers))
        if missing:
            raise where.at(at).error(
                f"attack {attack.name!r} needs a model that offers {', '.join(missing)}, and "
                f"model {model.id!r} ({model.name}) does not; name the models it runs on: "
                "models = [...]")
        if attack.access == "gradient" and model.plugin.access == "score":
            raise where.at(at).error(
                f"attack {attack.name!r} needs gradients, and model {model.id!r} "
                f"({model.name}) offers scores only (it classifies by an optimisation at "
                "inference); reach it through gradient estimates: { name = "
                f"\"estimated-gradient\", attack = {{ name = \"{attack.name}\", ... }} }}, or "
                "leave the model out of the entry's models = [...]")


def _check_classes(count, protocol, attacks, where):
    """The protocol's ``classes`` and the attacks' fixed targets are classes of the dataset."""
    allowed = f"allowed: class indices 0 to {count - 1} (the dataset has {count} classes)"
    wrong = [c for c in protocol.classes or () if c >= count]
    if wrong:
        raise where.at("protocol").error(f"classes {wrong} are no classes of the dataset; "
                                         f"{allowed}")
    for i, attack in enumerate(attacks):
        if isinstance(attack.target, int) and attack.target >= count:
            raise where.at(f"attacks[{i}]").error(f"target {attack.target} is no class of the "
                                                  f"dataset; {allowed}")


def _text(data, key, source):
    value = data.get(key, "")
    if not isinstance(value, str):
        raise SpecError(f"{source}: [{key}] must be a string, got {value!r}")
    return value


def _claimed(data, parsers, spec, where):
    """Each plugin-claimed table, parsed by its plugin."""
    tables = {}
    for name, parse in parsers.items():
        if name not in data:
            continue
        try:
            tables[name] = parse(data[name], spec)
        except UsageError as exc:
            raise where.at(name).error(str(exc)) from None
    return tables


def with_overrides(spec, limit=None, seed=None):
    """``spec`` with the protocol's limit and seed replaced where given (CLI flags win)."""
    changes = {k: v for k, v in (("limit", limit), ("seed", seed)) if v is not None}
    if not changes:
        return spec
    try:
        return attrs.evolve(spec, protocol=attrs.evolve(spec.protocol, **changes))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{spec.source}: [protocol] {exc}") from None
