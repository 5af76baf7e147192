"""Hypothesis strategies for advx's types: threat models and image batches.

Use them in property tests of attacks, defenses and protocols::

    from hypothesis import given
    from advx.testing.strategies import image_batches, threat_models

    @given(x=image_batches(), threat=threat_models(norms=("linf", "l2")))
    def test_something(x, threat): ...
"""

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..kernel.threat import NORMS, ThreatModel

# Largest eps drawn per norm for inputs in [0, 1] with a few hundred coordinates: from a
# perceptible linf change up to L1/L2/L0 balls that reach well into the box.
MAX_EPS = {"linf": 1.0, "l2": 4.0, "l1": 16.0, "l0": 16}


def eps_values(norm):
    """A strategy for radii of ``norm`` balls: floats, or whole pixel counts for l0."""
    if norm == "l0":
        return st.integers(0, MAX_EPS["l0"])
    return st.floats(0.0, MAX_EPS[norm], allow_nan=False, width=32)


@st.composite
def threat_models(draw, norms=NORMS, bounded=True, targeted=False, bounds=(0.0, 1.0)):
    """Valid :class:`~advx.ThreatModel` instances.

    :param norms: the norms to draw from.
    :param bounded: always draw an eps (True), or sometimes None for minimal-perturbation ones.
    :param targeted: a bool, or a strategy of bools.
    :param bounds: the input bounds of every drawn threat model.
    """
    norm = draw(st.sampled_from(tuple(norms)))
    eps_strategy = eps_values(norm)
    if not bounded:
        eps_strategy = st.none() | eps_strategy
    flag = draw(targeted) if isinstance(targeted, st.SearchStrategy) else bool(targeted)
    return ThreatModel(norm=norm, eps=draw(eps_strategy), bounds=bounds, targeted=flag)


@st.composite
def image_batches(draw, max_n=4, channels=(1, 3), sizes=range(1, 9), min_n=1):
    """float32 tensors of shape (N, C, H, W) with values in [0, 1], edges 0 and 1 included.

    :param max_n: the largest batch size (``min_n`` the smallest).
    :param channels: the channel counts to draw from.
    :param sizes: the heights and widths to draw from (each drawn independently).
    """
    n = draw(st.integers(min_n, max_n))
    shape = (n, draw(st.sampled_from(tuple(channels))),
             draw(st.sampled_from(tuple(sizes))), draw(st.sampled_from(tuple(sizes))))
    elements = st.floats(0.0, 1.0, width=32, allow_nan=False, allow_subnormal=False)
    array = draw(hnp.arrays(np.float32, shape, elements=elements))
    return torch.from_numpy(array)
