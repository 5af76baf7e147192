"""Built-in evaluation protocols: robust accuracy, minimal perturbations, curves against eps.

Loaded through the ``advx`` entry point ``builtin-protocols`` like any third-party plugin.
"""

import advx

from .curve import Curve
from .minimal import MinimalPerturbation
from .optimality import Optimality
from .robust import RobustAccuracy


@advx.hookimpl
def advx_register_protocols(register):
    register(RobustAccuracy)
    register(MinimalPerturbation)
    register(Curve)
    register(Optimality)
