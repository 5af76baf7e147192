"""advx's built-in defenses: ``binarize`` (a preprocessor with a straight-through gradient),
``adversarial-training`` and ``fast-adversarial-training`` (Madry et al. 2018; Wong et al. 2020)
and ``distillation`` (Papernot et al. 2016); on generative models: ``puvae`` (Hwang et al.
2019), ``magnet-detector`` (Meng & Chen 2017) and ``vae-kl-detector``.

Loaded through the ``advx`` entry point ``builtin-defenses`` like any third-party plugin.
"""

import advx

from .adversarial import AdversarialTraining, FastAdversarialTraining
from .binarize import Binarize
from .distillation import Distillation
from .magnet import MagnetDetector
from .puvae import PuVae
from .vae_kl import VaeKlDetector


@advx.hookimpl
def advx_register_defenses(register):
    """Register the built-in defenses."""
    register(Binarize)
    register(AdversarialTraining)
    register(FastAdversarialTraining)
    register(Distillation)
    register(PuVae)
    register(MagnetDetector)
    register(VaeKlDetector)
