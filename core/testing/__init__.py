"""Test helpers for advx and its plugins: contract suites and Hypothesis strategies.

Needs the ``advx[testing]`` extra (pytest, hypothesis).  Plugin authors subclass the contract of
their plugin's kind in their own tests (:class:`AttackContract`, :class:`DefenseContract`,
:class:`ModelContract`, :class:`DatasetContract`, :class:`ProtocolContract`), setting the
registered name; every built-in plugin passes them (tests/test_contracts.py).
"""

import pytest

pytest.register_assert_rewrite(
    "advx.testing.contract", "advx.testing.contract_accounting",
    "advx.testing.defense_contract", "advx.testing.model_contract",
    "advx.testing.dataset_contract", "advx.testing.protocol_contract",
    "advx.testing.plugin_checks", "advx.testing.strategies")

from .contract import AttackContract  # noqa: E402
from .dataset_contract import DatasetContract  # noqa: E402
from .defense_contract import DefenseContract  # noqa: E402
from .model_contract import ModelContract  # noqa: E402
from .protocol_contract import ProtocolContract  # noqa: E402
from .strategies import image_batches, threat_models  # noqa: E402

__all__ = ["AttackContract", "DatasetContract", "DefenseContract", "ModelContract",
           "ProtocolContract", "image_batches", "threat_models"]
