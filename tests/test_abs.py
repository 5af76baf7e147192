"""The analysis-by-synthesis model: training, inference by optimisation, determinism, the
latent-descent attack, and how a spec treats a model that offers scores only."""

import json

import advx
import pytest
import torch
from advx.cli import cli
from advx.plugins.models.abs_inference import LatentSearch, into_ball, losses
from advx.store.weights import weights_digest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

SMALL = {"latents": 64, "steps": 3}
RECIPE = {"epochs": 4, "batch_size": 64}


@pytest.fixture(scope="module")
def data():
    return advx.get_dataset("synthetic", n_train=400, n_test=40)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained(data, cache):
    return {name: advx.get_model(name, data, params=SMALL, recipe=RECIPE, cache=cache)
            for name in ("abs", "binary-abs")}


def test_inference_settings_share_the_training_but_not_the_sets(trained, data, cache):
    """Other inference settings load the same trained VAEs (no second training), and the
    weights digest, which keys every adversarial set, tells the settings apart."""
    other = advx.get_model("abs", data, params={**SMALL, "steps": 5}, recipe=RECIPE,
                           cache=cache)
    assert other.advx_metadata["source"] == "cache"
    assert float(other.inference[1]) == 5 and float(trained["abs"].inference[1]) == 3
    assert weights_digest(other) != weights_digest(trained["abs"])


def _accuracy(model, data):
    x, y = data.load("test")
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_each_vae_trains_on_its_class_in_seconds(trained, data):
    """A few epochs on the synthetic set: every class's VAE explains its own class best."""
    assert _accuracy(trained["abs"], data) >= 0.9
    assert _accuracy(trained["binary-abs"], data) >= 0.85  # binarizing loses some detail


def test_training_moves_only_the_vae_of_each_samples_class(data, tmp_path):
    plugin = advx.get_registry().create("models", "abs", **SMALL)
    module = plugin.build(data.info)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    x, y = data.load("train")
    threes = y == 3
    module.train()
    module.vaes.training_loss(x[threes][:8], y[threes][:8]).backward()
    moved = {name.split(".")[2] for name, p in module.named_parameters()
             if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert moved == {"3"}
    changed = {k.split(".")[2] for k, v in module.state_dict().items()
               if not torch.equal(before[k], v)}
    assert changed <= {"3"}  # batch-norm statistics of class 3's VAE only


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.1, 100), radius=st.floats(0.5, 10), seed=st.integers(0, 1000))
def test_the_latent_optimisation_never_leaves_the_ball(trained, scale, radius, seed):
    model = trained["abs"]
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 28, 28, generator=generator)
    start = into_ball(scale * torch.randn(3, 10, 8, generator=generator), radius)
    search = LatentSearch(latents=8, steps=5, lr=0.5 * scale, radius=radius, seed=0)
    z = search.descend(model.vaes.bank, x, start)
    assert bool((z.norm(dim=-1) <= radius * (1 + 1e-5)).all())


def test_inference_is_deterministic_under_its_seed(trained, data):
    model = trained["abs"]
    x, _ = data.load("test")
    with torch.no_grad():
        first, again = model(x[:6]), model(x[:6])
    assert torch.equal(first, again)
    search = model.search
    assert torch.equal(search.prior("cpu", torch.float32), search.prior("cpu", torch.float32))
    other = LatentSearch(latents=search.latents, steps=0, lr=0.05, radius=5.0, seed=1)
    assert not torch.equal(other.prior("cpu", torch.float32), search.prior("cpu", torch.float32))


def test_selection_by_matrix_product_picks_the_best_candidate(trained, data):
    """The candidate chosen per input and class is the one of smallest loss, as decoding every
    candidate for every input would find."""
    model = trained["abs"]
    x, _ = data.load("test")
    x = x[:4]
    search, bank = model.search, model.vaes.bank
    chosen = search.select(bank, x)
    prior = search.prior("cpu", torch.float32)
    with torch.no_grad():
        every = torch.stack([losses(bank, x, z.expand(len(x), 10, 8))[0] for z in prior], -1)
        best = losses(bank, x, chosen)[0]
    torch.testing.assert_close(best, every.amin(-1), rtol=1e-4, atol=1e-3)


def test_confidences_are_the_calibrated_softmax(trained, data):
    model = trained["abs"]
    x, _ = data.load("test")
    with torch.no_grad():
        scores, p = model(x[:5]).double(), model.confidences(x[:5])
    expected = scores.exp() / (scores.exp().sum(1, keepdim=True) + 3.9e-5)
    torch.testing.assert_close(p, expected)
    assert bool((p.sum(1) < 1).all()) and torch.equal(p.argmax(1), scores.argmax(1))


def test_binary_abs_binarizes_and_equalises_its_class_losses(trained, data):
    model = trained["binary-abs"]
    x, y = data.load("test")
    nudged = (x + 0.05 * (x > 0.5).float() - 0.05 * (x <= 0.5).float()).clamp(0, 1)
    with torch.no_grad():
        assert torch.equal(model(x[:4]), model(nudged[:4]))
    assert not torch.equal(model.class_scale, torch.ones(10))
    assert bool((model.class_scale > 0).all())


