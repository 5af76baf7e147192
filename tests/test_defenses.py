"""Defenses: binarize (BPDA), adversarial and fast adversarial training, distillation; their
presets, spec composition and the errors of bad defense tables."""

import json

import advx
import pytest
import torch
from advx.cli import cli
from click.testing import CliRunner

SYNTHETIC = {"n_train": 512, "n_test": 128}
SHORT = {"epochs": 3, "batch_size": 64, "lr": 3e-3}


def _model(tmp_path, training=None, recipe=SHORT):
    data = advx.get_dataset("synthetic", **SYNTHETIC)
    return advx.get_model("blog-cnn", data, recipe=dict(recipe), cache=tmp_path,
                          training=training), data


def _robust_accuracy(model, data, eps, steps=10):
    x, y = data.load("test")
    threat = advx.ThreatModel(norm="linf", eps=eps)
    result = advx.get_attack("pgd", steps=steps)(model, x, y, threat, seed=0)
    return float((result.pred == y).float().mean())


# -- binarize ---------------------------------------------------------------------------------

class _Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(16, 3)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("adaptive", [True, False])
def test_binarize_feeds_binary_inputs_and_bpda_gradients_are_nonzero(adaptive):
    inner = _Recorder()
    model = advx.get_defense("binarize").wrap(inner, adaptive=adaptive)
    x = torch.rand(8, 1, 4, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    binary = inner.seen[-1]
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(binary, (x > 0.5).float())
    if adaptive:  # straight-through: the gradient of the model at the binarized input
        binary.requires_grad_(True)
        (expected,) = torch.autograd.grad(inner(binary).sum(), binary)
        torch.testing.assert_close(grad, expected)
        assert float(grad.abs().sum()) > 0
    else:
        assert float(grad.abs().sum()) == 0  # the naive gradient of a step function


def test_binarize_parameters():
    custom = advx.get_defense("binarize", threshold=0.2, low=-1.0, high=2.0)
    assert custom.transform(torch.tensor([0.1, 0.3])).tolist() == [-1.0, 2.0]
    with pytest.raises(advx.ParameterError, match="low < threshold < high"):
        advx.get_defense("binarize", threshold=1.5)


def test_binarize_defeats_naive_gradients_not_bpda(tmp_path):
    model, data = _model(tmp_path)
    x, y = data.load("test")
    binarize = advx.get_defense("binarize")
    threat = advx.ThreatModel(norm="linf", eps=0.5)  # enough to flip any pixel
    pgd = advx.get_attack("pgd", steps=10)
    naive = pgd(binarize.wrap(model, adaptive=False), x, y, threat, seed=0)
    adaptive = pgd(binarize.wrap(model, adaptive=True), x, y, threat, seed=0)
    assert float(adaptive.success.float().mean()) > float(naive.success.float().mean()) + 0.2


# -- training defenses ------------------------------------------------------------------------

def test_presets_fill_in_what_the_spec_leaves_out():
    cpu = advx.get_defense("adversarial-training", preset="cpu", epochs=2)
    assert (cpu.eps, cpu.steps, cpu.step_size, cpu.epochs) == (0.3, 7, 0.1, 2)
    paper = advx.get_defense("adversarial-training", preset="paper")
    assert (paper.steps, paper.step_size, paper.batch_size, paper.lr) == (40, 0.01, 50, 1e-4)
    recipe = paper.recipe(advx.TrainRecipe())
    assert (recipe.epochs, recipe.lr, recipe.batch_size) == (83, 1e-4, 50)
    assert paper.attack_params() == {"steps": 40, "step_size": 0.01, "random_start": True}
    fast = advx.get_defense("fast-adversarial-training", preset="cpu")
    assert fast.attack_params() == {"steps": 1, "step_size": 0.375, "random_start": True}


@pytest.mark.parametrize("name", ["adversarial-training", "fast-adversarial-training"])
def test_adversarial_training_raises_robust_accuracy(tmp_path, name):
    natural, data = _model(tmp_path)
    params = {"eps": 0.3, "steps": 3, "step_size": 0.15} if name == "adversarial-training" \
        else {"eps": 0.3}
    defended, _ = _model(tmp_path, advx.get_defense(name, epochs=6, **params))
    before, after = (_robust_accuracy(m, data, 0.3) for m in (natural, defended))
    assert after > before + 0.3, (before, after)
    assert defended.advx_metadata["training_defense"]["name"] == name


def test_training_defense_is_part_of_the_weights_key(tmp_path):
    a, _ = _model(tmp_path, advx.get_defense("fast-adversarial-training", eps=0.2))
    b, _ = _model(tmp_path, advx.get_defense("fast-adversarial-training", eps=0.2))
    c, _ = _model(tmp_path, advx.get_defense("fast-adversarial-training", eps=0.1))
    assert a.advx_metadata["source"] == "trained" and b.advx_metadata["source"] == "cache"
    assert c.advx_metadata["path"] != a.advx_metadata["path"]


def test_distillation_saturates_the_softmax_but_not_the_logits(tmp_path):
    natural, data = _model(tmp_path)
    distilled, _ = _model(tmp_path, advx.get_defense("distillation", temperature=100.0,
                                                     epochs=6, lr=1e-2))
    x, y = data.load("test")
    with torch.no_grad():
        logits = distilled(x)
    assert float((logits.argmax(1) == y).float().mean()) > 0.9  # still accurate at T = 1
    # advx models return logits, not probabilities: rows are not normalised ...
    assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))
    # ... and the distilled logits are far larger than the natural model's
    with torch.no_grad():
        spread = [float((m(x).max(1).values - m(x).min(1).values).median())
                  for m in (natural, distilled)]
    assert spread[1] > 5 * spread[0]
    threat = advx.ThreatModel(norm="linf", eps=0.3)
    fgsm = advx.get_attack("fgsm")(distilled, x, y, threat)
    cw = advx.get_attack("cw-linf", steps=20)(distilled, x, y, threat, seed=0)
    # The cross-entropy gradient underflows (FGSM fails); the CW margin on the logits does not.
    assert float(cw.success.float().mean()) > float(fgsm.success.float().mean()) + 0.3


