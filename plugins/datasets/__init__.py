"""advx's built-in datasets: ``mnist`` (sample or full IDX), ``fashion-mnist``, ``synthetic``.

Loaded through the ``advx`` entry point ``builtin-datasets`` like any third-party plugin.
"""

import advx

from .fashion import FashionMnistDataset
from .mnist import MnistDataset
from .synthetic import SyntheticDataset


@advx.hookimpl
def advx_register_datasets(register):
    """Register the built-in datasets."""
    register(MnistDataset)
    register(FashionMnistDataset)
    register(SyntheticDataset)