def test_latent_descent_finds_smaller_l2_adversarials_than_gaussian_noise(trained, data):
    model = advx.InvariantBatches(trained["abs"])
    x, y = data.load("test")
    x, y = x[:16], y[:16]
    threat = advx.ThreatModel(norm="l2", eps=None)
    descent = advx.get_attack("latent-descent", steps=30, step=0.1)(model, x, y, threat)
    # the noise baseline made minimal: per sample the smallest of 12 radii at which it fools
    noise = torch.full((len(x),), torch.inf)
    for eps in torch.linspace(0.5, 12, 12).tolist():
        result = advx.get_attack("gaussian-noise")(
            model, x, y, advx.ThreatModel(norm="l2", eps=eps), seed=0)
        noise = torch.where(result.success & noise.isinf(), eps, noise)
    both = descent.success & noise.isfinite()
    assert int(descent.success.sum()) >= int(noise.isfinite().sum())
    assert int(both.sum()) >= 8
    assert float(descent.distance[both].median()) < float(noise[both].median())


def test_the_binary_variant_snaps_pixels_across_the_threshold(trained, data):
    model = advx.InvariantBatches(trained["binary-abs"])
    x, y = data.load("test")
    x, y = x[:8], y[:8]
    threat = advx.ThreatModel(norm="l2", eps=None)
    plain = advx.get_attack("latent-descent", steps=30, step=0.1)(model, x, y, threat)
    binary = advx.get_attack("latent-descent", steps=30, step=0.1, binary=True)(
        model, x, y, threat)
    assert int(binary.success.sum()) >= int(plain.success.sum()) >= 4
    both = binary.success & plain.success
    assert float(binary.distance[both].median()) < float(plain.distance[both].median())
    changed = binary.x_adv != x
    assert bool(((binary.x_adv[changed] - 0.5).abs() < 1e-6).all())


ABS_SPEC = """
[dataset]
name = "synthetic"
n_train = 400
n_test = 24

[[models]]
name = "blog-cnn"
train = {{ epochs = 1 }}

[[models]]
name = "abs"
latents = 64
steps = 3
train = {{ epochs = 2, batch_size = 64 }}
{attacks}
[protocol]
name = "minimal-perturbation"
"""


def _run(tmp_path, attacks):
    spec = tmp_path / "spec.toml"
    spec.write_text(ABS_SPEC.format(attacks=attacks))
    return CliRunner().invoke(cli, ["run", str(spec), "--out", str(tmp_path / "out"),
                                     "--cache", str(tmp_path / "cache")])


def test_a_gradient_attack_on_abs_is_refused_up_front(tmp_path):
    result = _run(tmp_path, '[[attacks]]\nname = "pgd"\nnorm = "linf"\neps = 0.3\n')
    assert result.exit_code == 2
    assert "offers scores only" in result.output and "estimated-gradient" in result.output
    assert not (tmp_path / "cache").exists()


def test_latent_descent_on_a_model_without_reconstructions_is_refused(tmp_path):
    result = _run(tmp_path, '[[attacks]]\nname = "latent-descent"\nnorm = "l2"\n')
    assert result.exit_code == 2 and "class-reconstructions" in result.output


def test_an_attack_entry_names_an_unknown_model(tmp_path):
    result = _run(tmp_path, '[[attacks]]\nname = "fgsm"\nnorm = "linf"\neps = 0.3\n'
                            'models = ["cnn"]\n')
    assert result.exit_code == 2 and "'cnn'" in result.output and "'blog-cnn'" in result.output


def test_a_run_on_abs_says_it_optimises_at_inference(tmp_path):
    attacks = ('[[attacks]]\nname = "pgd"\nnorm = "linf"\neps = [0.1, 0.3]\nsteps = 5\n'
               'models = ["blog-cnn"]\n\n'
               '[[attacks]]\nname = "estimated-gradient"\nid = "pgd-nes"\nnorm = "linf"\n'
               'eps = [0.1, 0.3]\nattack = { name = "pgd", steps = 3 }\nsamples = 4\n\n'
               '[[attacks]]\nname = "latent-descent"\nnorm = "linf"\nsteps = 10\n'
               'models = ["abs"]\n')
    result = _run(tmp_path, attacks)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    pairs = {(r["model"], r["attack"]) for r in report["results"]}
    assert pairs == {("blog-cnn", "pgd"), ("blog-cnn", "pgd-nes"), ("abs", "pgd-nes"),
                     ("abs", "latent-descent")}
    flagged = {(f["model"], f["check"]) for f in report["sanity"]}
    assert ("abs", "optimisation-at-inference") in flagged
    assert ("blog-cnn", "optimisation-at-inference") not in flagged
    spec = (tmp_path / "out" / "spec.toml").read_text()
    assert 'models = ["abs"]' in spec


def test_inference_records_no_graph_unless_asked(trained, data):
    """Under no_grad or inference mode the scores carry no graph (the latent search turns
    gradients on for its own steps only)."""
    x, _ = data.load("test")
    with torch.no_grad():
        assert not trained["abs"](x[:2]).requires_grad
    with torch.inference_mode():
        assert not trained["abs"](x[:2]).requires_grad
    assert trained["abs"](x[:2].requires_grad_(True)).requires_grad
