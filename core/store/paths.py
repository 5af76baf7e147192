"""Where advx keeps what it computes: the cache root and its sub-folders."""

import os
import pathlib

CACHE_ENV = "ADVX_CACHE"
DEFAULT_CACHE = "data_cache"


def cache_root(override=None):
    """The cache root: ``override``, else ``$ADVX_CACHE``, else ``data_cache`` (relative)."""
    if override is not None:
        return pathlib.Path(override)
    return pathlib.Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def models_dir(root):
    """The folder of trained model weights under the cache ``root``."""
    return pathlib.Path(root) / "models"
