"""AutoAttack (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"): a fixed ensemble of parameter-free attacks, each
run only on the samples the earlier ones left unbroken.

A sample the model misclassifies at x is broken from the start (x is returned).  The parts then
run in order, each on the samples still unbroken; per sample the first adversarial found is
kept (the worst case over the parts), and a sample no part breaks returns x.  The versions and
their parts, with AutoAttack's settings (``steps`` 100 and ``queries`` 5,000 by default):

- ``standard``: APGD-CE (1 run), APGD-T (9 target classes, 1 run each), FAB-T (9 target
  classes, 1 run each), Square (5,000 queries);
- ``plus``: APGD-CE and APGD-DLR (5 runs each), FAB (untargeted, 5 runs), Square (5,000
  queries), APGD-T and FAB-T (9 target classes, 1 run each);
- ``rand``, for randomised defenses: APGD-CE and APGD-DLR (1 run each) with Expectation over
  Transformation, each step's loss, gradient and logits averaged over ``eot`` = 20 model
  evaluations.

The parts are the registered attacks (apgd-ce, apgd-dlr, apgd-t, fab, square), each called
through the core (``attack(model, x[index], ...)``, inside ``advx.for_samples(index)``) so
that its examples are checked against the threat model and its success recomputed, exactly as
when it runs alone.  Part k draws from its own streams: per sample, the seed
``part_seeds(base, k)`` with ``base`` one spawn of the sample's stream, so a part's result on
a sample equals what that part alone gives the sample with those seeds.

Square runs as in AutoAttack's code: its window fraction halves on the marks of a 10,000-query
run whatever its budget (``resc_schedule=False``; ``schedule_queries`` of advx's square),
where torchattacks' AutoAttack rescales the marks to the 5,000 queries.
"""

import advx
import attrs
import torch
from advx import whole

from ._gradients import fooled, per_sample_where
from .apgd import APGDCE, APGDDLR
from .apgd_t import APGDT
from .fab import FAB
from .square import Square

VERSIONS = ("standard", "plus", "rand")
TARGET_CLASSES = 9  # APGD-T's and FAB-T's targets: the most likely classes after the label
PLUS_RESTARTS = 5  # runs of APGD-CE, APGD-DLR and FAB in the plus version
SQUARE_SCHEDULE = 10000  # AutoAttack's Square keeps the 10,000-query schedule of p
CLEAN = -2  # Breakdown.broken_by: misclassified at x already
ROBUST = -1  # Breakdown.broken_by: no part broke the sample


def part_seeds(base, number):
    """The seeds (int64, one per sample) part ``number`` of a call draws from, given ``base``:
    one spawn of each sample's stream (``advx.SampleStreams(seeds).spawn()`` for a call seeded
    with ``seeds``)."""
    return advx.derive_seeds(base, number)


@attrs.frozen(eq=False)
class Breakdown:
    """What :meth:`AutoAttack.breakdown` found, per sample (tensors of length N)."""

    x_adv: torch.Tensor  # the first adversarial found, or x
    queries: torch.Tensor  # int64: model evaluations spent on the sample
    broken_by: torch.Tensor  # int64: position in parts() of the first part that broke it,
    # CLEAN when misclassified at x, ROBUST when no part broke it


