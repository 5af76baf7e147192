"""Spec parsing: valid specs round-trip; bad ones fail with the file, the key and what's allowed."""

from pathlib import Path

import advx
import attrs
import pytest
from advx.run.spec import SpecError, load_spec, parse_spec, spec_from_dict
from advx.run.spec_write import spec_to_dict
from advx.run.tomlwrite import dumps
from hypothesis import given
from hypothesis import strategies as st

from .conftest import TINY_SPEC


@pytest.fixture(scope="module")
def registry():
    return advx.get_registry(refresh=True)


def parse(text, registry):
    return parse_spec(text, registry, source="spec.toml")


def test_valid_spec_holds_validated_instances(registry):
    spec = parse(TINY_SPEC.format(extra=""), registry)
    assert spec.dataset.name == "synthetic" and isinstance(spec.dataset, advx.Dataset)
    assert (spec.dataset.n_train, spec.dataset.n_test) == (256, 64)
    assert [a.id for a in spec.attacks] == ["fgsm", "pgd"]
    assert spec.attacks[1].eps == (0.05, 0.3) and spec.attacks[1].attack.steps == 5
    assert isinstance(spec.attacks[1].attack, advx.Attack)
    assert (spec.models[0].recipe.epochs, spec.models[0].recipe.batch_size) == (2, 64)
    assert spec.models[0].recipe.lr == 3e-3  # blog-cnn's default recipe under the overrides
    assert spec.protocol.batch_size == 32 and isinstance(spec.protocol, advx.Protocol)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.attacks[1].attack.steps = 7


def test_resolved_spec_round_trips_through_toml(registry):
    spec = parse(TINY_SPEC.format(extra='\n[[attacks]]\nname = "bim"\nid = "bim-t"\nnorm = "linf"'
                                        '\neps = "8/255"\ntargeted = true\ntarget = 6\n'), registry)
    again = parse(dumps(spec_to_dict(spec)), registry)
    assert spec_to_dict(again) == spec_to_dict(spec)
    assert again.attacks == spec.attacks and again.models == spec.models
    assert again.attacks[2].eps == (8 / 255,) and again.attacks[2].target == 6


def test_unknown_top_level_key_lists_the_tables_plugins_claim(registry):
    with pytest.raises(SpecError, match=r"unknown key 'x'.*allowed: title.*pictures"):
        parse("x = 1\n[dataset]\nname = 'mnist'\n", registry)


def test_recipe_adversary_points_to_the_defense(registry):
    text = ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\n"
            "train = { adversary = { name = 'pgd' } }\n")
    with pytest.raises(SpecError, match=r"\[models\[0\].train\].*adversarial-training"):
        parse(text, registry)


BAD = [
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\nfoo = 1\n",
     r"\[models\[0\]\].*no parameter foo"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnnn'\n",
     r"\[models\[0\]\].*'blog-cnnn' is not a registered model. Did you mean 'blog-cnn'"),
    ("[dataset]\nname = 'mnist'\n", r"\[models\] needs at least one entry"),
    ("[[models]]\nname = 'blog-cnn'\n", r"\[dataset\] is missing"),
    ("x = 1\n[dataset]\nname = 'mnist'\n", r"unknown key 'x'.*allowed: title"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\n[[attacks]]\nname = 'pgd'\n"
     "norm = 'linf'\neps = 1.5\n", r"\[attacks\[0\]\] eps 1.5 is out of range for linf"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\n[[attacks]]\nname = 'pgd'\n"
     "norm = 'l7'\neps = 0.1\n", r"norm must be one of l0, l1, l2, linf"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\n[[attacks]]\nname = 'fgsm'\n"
     "norm = 'l0'\neps = 3\n", r"does not support norm 'l0'; it supports: l2, linf"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\n[[attacks]]\nname = 'pgd'\n"
     "norm = 'linf'\n", r"needs eps"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\n[[attacks]]\nname = 'pgd'\n"
     "norm = 'linf'\neps = 0.1\nsteps = -3\n", r"\[attacks\[0\]\] attack 'pgd'"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\ntrain = { epoch = 3 }\n",
     r"\[models\[0\].train\].*epoch"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\n[[models]]\nname = 'blog-cnn'\n",
     r"id 'blog-cnn' is used twice"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\ncheckpoint = 'nope.h5'\n",
     r"checkpoint 'nope.h5' is not a file"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\n[protocol]\nlimit = 0\n",
     r"\[protocol\].*limit must be a positive integer"),
    ("[dataset]\nname = 'mnist'\n[[models]]\nname = 'blog-cnn'\n[[attacks]]\nname = 'pgd'\n"
     "norm = 'linf'\neps = 0.1\ntarget = 3\n", r"target is set but targeted is not true"),
    ("[dataset\nname = 'mnist'\n", r"spec.toml: not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_specs_name_file_and_key(registry, text, message):
    with pytest.raises(SpecError, match=message) as info:
        parse(text, registry)
    assert str(info.value).startswith("spec.toml:")
    assert isinstance(info.value, advx.UsageError)


@given(st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.booleans(),
                 st.lists(st.floats(-2, 2), max_size=3)))
def test_any_eps_is_accepted_or_rejected_cleanly(eps):
    registry = advx.get_registry()
    data = {"dataset": {"name": "mnist"}, "models": [{"name": "blog-cnn"}],
            "attacks": [{"name": "fgsm", "norm": "linf", "eps": eps}]}
    try:
        spec = spec_from_dict(data, registry)
    except SpecError:
        return
    assert all(0 <= e <= 1 for e in spec.attacks[0].eps)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_example_specs_are_valid(registry, path):
    spec = load_spec(path, registry)
    assert spec.models and spec.attacks
