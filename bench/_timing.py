"""Timing helpers shared by the bench scripts: floors, interleaved rounds, README sections.

The floor of a k-step gradient attack is k forward + backward passes of the model on the same
batch (the input gradient of the cross-entropy, by ``torch.autograd.grad``: ``time_floor`` of
bench/pgd_floor.py).  Timings on shared machines drift by 10% back to back, so every attack
run is bracketed by floor measurements on the same batch, taken right before and right after
it, and compared with their mean.  Several attacks on one batch share the floors between them
(floor, attack 1, floor, attack 2, floor, ...), and the order of the attacks rotates from
batch to batch and round to round so that no library always runs first.
"""

import os
import statistics
import time

import attrs
from _readme import update_section  # noqa: F401  (re-exported for the benches)
from pgd_floor import time_floor


def floor_seconds(model, x, y, passes, timed_passes):
    """Seconds for ``passes`` forward + backward passes on ``(x, y)``.

    ``timed_passes`` passes are run (0: exactly ``passes``) and the time is scaled to
    ``passes``: a pass costs the same on the same batch, bracketing every attack run by two
    full floors would double the run time of the benchmark, and one pass alone (the unit of
    attacks with a variable number of passes) is too short to time.
    """
    run = passes if timed_passes <= 0 else timed_passes
    return time_floor(model, x, y, run) * passes / run


def timed(fn, *args):
    """``(seconds, fn(*args))``."""
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


@attrs.define
class Timing:
    """One library's runs of one attack: seconds per round and attack/floor ratio per run."""

    attack_s: list = attrs.Factory(list)  # per round, summed over batches
    floor_s: list = attrs.Factory(list)
    ratios: list = attrs.Factory(list)  # per (round, batch) run
    outputs: list = attrs.Factory(list)  # per batch, of the last round

    def add(self, round_, batch, seconds, floor, output):
        if len(self.attack_s) == round_:
            self.attack_s.append(0.0), self.floor_s.append(0.0)
            self.outputs = []
        self.attack_s[round_] += seconds
        self.floor_s[round_] += floor
        self.ratios.append(seconds / floor)
        self.outputs.append(output)

    @property
    def seconds(self):
        """Median over rounds of the seconds the attack took over all batches."""
        return statistics.median(self.attack_s)

    @property
    def ratio(self):
        """Median of the per-run attack/floor ratios."""
        return statistics.median(self.ratios)


def interleave(runners, batches, floor, rounds, log=print):
    """Time every runner on every batch, bracketed by floors: ``{label: Timing}``.

    ``runners`` maps labels to ``fn(batch) -> output``; ``floor(batch)`` returns floor
    seconds.  Per round and batch the runners run in a rotated order with a floor measured
    before the first and after each one; a run's floor is the mean of the two around it.
    """
    labels = list(runners)
    timings = {label: Timing() for label in labels}
    turn = 0
    for r in range(rounds):
        for b, batch in enumerate(batches):
            order = labels[turn % len(labels):] + labels[:turn % len(labels)]
            turn += 1
            before = floor(batch)
            for label in order:
                seconds, output = timed(runners[label], batch)
                after = floor(batch)
                timings[label].add(r, b, seconds, (before + after) / 2, output)
                log(f"    {label}: batch {b + 1}/{len(batches)} round {r + 1}: "
                    f"{seconds:.2f} s, x{seconds / ((before + after) / 2):.2f} floor")
                before = after
    return timings


def load_average():
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0
