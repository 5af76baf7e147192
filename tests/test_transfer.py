"""The transfer attack: source sets come from the cache, are shared, and are checked in specs."""

import json

import advx
import pytest
import torch
from advx.cli import cli
from advx.store.format import read_set, sets_dir
from click.testing import CliRunner

from .conftest import TINY_SPEC

SOURCE = 'source = { name = "blog-cnn", train = { epochs = 2, batch_size = 64, seed = 2 } }'
TRANSFER = """
[[attacks]]
name = "transfer"
id = "{id}"
norm = "linf"
eps = [0.3]
{source}
source_attack = {{ name = "pgd", steps = 5 }}
"""


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def run(tmp_path, extra, cache, name="out"):
    spec = tmp_path / f"{name}.toml"
    spec.write_text(TINY_SPEC.format(extra=extra))
    result = invoke("run", spec, "--out", tmp_path / name, "--cache", cache, "--no-progress")
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / name / "report.json").read_text())


def test_transfer_sets_are_computed_once_and_shared_across_specs(tmp_path):
    cache = tmp_path / "cache"
    extra = (TRANSFER.format(id="from-a", source=SOURCE)
             + TRANSFER.format(id="again", source=SOURCE))
    report = run(tmp_path, extra, cache)
    rows = {r["attack"]: r for r in report["results"] if r["attack_plugin"] == "transfer"}
    assert set(rows) == {"from-a", "again"}
    # one source set for both entries: 4 direct sets + 1 source set + 1 replay set per entry
    # (the two entries have the same identity, so their replays are one set too)
    assert len(list(sets_dir(cache).glob("*.h5"))) == 4 + 1 + 1
    assert rows["from-a"]["set_key"] == rows["again"]["set_key"]
    replay = read_set(sets_dir(cache) / f"{rows['from-a']['set_key']}.h5")
    source_key = replay.provenance["identity"]["source_set"]
    source = read_set(sets_dir(cache) / f"{source_key}.h5")
    assert torch.equal(torch.from_numpy(replay.arrays["x_adv"]),
                       torch.from_numpy(source.arrays["x_adv"]))
    assert replay.arrays["queries"].sum() == 0  # the target was never queried to craft them

    # The same model and attack asked for directly in another spec: the very same set.
    direct = TINY_SPEC.replace("batch_size = 64 }}", "batch_size = 64, seed = 2 }}")
    assert direct != TINY_SPEC
    (tmp_path / "direct.toml").write_text(direct.format(extra=""))
    result = invoke("run", tmp_path / "direct.toml", "--out", tmp_path / "direct", "--cache",
                    cache, "--no-progress")
    assert result.exit_code == 0, result.output
    second = json.loads((tmp_path / "direct" / "report.json").read_text())
    pgd = next(r for r in second["results"] if r["attack"] == "pgd" and r["eps"] == 0.3)
    assert pgd["set_key"] == source_key and pgd["cache"] == "cache"


def test_transfer_is_weaker_than_white_box_on_the_source(tmp_path):
    report = run(tmp_path, TRANSFER.format(id="from-a", source=SOURCE), tmp_path / "cache")
    white = next(r for r in report["results"] if r["attack"] == "pgd" and r["eps"] == 0.3)
    transfer = next(r for r in report["results"] if r["attack"] == "from-a")
    assert transfer["robust_accuracy"] >= white["robust_accuracy"]
    assert transfer["mean_queries"] == 0


@pytest.mark.parametrize(("source", "attack", "message"), [
    ("", 'source_attack = { name = "pgd" }', "argument: 'source'"),
    ('source = { name = "blog-cnnn" }', 'source_attack = { name = "pgd" }', "blog-cnn"),
    ('source = { name = "blog-cnn", train = { epochz = 1 } }', 'source_attack = { name = "pgd" }',
     "epochz"),
    (SOURCE, 'source_attack = { name = "pgdd" }', "pgd"),
    (SOURCE, 'source_attack = { name = "pgd", eps = 0.1 }', "leave out eps"),
    (SOURCE, 'source_attack = { name = "pgd", steps = 0 }', "steps"),
    (SOURCE, 'source_attack = "pgd"', "source_attack must be an attack table"),
])
def test_bad_transfer_entries_exit_2(tmp_path, source, attack, message):
    extra = f'\n[[attacks]]\nname = "transfer"\nnorm = "linf"\neps = 0.3\n{source}\n{attack}\n'
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_SPEC.format(extra=extra))
    result = invoke("run", spec, "--out", tmp_path / "out", "--cache", tmp_path / "cache")
    assert result.exit_code == 2, result.output
    assert message in result.output and "attacks[2]" in result.output
    assert not (tmp_path / "out").exists()


def test_source_attack_must_support_the_entry_norm(tmp_path):
    extra = f'\n[[attacks]]\nname = "transfer"\nnorm = "l0"\neps = 3\n{SOURCE}\n' \
            'source_attack = { name = "pgd" }\n'
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_SPEC.format(extra=extra))
    result = invoke("run", spec, "--out", tmp_path / "out", "--cache", tmp_path / "cache")
    assert result.exit_code == 2 and "does not support norm 'l0'" in result.output


def test_python_api_transfer_from_a_module():
    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    target = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    threat = advx.ThreatModel(norm="linf", eps=0.2)
    attack = advx.get_attack("transfer", source=source, source_attack={"name": "fgsm"})
    result = attack(target, x, y, threat, seed=1)
    expected = advx.get_attack("fgsm")(source, x, y, threat).x_adv
    assert torch.equal(result.x_adv, expected) and int(result.queries.sum()) == 0
    with pytest.raises(advx.UsageError, match="runs inside `advx run`"):
        advx.get_attack("transfer", source={"name": "blog-cnn"})(target, x, y, threat)


def test_the_written_spec_reruns_to_the_same_transfer_sets(tmp_path):
    """The source table is no part of the transfer set's identity (the source set's key is):
    spec.toml, which writes the source in its resolved form, reads the very same sets."""
    cache = tmp_path / "cache"
    first = run(tmp_path, TRANSFER.format(id="from-a", source=SOURCE), cache)
    result = invoke("run", tmp_path / "out" / "spec.toml", "--out", tmp_path / "again",
                    "--cache", cache, "--no-progress")
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert [r["set_key"] for r in again["results"]] == [r["set_key"] for r in first["results"]]
    assert {r["cache"] for r in again["results"]} == {"cache"}
    replay = next(r for r in first["results"] if r["attack"] == "from-a")
    identity = read_set(sets_dir(cache) / f"{replay['set_key']}.h5").provenance["identity"]
    assert "source" not in identity["attack"]["params"] and identity["source_set"]


def test_a_set_method_on_a_transfer_entry_is_refused(tmp_path):
    from advx.run.context import Session
    from advx.run.spec import parse_spec

    spec = parse_spec(TINY_SPEC.format(extra=TRANSFER.format(id="t", source=SOURCE)),
                      advx.get_registry())

    class Nothing(advx.SetMethod):
        def identity(self):
            return {"name": "nothing"}

    session = Session(spec, advx.get_registry(), cache=tmp_path / "cache")
    with pytest.raises(advx.UsageError, match="transfer attack"):
        session.obtain(advx.SetRequest(spec.models[0], spec.attacks[-1], 0.3, Nothing()))
