"""Locks on set keys: one process computes a set at a time, and a killed one leaves no lock."""

import contextlib
import os
import pathlib


class SetLock:
    """An exclusive lock on one key, held by the process computing that set.

    ``flock`` locks are released by the kernel when the process dies, even by SIGKILL, so a
    killed run never leaves a stale lock behind. The lock file is removed on release; a waiter
    that locked a file removed meanwhile tries again on the new one.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self._fd = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            _lock(fd)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)  # closing releases the lock
        self._fd = None


def _lock(fd):
    try:
        import fcntl
    except ImportError:  # Windows: msvcrt locks one byte, retrying until it is free
        import msvcrt

        while True:
            with contextlib.suppress(OSError):
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
    else:
        fcntl.flock(fd, fcntl.LOCK_EX)


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


