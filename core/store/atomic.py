"""Writing files so that no reader ever sees half of one: a temporary file, then a rename.

Every file advx writes outside the adversarial-set writer (reports, spec.toml, weights,
exports, pictures) goes through :func:`write_file`; the set writer uses :func:`fsync_path`,
:func:`write_at` and the same temporary-file discipline for its HDF5 files.

A write the file system refuses (disk full, quota, read-only, permission) raises
:class:`~advx.kernel.errors.StorageError` naming the file, after the temporary file is removed:
what was stored before is left as it was.
"""

import contextlib
import errno
import os
import pathlib
import uuid

from ..kernel.errors import StorageError

# errors of the file system rather than of advx: the user frees space or picks another folder
STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is reached",
                  errno.EROFS: "the file system is read-only",
                  errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                  errno.EFBIG: "the file is larger than allowed (ulimit -f)"}


def storage_error(exc, path):
    """The :class:`StorageError` for ``exc`` (an OSError) writing ``path``, or None if ``exc``
    is not a file-system refusal."""
    why = STORAGE_ERRNOS.get(getattr(exc, "errno", None))
    if why is None:
        return None
    return StorageError(f"cannot write {str(path)!r}: {why}; free space or choose another "
                        "folder (--cache, --out) and run again: what is stored is kept")


@contextlib.contextmanager
def storage_errors(path):
    """Turn file-system refusals inside the block into a :class:`StorageError` for ``path``."""
    try:
        yield
    except OSError as exc:
        error = storage_error(exc, path)
        if error is None:
            raise
        raise error from None


def write_at(fd, data, offset):
    """Write all of ``data`` (bytes-like) to ``fd`` at ``offset``."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


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
    with storage_errors(path):
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


def write_bytes(path, data):
    """Write ``data`` (bytes-like) to ``path`` atomically, through :func:`write_at`."""
    def fill(temp):
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            write_at(fd, data, 0)
        finally:
            os.close(fd)

    return write_file(path, fill)
