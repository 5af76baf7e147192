"""The defense, model, dataset and protocol contracts applied to every registered plugin of
those kinds (the attack contract has tests/test_attack_contract.py), and the contracts' own
power: each catches a plugin that breaks what it checks."""

import advx
import attrs
import pytest
import torch
from advx.testing import DatasetContract, DefenseContract, ModelContract, ProtocolContract

REGISTRY = advx.get_registry(refresh=True)

# Parameters a plugin needs to run in the contracts, or that keep them fast.
PARAMS = {
    ("defenses", "adversarial-training"): {"steps": 2, "step_size": 0.1},
    ("datasets", "synthetic"): {"n_train": 64, "n_test": 16},
    ("models", "abs"): {"latents": 40, "steps": 2},
    ("models", "binary-abs"): {"latents": 40, "steps": 2},
    ("models", "nearest-neighbour"): {"max_train": 64},
}
SHAPES = {  # models built for one input size only
    ("models", "abs"): ((1, 28, 28),),
    ("models", "binary-abs"): ((1, 28, 28),),
}
NOT_HERE = {  # plugins that need files this machine may not have
    ("datasets", "fashion-mnist"): "needs the Fashion-MNIST files (apt dataset-fashion-mnist)",
    ("datasets", "arrays"): "needs a folder of arrays (tests/test_datasets.py covers it)",
}
# Plugins whose contract runs in another module, with parameters of its own.
ELSEWHERE = {  # the generative defenses: tiny generators, a threshold the 40 samples allow,
    # and puvae's transform needs the generator its apply trains
    ("defenses", name): "tests/test_generative_defenses.py"
    for name in ("puvae", "magnet-detector", "vae-kl-detector")
}
CONTRACTS = {"defenses": (DefenseContract, "defense"), "models": (ModelContract, "model"),
             "datasets": (DatasetContract, "dataset"), "protocols": (ProtocolContract,
                                                                     "protocol")}


def _available(kind, name):
    if (kind, name) not in NOT_HERE:
        return True
    try:
        REGISTRY.create(kind, name).load("test")
    except (advx.UsageError, TypeError):
        return False
    return True


for _kind, (_base, _word) in CONTRACTS.items():
    for _name in REGISTRY.names(_kind):
        if not _available(_kind, _name) or (_kind, _name) in ELSEWHERE:
            continue
        _cls = type(f"Test{_base.__name__}_{_name.replace('-', '_')}", (_base,),
                    {f"{_word}_name": _name, f"{_word}_params": PARAMS.get((_kind, _name), {}),
                     **({"shapes": SHAPES[(_kind, _name)]} if (_kind, _name) in SHAPES else {})})
        globals()[_cls.__name__] = _cls


def test_every_builtin_kind_is_covered():
    names = {k: set(REGISTRY.names(k)) for k in CONTRACTS}
    assert {"binarize", "adversarial-training", "distillation"} <= names["defenses"]
    assert {"blog-cnn", "madry-cnn", "classifier-a"} <= names["models"]
    assert {"mnist", "synthetic"} <= names["datasets"]
    assert {"robust-accuracy", "minimal-perturbation", "curve"} <= names["protocols"]


# -- the contracts catch broken plugins ----------------------------------------------------

class _Coupled(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x - x.mean(0, keepdim=True))  # every sample sees the batch mean


@attrs.frozen(kw_only=True)
class _BrokenPreprocessor(advx.Preprocessor):
    """Breaks one rule, named by ``flaw``."""

    name = "broken-preprocessor"
    flaw: str = attrs.field(metadata={"help": "which rule to break"})

    def transform(self, x):
        if self.flaw == "bounds":
            return x * 2
        if self.flaw == "random":
            return (x + 0.01 * torch.rand(x.shape)).clamp(0, 1)
        return x

    def apply(self, module, context):
        if self.flaw == "coupled":
            return _Coupled(module)
        if self.flaw == "no-gradient":
            return _NoGradient(module)
        return super().apply(module, context)


class _NoGradient(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.detach().round())


@pytest.mark.parametrize(("flaw", "test"), [
    ("bounds", "test_a_preprocessor_keeps_shape_dtype_and_bounds"),
    ("coupled", "test_keeps_samples_independent"),
    ("random", "test_is_deterministic"),
    ("no-gradient", "test_has_a_gradient_where_adaptive"),
])
def test_the_defense_contract_catches_a_broken_defense(flaw, test, tmp_path):
    class Contract(DefenseContract):
        def make_defense(self):
            return _BrokenPreprocessor(flaw=flaw)

    method = getattr(Contract(), test)
    with pytest.raises(AssertionError):
        method() if test.startswith("test_a_preprocessor") else method(tmp_path)


@attrs.frozen(kw_only=True)
class _UnseededModel(advx.ModelPlugin):
    """Draws its weights from a generator seeded by the operating system: not by the run."""

    name = "unseeded"

    def build(self, info):
        module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(
            int(torch.tensor(info.shape).prod()), info.num_classes))
        with torch.no_grad():
            generator = torch.Generator()
            generator.seed()  # from the operating system's entropy
            module[1].weight.copy_(torch.randn(module[1].weight.shape, generator=generator))
        return module


def test_the_model_contract_catches_an_unseeded_model():
    class Contract(ModelContract):
        def make_model(self):
            return _UnseededModel()

    with pytest.raises(AssertionError):
        Contract().test_build_is_seeded()
