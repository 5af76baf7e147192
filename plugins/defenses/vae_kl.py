"""The VAE detector of the blog: the classifier's softmax moves when a VAE redraws the input."""

from typing import ClassVar

import advx
import attrs

from ._generative import Divergence, classifier_for, generator_field


@attrs.frozen(kw_only=True)
class VaeKlDetector(advx.Detector):
    """Rejects inputs whose class probabilities change when a VAE reconstructs them.

    Score: KL(P_x || P_r) = sum_k P_x[k] (log P_x[k] - log P_r[k]), with P_x = softmax(f(x)),
    P_r = softmax(f(VAE(x))), f the classifier (the model built so far) and VAE an
    unconditional generator (``conv-vae`` by default) decoding its latent mean.  The VAE
    only knows the clean data's manifold, so an adversarial input's reconstruction tends to
    fall back to its original class while the input's own softmax does not.  Differentiable
    in x.  Presets ``cpu`` and ``paper`` take the generator's preset of the same name.
    """

    name: ClassVar[str] = "vae-kl-detector"
    presets: ClassVar[dict] = {
        "cpu": {"generator": {"name": "conv-vae", "preset": "cpu"}},
        "paper": {"generator": {"name": "conv-vae", "preset": "paper"}},
    }

    generator: advx.GenerativeModel = generator_field(
        {"name": "conv-vae"}, False, "unconditional generator table, e.g. "
        "{ name = \"conv-vae\", preset = \"cpu\" }")

    def scorer(self, classifier, context):
        vae = context.generator(self.generator, classifier_for(context, classifier))
        return Divergence(classifier, vae, "kl")
