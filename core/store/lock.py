"""Locks on set keys and weights files: one process computes a set (or trains a model) at a
time, a killed one leaves no lock, and ``advx cache rm``/``gc`` never remove what a running
process is writing."""

import contextlib
import os
import pathlib

from .atomic import storage_errors


class SetLock:
    """An exclusive lock on one key, held by the process computing that set (or training the
    weights of that key).

    ``flock`` locks are released by the kernel when the process dies, even by SIGKILL, so a
    killed run never leaves a stale lock behind. The lock file is removed on release; a waiter
    that locked a file removed meanwhile tries again on the new one. ``on_wait`` is called
    once, before waiting, when another process holds the lock; with ``blocking=False`` the
    lock is not waited for: :attr:`held` tells whether it was taken.
    """

    def __init__(self, path, on_wait=None, blocking=True):
        self.path = pathlib.Path(path)
        self.on_wait, self.blocking = on_wait, blocking
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def __enter__(self):
        with storage_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            with storage_errors(self.path):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _lock(fd, blocking=False):
                if not self.blocking:
                    os.close(fd)
                    return self
                if self.on_wait is not None:
                    self.on_wait()
                    self.on_wait = None
                _lock(fd, blocking=True)
            if _same_file(fd, self.path):
                self._fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc):
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)  # closing releases the lock
        self._fd = None


def _same_file(fd, path):
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _lock(fd, blocking):
    """Lock ``fd`` exclusively; False if ``blocking`` is False and another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: msvcrt locks one byte, retrying until it is free
        import msvcrt

        while True:
            with contextlib.suppress(OSError):
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            if not blocking:
                return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def is_locked(path):
    """True if another process holds the lock at ``path`` (POSIX; False where unknown)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