@attrs.frozen(kw_only=True)
class AutoAttack(advx.FixedEpsilonAttack):
    """AutoAttack's ensemble of parameter-free attacks as one attack (standard, plus, rand).

    The module docstring lists each version's parts and their settings.

    Untargeted only (APGD-T and FAB-T pick their own targets).  Costs one forward pass on the
    clean batch, then per part what the part costs on the samples it attacks plus one forward
    pass on its examples (the core's check, which decides what the next part attacks); the
    queries returned are these summed.  Host syncs: one per part to select the unbroken
    samples, besides the parts' own (the core's checks of each part's batch included).
    ``steps`` and ``queries`` default to AutoAttack's values; smaller ones make a cheaper,
    weaker ensemble (for tests), not AutoAttack.
    """

    name = "autoattack"
    norms = frozenset({"linf", "l2"})
    access = "gradient"
    supports_targeted = False

    version: str = attrs.field(
        default="standard", validator=attrs.validators.in_(VERSIONS),
        metadata={"help": "standard: APGD-CE, APGD-T, FAB-T, Square; plus: APGD-CE, APGD-DLR, "
                          "FAB (5 restarts each), Square, APGD-T, FAB-T; rand: APGD-CE and "
                          "APGD-DLR with Expectation over Transformation (randomised defenses)"})
    steps: int = attrs.field(
        default=100, validator=whole(1),
        metadata={"help": "steps of every APGD and FAB run (AutoAttack: 100)"})
    queries: int = attrs.field(
        default=5000, validator=whole(1),
        metadata={"help": "Square's query budget per sample (AutoAttack: 5,000)"})
    eot: int = attrs.field(
        default=20, validator=whole(1),
        metadata={"help": "version rand: model evaluations averaged per APGD step "
                          "(AutoAttack: 20); the other versions do not use it"})

    def check_threat(self, threat):
        if threat.targeted and threat.norm in self.supported_norms():
            raise advx.UsageError(f"attack {self.name!r} evaluates untargeted robustness (its "
                                  "APGD-T and FAB-T choose their own targets); for a given "
                                  "target use 'apgd-ce', 'apgd-dlr', 'fab' or 'square'")
        super().check_threat(threat)

    def parts(self):
        """The version's attacks in AutoAttack's order: ``((label, attack), ...)``."""
        steps = self.steps
        if self.version == "rand":
            return (("apgd-ce", APGDCE(steps=steps, eot=self.eot)),
                    ("apgd-dlr", APGDDLR(steps=steps, eot=self.eot)))
        targeted = (("apgd-t", APGDT(steps=steps, target_classes=TARGET_CLASSES)),
                    ("fab-t", FAB(steps=steps, target_classes=TARGET_CLASSES)))
        square = ("square", Square(queries=self.queries, schedule_queries=SQUARE_SCHEDULE))
        if self.version == "standard":
            return (("apgd-ce", APGDCE(steps=steps)), targeted[0], targeted[1], square)
        return (("apgd-ce", APGDCE(steps=steps, restarts=PLUS_RESTARTS)),
                ("apgd-dlr", APGDDLR(steps=steps, restarts=PLUS_RESTARTS)),
                ("fab", FAB(steps=steps, restarts=PLUS_RESTARTS)), square, *targeted)

    def run(self, model, x, y, threat, *, targets, rng):
        found = self.breakdown(model, x, y, threat, rng=rng)
        return found.x_adv, found.queries

    def breakdown(self, model, x, y, threat, *, rng):
        """:meth:`run`'s work, with the part that broke each sample (:class:`Breakdown`).

        Called by ``run``; from Python, call it as the core calls ``run`` (model in eval
        mode) to see which part broke what; ``attack(model, x, y, threat)`` gives the checked
        :class:`advx.AttackResult`.
        """
        with torch.no_grad():
            broken = fooled(model(x), y, False)
        queries = torch.ones(len(x), dtype=torch.int64, device=x.device)
        broken_by = torch.where(broken, CLEAN, ROBUST).to(device=x.device, dtype=torch.int64)
        x_adv = x.clone()
        base = rng.spawn()
        for number, (_, attack) in enumerate(self.parts()):
            index = (~broken).nonzero().squeeze(1)  # the host sync of this part
            if index.numel() == 0:
                break
            with advx.for_samples(index):  # the part's calls are on these samples only
                result = attack(model, x[index], y[index], threat,
                                seed=part_seeds(base[index], number))
            queries[index] += result.queries + 1  # + the core's check of its examples
            x_adv[index] = per_sample_where(result.success, result.x_adv, x[index])
            broken[index] = result.success
            broken_by[index] = torch.where(result.success, number, ROBUST)
        return Breakdown(x_adv, queries, broken_by)
