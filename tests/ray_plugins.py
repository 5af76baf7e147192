"""Attacks that misbehave on purpose, for the executor tests (importable by Ray workers).

- ``test-kill-once``: the first call anywhere creates ``marker`` and SIGKILLs its own process
  (a worker dying mid-unit); every later call perturbs by a fixed sign pattern;
- ``test-refuse``: every call appends a line to ``marker`` and raises a user error;
- ``test-hold``: every call notes its Ray node in ``folder`` and waits (a bounded barrier)
  until ``folder/release`` exists, then perturbs as ``test-kill-once`` does.
"""

import os
import signal
import tempfile
import time

import advx
import attrs
import torch


@attrs.frozen(kw_only=True)
class KillOnce(advx.FixedEpsilonAttack):
    """Kills its process on its first call (``marker`` absent), then moves by eps."""

    name = "test-kill-once"
    norms = ("linf",)
    access = "gradient"
    marker: str = attrs.field(default="", metadata={"help": "created by the call that dies"})

    def run(self, model, x, y, threat, *, targets, rng):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            sign = torch.where(y[:, None, None, None] % 2 == 0, 1.0, -1.0)
            return (x + threat.eps * sign).clamp(*threat.bounds)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


@attrs.frozen(kw_only=True)
class Refuse(advx.FixedEpsilonAttack):
    """Raises an ``advx.UsageError`` on every call, after noting the call in ``marker``."""

    name = "test-refuse"
    norms = ("linf",)
    access = "gradient"
    marker: str = attrs.field(default="", metadata={"help": "one line per call"})

    def run(self, model, x, y, threat, *, targets, rng):
        with open(self.marker, "a") as file:
            file.write("call\n")
        raise advx.UsageError("test-refuse: this unit is refused on purpose")


@attrs.frozen(kw_only=True)
class Hold(advx.FixedEpsilonAttack):
    """Creates a file ``folder/started-NODE-PID-*`` per call (NODE: the Ray node's id, or
    "local"), then waits until ``folder/release`` exists (at most ``HOLD_SAFETY`` seconds,
    then fails), then moves by eps with the sign pattern of ``test-kill-once``."""

    name = "test-hold"
    norms = ("linf",)
    access = "gradient"
    folder: str = attrs.field(default="", metadata={"help": "the barrier's folder"})

    def run(self, model, x, y, threat, *, targets, rng):
        node = "local"
        try:
            import ray

            if ray.is_initialized():
                node = ray.get_runtime_context().get_node_id()
        except ImportError:
            pass
        os.close(tempfile.mkstemp(prefix=f"started-{node}-{os.getpid()}-", dir=self.folder)[0])
        deadline = time.monotonic() + HOLD_SAFETY
        while not os.path.exists(os.path.join(self.folder, "release")):
            if time.monotonic() > deadline:
                raise AssertionError("test-hold: never released")
            time.sleep(0.01)
        sign = torch.where(y[:, None, None, None] % 2 == 0, 1.0, -1.0)
        return (x + threat.eps * sign).clamp(*threat.bounds)


HOLD_SAFETY = 120  # seconds: bounds a barrier nobody releases


@advx.hookimpl
def advx_register_attacks(register):
    register(KillOnce)
    register(Refuse)
    register(Hold)