# -- specs --------------------------------------------------------------------------------------

SPEC = """
[dataset]
name = "synthetic"
n_train = 256
n_test = 64

[[models]]
name = "blog-cnn"
train = {{ epochs = 2, batch_size = 64 }}
{model}

[[attacks]]
name = "pgd"
norm = "linf"
eps = 0.3
steps = 5

[protocol]
name = "robust-accuracy"
batch_size = 32
"""


def _invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def test_spec_composes_binarize_with_adversarial_training(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(model='id = "defended"\nshow_non_adaptive = true\n'
                    'defenses = [{ name = "binarize" }, { name = "fast-adversarial-training", '
                    'eps = 0.3, epochs = 2 }]'))
    out, cache = tmp_path / "out", tmp_path / "cache"
    trained = _invoke("train", spec, "--cache", cache, "--no-progress")
    assert trained.exit_code == 0, trained.output
    assert "| defended | binarize, fast-adversarial-training | trained |" in trained.output
    assert "| defended | binarize, fast-adversarial-training | cache |" in _invoke(
        "train", spec, "--cache", cache, "--no-progress").output
    result = _invoke("run", spec, "--out", out, "--cache", cache, "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = {r["model"]: r for r in report["results"]}
    assert set(rows) == {"defended", "defended (non-adaptive)"}
    assert rows["defended"]["set_key"] != rows["defended (non-adaptive)"]["set_key"]
    # the naive number is the higher (the step function hides the gradient)
    assert rows["defended (non-adaptive)"]["robust_accuracy"] >= rows["defended"]["robust_accuracy"]
    info = json.loads(_invoke("cache", "info", "--cache", cache,
                              rows["defended"]["set_key"]).output)
    defenses = info["files"][0]["provenance"]["identity"]["defenses"]
    assert [d["name"] for d in defenses] == ["binarize", "fast-adversarial-training"]
    assert defenses[0]["adaptive"] is True


@pytest.mark.parametrize("model, message", [
    ('defenses = [{ name = "binarise" }]', "binarize"),
    ('defenses = [{ name = "binarize", threshold = 2.0 }]', "low < threshold < high"),
    ('defenses = [{ name = "binarize", strength = 1 }]', "no parameter strength"),
    ('defenses = [{ name = "adversarial-training", preset = "gpu" }]', "presets: cpu, paper"),
    ('defenses = [{ name = "adversarial-training", eps = -0.3 }]', "eps"),
    ('defenses = [{ name = "distillation" }, { name = "adversarial-training" }]',
     "at most one training defense"),
    ('defenses = { name = "binarize" }', "array of tables"),
    ('show_non_adaptive = true', "needs a defense that wraps the model"),
    ('defenses = [{ name = "binarize" }]\nadaptive = "no"', "true or false"),
])
def test_bad_defense_tables_exit_2_naming_the_key(tmp_path, model, message):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(model=model))
    result = _invoke("run", spec, "--out", tmp_path / "out", "--cache", tmp_path / "cache")
    assert result.exit_code == 2, result.output
    assert "models[0]" in result.output and message in result.output
    assert not (tmp_path / "out").exists()
