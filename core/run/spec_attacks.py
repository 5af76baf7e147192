"""The ``[[attacks]]`` tables of a run spec: the attack, its threat model(s) and targets.

An entry's ``eps`` is a number, a list, or a linear range ``{ from = A, to = B, count = N }``.
Every eps is finite; a value listed twice is evaluated once (duplicates are merged, the first
place kept), and an entry holds at most :data:`MAX_EPS` distinct values.
A transfer entry's ``source`` model table becomes a model entry of its own
(:attr:`advx.kernel.entries.AttackSpec.source`); its ``source_attack`` table is built by the
registry like any plugin parameter that holds a plugin.
"""

import math
from fractions import Fraction

from ..kernel.attack import TransferAttack
from ..kernel.entries import TARGET_MODES, AttackSpec
from ..kernel.errors import UsageError
from ..kernel.threat import FLOAT32_MAX, NORMS
from .spec_models import parse_model
from .spec_parts import array_of_tables, plugin_entry, unique_id

ATTACK_RESERVED = ("id", "norm", "eps", "targeted", "target", "models", "propagations")
MAX_PROPAGATIONS = 10**9  # a per-sample budget beyond any attack's need
MAX_EPS = 1000  # distinct eps values of one entry (as many as an eps range may have)


def parse_attacks(registry, value, where, base_dir):
    attacks, used = [], set()
    for i, table in enumerate(array_of_tables(value, where.at("attacks"), allow_empty=True)):
        at = where.at(f"attacks[{i}]")
        ident = unique_id(table, used, at)
        _check_source_attack(table, at)
        attack = plugin_entry(registry, "attacks", table, at, ATTACK_RESERVED)
        source = _transfer_source(registry, attack, ident, at, base_dir)
        norm = table.get("norm")
        if norm not in NORMS:
            raise at.error(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        eps = _eps_list(table.get("eps"), norm, attack, at)
        targeted, target = _targeting(table, at)
        spec = AttackSpec(ident, attack, norm, eps, targeted, target, source,
                          _model_ids(table.get("models"), at),
                          _budget(table.get("propagations"), attack, at))
        _check_threat(spec, at)
        attacks.append(spec)
    return tuple(attacks)


def _model_ids(value, at):
    """The ``models`` an entry runs on: a non-empty list of model ids (checked against the
    spec's models once those are known), or None for every model."""
    if value is None:
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) for v in value)):
        raise at.error(f"models must be a non-empty list of model ids, e.g. models = "
                       f"[\"abs\"], got {value!r}")
    return tuple(dict.fromkeys(value))


def _budget(value, attack, at):
    """The entry's ``propagations``: a whole number of forward + backward passes per sample
    the core allows the attack (None: no cap)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROPAGATIONS:
        raise at.error(f"propagations must be a whole number from 1 to {MAX_PROPAGATIONS} "
                       f"(forward + backward passes per sample), got {value!r}")
    if isinstance(attack, TransferAttack):
        raise at.error("propagations caps what an attack spends on the model it attacks; a "
                       "transfer attack spends nothing on it (cap its source_attack's own "
                       "parameters instead)")
    return value


def _check_threat(spec, at):
    """The attack (and a transfer attack's source attack) can run under the entry's threat."""
    eps = spec.eps[0] if spec.eps[0] is None else min(spec.eps[0], FLOAT32_MAX)
    try:  # (an eps beyond the input box is refused with the box's size: check_eps_scale)
        spec.attack.check_threat(spec.threat(eps, (0.0, 1.0)))
    except UsageError as exc:
        raise at.error(str(exc)) from None


def _check_source_attack(table, at):
    source_attack = table.get("source_attack")
    if isinstance(source_attack, dict) and set(source_attack) & set(ATTACK_RESERVED):
        raise at.at("source_attack").error(
            f"the source attack runs under the entry's own threat model: leave out "
            f"{', '.join(sorted(set(source_attack) & set(ATTACK_RESERVED)))}")


def _transfer_source(registry, attack, ident, at, base_dir):
    """A transfer entry's source model entry (None for other attacks)."""
    if not isinstance(attack, TransferAttack):
        return None
    source = attack.source
    if not isinstance(source, dict):
        raise at.error("source must be a model table, e.g. source = { name = \"madry-cnn\", "
                       "train = { seed = 2 } }")
    return parse_model(registry, source, f"{ident}/source", at.at("source"), base_dir)


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
    out = {}
    for v in values:
        eps = _eps_number(v, at)
        _check_eps_range(eps, norm, at)
        out[eps] = None
        if len(out) > MAX_EPS:
            raise at.error(f"eps lists more than {MAX_EPS} distinct values; allowed: at most "
                           f"{MAX_EPS} (a range: {{ from = 0.01, to = 0.3, count = 30 }})")
    return tuple(out)


def check_eps_scale(info, attacks, where):
    """Each eps at most the diameter of the dataset's input box in its norm: a larger ball
    holds no other input, and radii like 1e300 overflow float32 inside the attacks."""
    lower, upper = info.bounds
    numel = math.prod(info.shape)
    pixels = math.prod(info.shape[1:]) if len(info.shape) == 3 else numel
    width = upper - lower
    largest = {"linf": width, "l2": width * math.sqrt(numel), "l1": width * numel, "l0": pixels}
    for i, attack in enumerate(attacks):
        top = largest[attack.norm]
        wrong = [e for e in attack.eps if e is not None and e > top]
        if wrong:
            raise where.at(f"attacks[{i}]").error(
                f"eps {wrong[0]:g} exceeds the {attack.norm} diameter of the inputs "
                f"({'x'.join(map(str, info.shape))} in [{lower:g}, {upper:g}]); allowed: "
                f"0 <= eps <= {top:g}")


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
    except (ValueError, ZeroDivisionError, OverflowError):
        raise at.error(f"eps must be finite numbers like 0.3 or \"8/255\", got {v!r}") from None
    return float(eps)


def _check_eps_range(eps, norm, at):
    limit = 1.0 if norm == "linf" else float("inf")
    if not 0 <= eps <= limit or not math.isfinite(eps):
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
