"""MagNet's detectors (Meng & Chen, 2017): reconstruction error and divergence of softmaxes."""

from typing import ClassVar

import advx
import attrs
from advx import is_finite_number
from attrs import validators as v

from ._generative import Divergence, Purifier, ReconstructionError, classifier_for, generator_field

DEFAULT_GENERATORS = {"dae": "magnet-dae", "puvae": "cvae"}


def _positive(instance, attribute, value):
    if not is_finite_number(value) or not value > 0:
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class MagnetDetector(advx.Detector):
    """MagNet's detector: rejects inputs an autoencoder reconstructs badly.

    ``score = "error"`` (detector I): the mean over pixels of ``|x - AE(x)|^p``; ``score =
    "jsd"`` (detector II): the Jensen-Shannon divergence between the classifier's softmax at
    ``temperature`` on ``x`` and on ``AE(x)`` (the classifier is the model built so far).
    ``AE`` is ``reconstruction = "dae"``: an unconditional generator's reconstruction
    (``magnet-dae`` by default), or ``"puvae"``: PuVAE's purification by a class-conditional
    generator (``cvae`` by default; the reconstruction closest to x among all classes).  MagNet
    used p = 2 and p = 1 for its two MNIST autoencoders and T = 10 and 40 on CIFAR-10.  The
    score is differentiable in x, so adaptive attacks can lower it.  Presets ``cpu`` and
    ``paper`` use ``magnet-dae`` with its preset of the same name (for ``reconstruction =
    "puvae"`` give ``generator = { name = "cvae", preset = "cpu" }``).
    """

    name: ClassVar[str] = "magnet-detector"
    presets: ClassVar[dict] = {
        "cpu": {"generator": {"name": "magnet-dae", "preset": "cpu"}},
        "paper": {"generator": {"name": "magnet-dae", "preset": "paper"}},
    }

    score: str = attrs.field(default="error", validator=v.in_(("error", "jsd")), metadata={
        "help": "error (|x - AE(x)|^p, detector I) or jsd (divergence of softmaxes, II)"})
    p: int = attrs.field(default=1, validator=v.in_((1, 2)), metadata={
        "help": "exponent of the reconstruction error: 1 or 2"})
    temperature: float = attrs.field(default=10.0, validator=_positive, metadata={
        "help": "softmax temperature of the jsd score"})
    reconstruction: str = attrs.field(default="dae", validator=v.in_(("dae", "puvae")),
                                      metadata={"help": "dae (an autoencoder's output) or "
                                                        "puvae (PuVAE's purification)"})
    generator: advx.GenerativeModel | None = generator_field(
        None, None, "generator table (default: { name = \"magnet-dae\" } for dae, "
        "{ name = \"cvae\" } for puvae)")

    def __attrs_post_init__(self):
        wanted = self.reconstruction == "puvae"
        if self.generator is not None and type(self.generator).conditional != wanted:
            kind = "a class-conditional" if wanted else "an unconditional"
            raise ValueError(
                f"reconstruction = {self.reconstruction!r} needs {kind} generator (e.g. "
                f"{DEFAULT_GENERATORS[self.reconstruction]!r}); {type(self.generator).name!r} "
                f"is {'' if type(self.generator).conditional else 'un'}conditional")

    def scorer(self, classifier, context):
        plugin = self.generator or context.create(
            "generators", DEFAULT_GENERATORS[self.reconstruction])
        generator = context.generator(plugin, classifier_for(context, classifier))
        autoencoder = Purifier(generator) if self.reconstruction == "puvae" else generator
        if self.score == "jsd":
            return Divergence(classifier, autoencoder, "jsd", self.temperature)
        return ReconstructionError(autoencoder, self.p)
