"""Writing files so that no reader ever sees half of one: a temporary file, then a rename.

Every file advx writes outside the adversarial-set writer (reports, spec.toml, weights,
exports, pictures) goes through :func:`write_file`; the set writer uses :func:`fsync_path` and
the same temporary-file discipline for its HDF5 files.
"""

import contextlib
import os
import pathlib
import uuid


def fsync_path(path):
    """Flush the file at ``path`` (and, for a rename, its folder) to the disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    with contextlib.suppress(OSError):  # some file systems refuse fsync on folders
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temporary_beside(path):
    """A fresh temporary name in ``path``'s folder (``.<name>.<random>.tmp``)."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def write_file(path, write):
    """Create ``path`` atomically: ``write(temp_path)`` fills a temporary file beside it (with
    the umask's permissions), which is flushed to disk and renamed over ``path``.  On any
    error the temporary file is removed and ``path`` is left as it was."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_beside(path)
    try:
        write(temp)
        fsync_path(temp)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_path(path.parent)
    return path


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_file(path, lambda temp: pathlib.Path(temp).write_text(text, encoding="utf-8"))


def write_stream(path, write):
    """Write ``path`` atomically through a binary file object: ``write(handle)``."""
    def fill(temp):
        with open(temp, "xb") as handle:
            write(handle)

    return write_file(path, fill)
