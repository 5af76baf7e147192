"""Test helpers for advx and its plugins: the attack contract suite and Hypothesis strategies.

Needs the ``advx[testing]`` extra (pytest, hypothesis).  Plugin authors subclass
:class:`AttackContract` in their own tests; see :mod:`advx.testing.contract`.
"""

import pytest

pytest.register_assert_rewrite("advx.testing.contract", "advx.testing.strategies")

from .contract import AttackContract  # noqa: E402
from .strategies import image_batches, threat_models  # noqa: E402

__all__ = ["AttackContract", "image_batches", "threat_models"]
