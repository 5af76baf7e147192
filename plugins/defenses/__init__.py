"""advx's built-in defenses: ``binarize`` (a preprocessor with a straight-through gradient),
``adversarial-training`` and ``fast-adversarial-training`` (Madry et al. 2018; Wong et al. 2020)
and ``distillation`` (Papernot et al. 2016).

Loaded through the ``advx`` entry point ``builtin-defenses`` like any third-party plugin.
"""

import advx

from .adversarial import AdversarialTraining, FastAdversarialTraining
from .binarize import Binarize
from .distillation import Distillation


@advx.hookimpl
def advx_register_defenses(register):
    """Register the built-in defenses."""
    register(Binarize)
    register(AdversarialTraining)
    register(FastAdversarialTraining)
    register(Distillation)
