"""Generators (cvae, conv-vae, magnet-dae) and the defenses built on them (puvae,
magnet-detector, vae-kl-detector): the defense contract, training, PuVAE's batched
reconstructions and choice, its gradients, and the errors of bad parameters."""

import json

import advx
import pytest
import torch
import torch.nn.functional as F
from advx.cli import cli
from advx.plugins.defenses._generative import Purifier
from advx.plugins.defenses.puvae import Purified
from advx.plugins.generators.cvae import DilatedConv
from advx.testing import DefenseContract
from advx.testing.networks import build_network
from advx.testing.plugin_checks import tiny_synthetic
from click.testing import CliRunner

# Generators small enough for the contract, which trains them again for every test.
TINY = {
    "cvae": {"channels": 8, "hidden": 32, "latent": 4, "epochs": 2, "batch_size": 32},
    "conv-vae": {"channels": 4, "hidden": 8, "epochs": 2, "batch_size": 32},
    "magnet-dae": {"epochs": 2, "batch_size": 32},
}


def _tiny(name):
    return {"name": name, **TINY[name]}


def _generator(name, **params):
    return advx.get_registry().create("generators", name, **{**TINY[name], **params})


def _info():
    return advx.DatasetInfo(shape=(1, 8, 8), num_classes=10)


def _batch(n=6, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _cvae(seed=0):
    torch.manual_seed(seed)
    return _generator("cvae").build(_info()).eval()


# -- the contract --------------------------------------------------------------------------------

class TestPuvaeContract(DefenseContract):
    defense_name = "puvae"
    defense_params = {"generator": _tiny("cvae")}

    def test_a_preprocessor_keeps_shape_dtype_and_bounds(self, tmp_path):
        """The trained purifier (the defense cannot transform before apply trains it)."""
        module = self.make_defense().apply(build_network("conv", 1).eval(),
                                           self.context(tmp_path))
        x = _batch(n=7, seed=4)
        out = module.preprocessor.transform(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert bool(((out >= 0) & (out <= 1)).all())


class TestMagnetErrorContract(DefenseContract):
    defense_name = "magnet-detector"
    defense_params = {"fpr": 0.05, "p": 2, "generator": _tiny("magnet-dae")}


class TestMagnetJsdPuvaeContract(DefenseContract):
    defense_name = "magnet-detector"
    defense_params = {"fpr": 0.05, "score": "jsd", "reconstruction": "puvae",
                      "generator": _tiny("cvae")}


class TestVaeKlContract(DefenseContract):
    defense_name = "vae-kl-detector"
    defense_params = {"fpr": 0.05, "generator": _tiny("conv-vae")}


# -- generators ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cvae", "conv-vae", "magnet-dae"])
def test_each_generator_trains_in_seconds_and_lowers_its_loss(name):
    data = tiny_synthetic(n_train=256)
    plugin = _generator(name, epochs=8)
    classifier = build_network("conv", 1).eval() if plugin.uses_classifier else None
    torch.manual_seed(0)
    module = plugin.build(data.info)
    x, y = data.load("train")

    def loss():
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(1)
            return float(plugin.loss(module, x, y, classifier))

    before = loss()
    advx.train_model(module, data, plugin.recipe(),
                     loss=lambda m, xb, yb, position: plugin.loss(m, xb, yb, classifier))
    assert loss() < 0.9 * before
    x = _batch()
    with torch.no_grad():
        out = module.reconstruct_all(x) if plugin.conditional else module.reconstruct(x)
    assert bool(((out >= 0) & (out <= 1)).all())


def test_the_cvae_loss_never_trains_the_classifier():
    classifier = build_network("conv", 1).eval()
    module, plugin = _cvae(), _generator("cvae")
    plugin.loss(module, _batch(), torch.arange(6), classifier).backward()
    assert all(p.grad is None for p in classifier.parameters())
    assert not classifier.training
    assert any(p.grad is not None for p in module.parameters())


def test_cvae_reconstruct_all_equals_one_class_at_a_time():
    module, x = _cvae(), _batch()
    with torch.no_grad():
        every = module.reconstruct_all(x)
        assert every.shape == (6, 10, 1, 8, 8)
        for k in range(10):
            one = module.reconstruct(x, torch.full((6,), k))
            torch.testing.assert_close(every[:, k], one, rtol=0, atol=1e-5)


def test_the_per_class_bias_equals_the_concatenated_input():
    module, x, y = _cvae(), _batch(), torch.tensor([0, 3, 9, 3, 1, 7])
    with torch.no_grad():
        features = module.convs(x)
        pre = module.fc1(torch.cat([features, F.one_hot(y, 10).float()], 1))
        expected = module._heads(pre)
        for got, want in zip(module.encode(x, y), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        every = module.encode_all(x)[0]
        torch.testing.assert_close(every[torch.arange(6), y], expected[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(28, 28), (7, 9), (8, 5)])
def test_the_sub_grid_convolution_equals_the_dilated_one(shape):
    conv = DilatedConv(2, 3, 7).double()
    x = torch.randn(4, 2, *shape, dtype=torch.float64)
    expected = F.conv2d(x, conv.weight, conv.bias, padding=6, dilation=2)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 7, 9), (1, 5, 5)])
