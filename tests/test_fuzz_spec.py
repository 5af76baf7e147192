"""Issue 13, point 6: hostile spec documents through ``advx run`` exit 2 with one line, or are
valid.  Each example is a valid tiny spec with one value replaced (wrong types, unknown keys,
extreme numbers) at one place: dataset, models, train, defenses, attacks, protocol, pictures or
the top level.  Valid ones stop at the run's start (``execute`` is replaced), after every
pre-run check; a few valid ones with extreme but legal numbers run for real."""

import copy
import tomllib

from advx.cli import cli
from advx.kernel.errors import ExitCode
from advx.run.tomlwrite import dumps
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

BASE = {
    "title": "fuzz",
    "dataset": {"name": "synthetic", "n_train": 64, "n_test": 16},
    "models": [{"name": "blog-cnn", "train": {"epochs": 1, "batch_size": 32},
                "defenses": [{"name": "binarize"}]}],
    "attacks": [{"name": "pgd", "norm": "linf", "eps": [0.1], "steps": 2},
                {"name": "fgsm", "norm": "l2", "eps": 1.0}],
    "protocol": {"name": "robust-accuracy", "batch_size": 16, "limit": 8},
    "pictures": {"kinds": ["curves"]},
}
# where a value is replaced, and the keys tried there (known ones and unknown ones)
PLACES = {
    (): ["title", "description", "dataset", "models", "attacks", "protocol", "pictures", "zz"],
    ("dataset",): ["name", "n_train", "n_test", "num_classes", "noise", "seed", "zz"],
    ("models", 0): ["name", "id", "checkpoint", "train", "defenses", "adaptive", "zz"],
    ("models", 0, "train"): ["epochs", "lr", "batch_size", "weight_decay", "momentum", "seed",
                             "holdout", "optimizer", "zz"],
    ("models", 0, "defenses", 0): ["name", "threshold", "low", "high", "zz"],
    ("attacks", 0): ["name", "norm", "eps", "steps", "step_size", "rel_step_size", "restarts",
                     "random_start", "targeted", "target", "models", "id", "zz"],
    ("attacks", 1): ["eps", "norm", "zz"],
    ("protocol",): ["name", "limit", "batch_size", "seed", "classes", "zz"],
    ("pictures",): ["kinds", "samples", "indices", "models", "attacks", "zz"],
}
NUMBERS = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, -1, 2**31, 10**18]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, 1e6, 0.5, 2.5, float("inf"), float("nan")]))
SCALARS = st.one_of(NUMBERS, st.booleans(), st.text(max_size=8),
                    st.sampled_from(["8/255", "1e400", "linf", "l2", "random", "pgd"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["name", "eps", "epochs", "zz"]), inner, max_size=3)),
    max_leaves=6)


def replaced(place, key, value):
    data = copy.deepcopy(BASE)
    table = data
    for step in place:
        table = table[step]
    table[key] = value
    return data


def write(tmp_path, data):
    try:
        text = dumps(data)
        tomllib.loads(text)
    except (TypeError, ValueError, tomllib.TOMLDecodeError):
        assume(False)  # no TOML document holds this value (a NUL in a key, say)
    spec = tmp_path / "spec.toml"
    spec.write_text(text, encoding="utf-8")
    return spec


def invoke(spec, tmp_path):
    return CliRunner().invoke(cli, ["run", str(spec), "--out", str(tmp_path / "out"),
                                    "--cache", str(tmp_path / "cache"), "--no-progress"])


def assert_usage_or_ok(result):
    if result.exit_code == 0:
        return
    assert result.exit_code == ExitCode.USAGE, (result.exit_code, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output


@st.composite
def hostile(draw):
    place = draw(st.sampled_from(sorted(PLACES, key=str)))
    return replaced(place, draw(st.sampled_from(PLACES[place])), draw(VALUES))


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=hostile())
def test_hostile_spec_exits_2_with_one_line_or_is_valid(tmp_path, monkeypatch, data):
    started = []

    def execute(spec, registry, out_dir, **options):  # the run's start: stop here
        started.append(spec)
        (out_dir / "report.json").write_text("{}")

    monkeypatch.setattr("advx.cli.run.execute", execute)
    result = invoke(write(tmp_path, data), tmp_path)
    assert_usage_or_ok(result)
    assert (result.exit_code == 0) == bool(started)


LEGAL_EXTREMES = st.one_of(
    st.tuples(st.just(("attacks", 0)), st.sampled_from(["step_size", "rel_step_size"]),
              st.sampled_from([1e-300, 1e-6, 1.0, 1e6])),
    st.tuples(st.just(("attacks", 0)), st.just("eps"), st.sampled_from([[0.0], [1.0]])),
    st.tuples(st.just(("attacks", 1)), st.just("eps"), st.sampled_from([0.0, 28.0])),
    st.tuples(st.just(("models", 0, "train")), st.sampled_from(["lr", "weight_decay"]),
              st.sampled_from([1e-300, 1e6])),
    st.tuples(st.just(("protocol",)), st.sampled_from(["seed", "limit"]),
              st.sampled_from([1, 2**62])),
)


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(change=LEGAL_EXTREMES)
def test_legal_extremes_run_to_the_end(tmp_path, change):
    result = invoke(write(tmp_path, replaced(*change)), tmp_path)
    assert result.exit_code == 0, result.output
