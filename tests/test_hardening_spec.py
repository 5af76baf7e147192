"""Issue 13, point 1: every user error exits 2 with one line naming the file and the key, found
before any work starts (no model trains, no attack runs); no nonsense spec runs."""

import os

import advx
import pytest
from advx.cli import cli
from advx.kernel.errors import ExitCode
from advx.run import spec as spec_module
from advx.run.spec import SpecError, parse_spec
from click.testing import CliRunner

from .conftest import TINY_SPEC

BASE = TINY_SPEC.format(extra="")
PROTOCOL = '[protocol]\nname = "robust-accuracy"\nbatch_size = 32\n'
TRAIN = "train = { epochs = 2, batch_size = 64 }"
PGD_EPS = 'eps = [0.05, 0.3]\nsteps = 5'


def edit(old, new, text=BASE):
    assert old in text, old
    return text.replace(old, new, 1)


# (case id, spec text, a piece of the expected message)
CASES = [
    ("protocol-string", 'protocol = "robust-accuracy"\n' + BASE.split("[protocol]")[0],
     "[protocol] must be a table"),
    ("protocol-list", "protocol = []\n" + BASE.split("[protocol]")[0],
     "[protocol] must be a table"),
    ("checkpoint-number", edit(TRAIN, "checkpoint = 5"), "checkpoint must be a path"),
    ("eps-overflow", edit(PGD_EPS, 'eps = "1e400"\nsteps = 5'), "eps must be finite"),
    ("eps-inf-l2", edit('norm = "linf"\n' + PGD_EPS, 'norm = "l2"\neps = inf\nsteps = 5'),
     "allowed a finite eps"),
    ("eps-huge-l2", edit('norm = "linf"\n' + PGD_EPS, 'norm = "l2"\neps = 1e300\nsteps = 5'),
     "allowed: 0 <= eps <= 28"),
    ("eps-huge-l0", BASE.split("[[attacks]]")[0] + '[[attacks]]\nname = "jsma"\nnorm = "l0"\n'
     'eps = 1e9\n' + PROTOCOL, "allowed: 0 <= eps <= 784"),
    ("eps-too-many", edit(PGD_EPS, "eps = [" + ", ".join(f"{i / 2000}" for i in range(1002))
                          + "]\nsteps = 5"), "at most 1000"),
    ("limit-float", edit("batch_size = 32", "batch_size = 32\nlimit = 2.5"), "limit must be"),
    ("limit-bool", edit("batch_size = 32", "batch_size = 32\nlimit = true"), "limit must be"),
    ("batch-size-bool", edit("batch_size = 32", "batch_size = true"), "batch_size must be"),
    ("classes-absent", edit("batch_size = 32", "batch_size = 32\nclasses = [10]"),
     "allowed: class indices 0 to 9"),
    ("target-absent", edit(PGD_EPS, PGD_EPS + "\ntargeted = true\ntarget = 12"),
     "target 12 is no class"),
    ("seed-string", edit("batch_size = 32", 'batch_size = 32\nseed = "abc"'), "seed must be"),
    ("seed-float", edit("batch_size = 32", "batch_size = 32\nseed = 1.5"), "seed must be"),
    ("seed-nan", edit("batch_size = 32", "batch_size = 32\nseed = nan"), "seed must be"),
    ("seed-bool", edit("batch_size = 32", "batch_size = 32\nseed = true"), "seed must be"),
    ("lr-inf", edit(TRAIN, "train = { epochs = 2, lr = inf }"), "lr must be a finite number"),
    ("weight-decay-inf", edit(TRAIN, "train = { weight_decay = inf }"), "weight_decay must be"),
    ("epochs-bool", edit(TRAIN, "train = { epochs = true }"), "epochs must be a whole number"),
    ("adversary-eps-2", edit(TRAIN, TRAIN + '\ndefenses = [{ name = "adversarial-training", '
                                            'eps = 2.0 }]'), "eps must be a finite number > 0"),
    ("adversary-steps-bool", edit(TRAIN, TRAIN + '\ndefenses = [{ name = '
                                                 '"adversarial-training", steps = true }]'),
     "steps must be a whole number"),
    ("description-number", "description = 5\n" + BASE, "[description] must be a string"),
    ("steps-bool", edit(PGD_EPS, 'eps = 0.1\nsteps = true'), "steps must be a whole number"),
    ("step-size-inf", edit(PGD_EPS, 'eps = 0.1\nstep_size = inf'), "step_size must be a finite"),
    ("step-size-huge", edit(PGD_EPS, 'eps = 0.1\nstep_size = 1e300'), "<= 1e+06"),
    ("step-size-string", edit(PGD_EPS, 'eps = 0.1\nstep_size = "0.1"'), "step_size must be"),
    ("picture-index-past-limit", edit("batch_size = 32", "batch_size = 32\nlimit = 8")
     + '\n[pictures]\nkinds = ["grid"]\nindices = [3, 8]\n', "allowed: positions 0 to 7"),
    ("deep-nesting", "x = " + "[" * 20000 + "]" * 20000 + "\n" + BASE, "nest too deeply"),
    ("nesting-past-limit", 'x = { a = ' + "[" * 17 + "]" * 17 + " }\n" + BASE,
     "nest more than 16 levels"),
]


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the run gets as far as evaluating anything."""
    def refuse(*args, **kwargs):
        raise AssertionError("the run started before the error was found")

    monkeypatch.setattr("advx.cli.run.execute", refuse)


def run(spec, tmp_path, *extra):
    return CliRunner().invoke(cli, ["run", str(spec), "--out", str(tmp_path / "out"),
                                    "--cache", str(tmp_path / "cache"), *map(str, extra)])


def assert_usage(result, *pieces):
    assert result.exit_code == ExitCode.USAGE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for piece in pieces:
        assert piece in lines[0], lines[0]


@pytest.mark.parametrize("text, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_error_exits_2_before_any_work(tmp_path, no_work, text, message):
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    assert_usage(run(spec, tmp_path), str(spec), message)


def test_special_file_is_refused_unread(tmp_path, no_work):
    assert_usage(run("/dev/zero", tmp_path), "/dev/zero: not a regular file")


def test_fifo_is_refused_without_blocking(tmp_path, no_work):
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    assert_usage(run(fifo, tmp_path), "not a regular file")


def test_spec_larger_than_1_mib_is_refused(tmp_path, no_work):
    spec = tmp_path / "spec.toml"
    spec.write_text(BASE + "#" * (1 << 20))
    assert_usage(run(spec, tmp_path), "larger than 1 MiB")


@pytest.mark.parametrize("option", ["--out", "--cache"])
def test_folder_that_cannot_be_created_exits_2_first(tmp_path, no_work, option):
    spec = tmp_path / "spec.toml"
    spec.write_text(BASE)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    folders = {"--out": tmp_path / "out", "--cache": tmp_path / "cache",
               option: blocker / "below"}
    result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(folders["--out"]),
                                      "--cache", str(folders["--cache"])])
    assert_usage(result, option, str(blocker / "below"), "allowed:")


def test_duplicate_eps_are_merged_in_order():
    registry = advx.get_registry()
    spec = parse_spec(edit(PGD_EPS, "eps = [0.3, 0.1, 0.3, 0.1, 0.3]\nsteps = 5")
                      .replace("eps = [0.05, 0.3]", "eps = [0.05, 0.3, 0.05]"), registry)
    assert spec.attacks[0].eps == (0.05, 0.3)
    assert spec.attacks[1].eps == (0.3, 0.1)


def test_one_eps_100000_times_is_one_eps():
    registry = advx.get_registry()
    text = edit(PGD_EPS, "eps = [" + ", ".join(["0.1"] * 100_000) + "]\nsteps = 5")
    assert parse_spec(text, registry).attacks[1].eps == (0.1,)


def test_nesting_at_the_limit_is_accepted():
    registry = advx.get_registry()
    with pytest.raises(SpecError, match="unknown key 'x'"):  # past the depth check
        parse_spec("x = " + "[" * 15 + "]" * 15 + "\n" + BASE, registry)


def test_picture_indices_past_the_samples_are_stated(tmp_path):
    """Without a limit in the spec, the sample count is known only when the run selects its
    samples: indices past it are listed in skipped_pictures with the valid range."""
    from advx.plugins.reports.picture_run import _beyond

    assert _beyond((2, 70, 99), 64) == [{"kind": "indices", "reason": (
        "indices [70, 99] are beyond the 64 evaluated samples (positions 0 to 63) and are "
        "not drawn")}]
    assert _beyond((2,), 64) == [] and _beyond(None, 64) == []


def test_spec_size_limit_is_1_mib():
    assert spec_module.MAX_SPEC_BYTES == 1 << 20