def test_generators_take_any_image_shape(shape):
    info = advx.DatasetInfo(shape=shape, num_classes=10)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert _generator("cvae").build(info).reconstruct_all(x).shape == (2, 10, *shape)
        for name in ("conv-vae", "magnet-dae"):
            assert _generator(name).build(info).reconstruct(x).shape == x.shape


# -- PuVAE ---------------------------------------------------------------------------------------

def test_puvae_keeps_the_reconstruction_of_minimal_rmse():
    purifier, x = Purifier(_cvae()), _batch(n=8)
    with torch.no_grad():
        every = purifier.reconstruct_all(x)
        rmse = (every - x.unsqueeze(1)).square().flatten(2).mean(2).sqrt()
        chosen = purifier.choose(x)
        assert torch.equal(chosen, rmse.argmin(1))
        assert torch.equal(purifier(x), every[torch.arange(8), chosen])
    with torch.enable_grad():  # the recomputed branch is the same reconstruction
        out = purifier(x.clone().requires_grad_(True))
    torch.testing.assert_close(out.detach(), every[torch.arange(8), chosen], rtol=0, atol=1e-5)


def _purified(adaptive):
    classifier = build_network("conv", 1).eval()
    defense = advx.get_defense("puvae", generator=_tiny("cvae"))
    trained = type(defense)(generator=defense.generator, purifier=Purifier(_cvae()).eval())
    return trained.wrap(classifier, adaptive=adaptive), classifier


def _input_gradient(module, x, y):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(module(x), y), x)
    return grad


def test_adaptive_puvae_passes_the_gradient_of_the_kept_branch():
    module, classifier = _purified(adaptive=True)
    x, y = _batch(n=8, seed=1), torch.arange(8)
    grad = _input_gradient(module, x, y)
    chosen = module.purifier.choose(x)
    expected = _input_gradient(
        lambda t: classifier(module.purifier.generator.reconstruct(t, chosen)), x, y)
    assert float(grad.abs().sum()) > 0
    torch.testing.assert_close(grad, expected)


def _logit_gradient(module, x, weights):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((module(x) * weights).sum(), x)
    return grad


def test_non_adaptive_puvae_answers_defended_with_the_bare_gradient():
    """The logits' Jacobian is the bare classifier's (a loss of them then differs only by
    being evaluated at the defended logits)."""
    module, classifier = _purified(adaptive=False)
    x, weights = _batch(n=8, seed=2), torch.randn(8, 10, generator=torch.Generator())
    torch.testing.assert_close(_logit_gradient(module, x, weights),
                               _logit_gradient(classifier, x, weights))
    with torch.no_grad():
        defended = module(x)
        torch.testing.assert_close(defended, classifier(module.purifier(x)))
    with torch.enable_grad():
        torch.testing.assert_close(module(x.clone().requires_grad_(True)).detach(), defended)


def test_puvae_carries_a_detectors_reject_index():
    classifier = build_network("conv", 1).eval()
    classifier.advx_reject_index = 10
    defense = advx.get_defense("puvae", generator=_tiny("cvae"))
    trained = type(defense)(generator=defense.generator, purifier=Purifier(_cvae()))
    assert isinstance(trained.wrap(classifier), Purified)
    assert advx.reject_index(trained.wrap(classifier)) == 10


def test_an_untrained_puvae_says_it_needs_apply():
    with pytest.raises(advx.UsageError, match="apply"):
        advx.get_defense("puvae").transform(_batch())


def test_presets_pass_the_generator_preset_through():
    for name, generator in [("puvae", "cvae"), ("magnet-detector", "magnet-dae"),
                            ("vae-kl-detector", "conv-vae")]:
        for preset in ("cpu", "paper"):
            defense = advx.get_defense(name, preset=preset)
            want = advx.get_registry().create("generators", generator, preset=preset)
            assert defense.generator == want, (name, preset)


# -- bad parameters ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, params, message", [
    ("puvae", {"generator": {"name": "cvea"}}, "Did you mean 'cvae'"),
    ("puvae", {"generator": {"name": "conv-vae"}}, "class-conditional generator"),
    ("puvae", {"generator": "cvae"}, "generator table"),
    ("puvae", {"generator": {"name": "cvae", "latent": 0}}, "latent"),
    ("vae-kl-detector", {"generator": {"name": "cvae"}}, "unconditional generator"),
    ("magnet-detector", {"reconstruction": "puvae", "generator": {"name": "magnet-dae"}},
     "needs a class-conditional generator"),
    ("magnet-detector", {"p": 3}, "'p' must be in (1, 2)"),
    ("magnet-detector", {"score": "mse"}, "'score' must be in ('error', 'jsd')"),
    ("magnet-detector", {"reconstruction": "vae"}, "'reconstruction' must be in"),
    ("magnet-detector", {"temperature": 0}, "temperature must be a finite number > 0"),
    ("magnet-detector", {"fpr": 0.0}, "fpr must be a number in (0, 1)"),
    ("vae-kl-detector", {"fpr": 1.5}, "fpr must be a number in (0, 1)"),
])
def test_bad_parameters_are_parameter_errors(name, params, message):
    with pytest.raises(advx.ParameterError) as caught:
        advx.get_defense(name, **params)
    assert message in str(caught.value)


