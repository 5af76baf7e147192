"""Checks the ``run`` command makes before any work: the folders it writes can be written.

``--out`` and ``--cache`` (default: ``$ADVX_CACHE`` or ``data_cache/``) are created here, so a
path that cannot be created or written is a usage error (exit 2) found before any model trains
or any attack runs, not after the whole evaluation.
"""

import os
import tempfile

from advx.kernel.errors import UsageError
from advx.store.paths import CACHE_ENV, cache_root


def writable_folder(path, option):
    """Create the folder ``path`` (and its parents) if needed and check that files can be
    written in it; a :class:`UsageError` naming ``option`` if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # permissions alone miss read-only mounts
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"{option} {str(path)!r}: cannot create or write this folder "
                         f"({reason}); allowed: a folder you can create and write") from None


def prepare_folders(out_dir, cache_dir):
    """Create (or check) the output folder and the cache root before the run starts."""
    writable_folder(out_dir, "--out")
    prepare_cache(cache_dir)


def prepare_cache(cache_dir):
    """Create (or check) the cache root: ``cache_dir``, else ``$ADVX_CACHE`` or the default."""
    option = "--cache" if cache_dir is not None else (
        f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "the default cache")
    writable_folder(cache_root(cache_dir), option)