SPEC = """
[dataset]
name = "synthetic"
n_train = 128
n_test = 32

[[models]]
name = "blog-cnn"
train = {{ epochs = 1, holdout = 100 }}
defenses = [{defense}]

[[attacks]]
name = "fgsm"
norm = "linf"
eps = 0.3
"""


@pytest.mark.parametrize("defense, message", [
    ('{ name = "puvae", generator = { name = "nope" } }', "not a registered generator"),
    ('{ name = "puvae", generator = { name = "magnet-dae" } }', "class-conditional"),
    ('{ name = "magnet-detector", p = 3 }', "'p' must be in (1, 2)"),
    ('{ name = "magnet-detector", fpr = 1 }', "fpr must be a number in (0, 1)"),
    ('{ name = "vae-kl-detector", fpr = 0.001 }', "needs at least 1000 held-out clean samples"),
])
def test_bad_generative_defense_tables_exit_2(tmp_path, defense, message):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(defense=defense))
    result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(tmp_path / "out"),
                                      "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not list((tmp_path / "cache").glob("models/*.h5"))  # found before any training


def test_a_spec_runs_puvae_behind_magnet_and_vae_kl_detectors(tmp_path):
    tiny = {name: ", ".join(f"{k} = {v}" for k, v in TINY[name].items()) for name in TINY}
    defenses = (f'{{ name = "puvae", generator = {{ name = "cvae", {tiny["cvae"]} }} }}, '
                f'{{ name = "magnet-detector", fpr = 0.05, generator = {{ name = "magnet-dae", '
                f'{tiny["magnet-dae"]} }} }}, {{ name = "vae-kl-detector", fpr = 0.05, '
                f'generator = {{ name = "conv-vae", {tiny["conv-vae"]} }} }}')
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(defense=defenses) + "\n[protocol]\nname = \"robust-accuracy\"\n")
    spec.write_text(spec.read_text().replace("holdout = 100 }", "holdout = 40 }\n"
                                             "show_non_adaptive = true"))
    result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(tmp_path / "out"),
                                      "--cache", str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {r["model"] for r in report["results"]} == {"blog-cnn", "blog-cnn (non-adaptive)"}


def test_the_conv_vae_kl_term_warms_up_linearly_over_its_fraction_of_training():
    from advx.plugins.generators._common import bernoulli_nll, gaussian_kl

    plugin = _generator("conv-vae", kl_warmup=0.5)
    torch.manual_seed(0)
    module, x = plugin.build(_info()), _batch(8)
    losses = {}
    with torch.no_grad():
        mean, log_var = module.encode(x)
        kl = float(gaussian_kl(mean, log_var).mean())
        for progress in (0.0, 0.25, 0.5, 0.9):
            torch.manual_seed(1)  # the same reparameterisation noise each time
            losses[progress] = float(plugin.loss(module, x, None, None, progress=progress))
        torch.manual_seed(1)
        z = mean + (0.5 * log_var).exp() * torch.randn_like(mean)
        nll = float(bernoulli_nll(module, module.decode_logits(z), x).mean())
    assert losses[0.0] == pytest.approx(nll, rel=1e-6)
    assert losses[0.25] == pytest.approx(nll + 0.5 * kl, rel=1e-6)
    assert losses[0.5] == pytest.approx(nll + kl, rel=1e-6) == losses[0.9]


def test_generators_are_told_how_far_training_has_come(tmp_path):
    seen = []

    class Recording(type(_generator("magnet-dae"))):
        def loss(self, module, x, y, classifier, progress=0.0):
            seen.append(progress)
            return super().loss(module, x, y, classifier, progress)

    from advx.train.builder import Builder

    dataset = tiny_synthetic()
    plugin = Recording(epochs=2, batch_size=32)
    Builder(dataset, advx.get_registry(), "cpu", tmp_path).generator(plugin)
    assert seen[0] == 0.0 and seen == sorted(seen) and 0.5 <= seen[-1] < 1.0
    assert len(seen) == 2 * -(-len(dataset.load("train")[1]) // 32)


def test_a_threshold_from_too_few_held_out_samples_is_refused_outside_a_spec_too(tmp_path):
    from advx.train.builder import Builder

    builder = Builder(tiny_synthetic(), advx.get_registry(), "cpu", tmp_path).for_entry(
        True, holdout=10)
    with pytest.raises(advx.ParameterError, match="needs at least 100 held-out clean samples, "
                                                   "and the model entry holds out 10"):
        builder.threshold(advx.get_defense("magnet-detector", fpr=0.01), torch.nn.Identity())
