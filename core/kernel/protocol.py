"""The protocol interface: what a run measures, and the run context it measures with.

A protocol plugin subclasses :class:`Protocol` and implements :meth:`Protocol.evaluate`, which
gets a :class:`RunContext` (the run's models, attacks, data and adversarial sets) and returns
a JSON-ready dict that joins report.json; :meth:`Protocol.sections` renders its part of
report.md (and so of report.html) from report.json.  A set is asked for by a
:class:`SetRequest`; one that is not a single attack call at one eps (a search over an eps
grid, say) brings a :class:`SetMethod`, computed and cached like every other set.
"""

import typing
from typing import ClassVar

import attrs
import torch

from .budget import returned_worse

# Keys of report.json that the run itself writes: a protocol's results may not use them, and
# no plugin may change them (plugins add keys of their own in advx_run_finished).
RUN_KEYS = frozenset({
    "advx_version", "torch_version", "created", "device", "title", "spec", "dataset",
    "protocol", "models", "seconds", "attack_phase_seconds",
})


def _positive_or_none(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _class_list(instance, attribute, value):
    if (not isinstance(value, list | tuple) or not value
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                       for c in value)):
        raise ValueError(f"classes must be a non-empty list of class indices >= 0, "
                         f"got {value!r}")


def _whole(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{attribute.name} must be a whole number, got {value!r}")


@attrs.frozen(kw_only=True)
class Protocol:
    """Base class of evaluation protocols. Every protocol has these run-wide parameters."""

    name: ClassVar[str]
    limit: int | None = attrs.field(
        default=None, validator=_positive_or_none,
        metadata={"help": "evaluate the first N test samples (default: all)"})
    batch_size: int = attrs.field(
        default=500, validator=_positive_or_none,
        metadata={"help": "samples per attack call (no effect on the results)"})
    seed: int = attrs.field(default=0, validator=_whole,
                            metadata={"help": "base seed of every adversarial set"})
    classes: tuple | None = attrs.field(
        default=None, validator=attrs.validators.optional(_class_list),
        converter=attrs.converters.optional(lambda v: tuple(v) if isinstance(v, list) else v),
        metadata={"help": "evaluate only test samples with these labels (then the limit "
                          "applies); default: every class"})

    def evaluate(self, context):
        """Measure with ``context`` (a :class:`RunContext`); a JSON-ready dict whose keys
        join report.json (none of :data:`RUN_KEYS`)."""
        raise NotImplementedError

    def requests(self, context):
        """The :class:`SetRequest` s :meth:`evaluate` will ask for, if it knows them up front
        (default: none).  A run whose executor computes concurrently obtains them together
        before :meth:`evaluate`, which then reads them; a set left out is obtained when
        asked for, and one listed but never asked for is computed for nothing."""
        return ()

    def sections(self, report):
        """This protocol's part of report.md: Markdown blocks (a block usually starts with a
        ``## `` heading), rendered from ``report`` (the parsed report.json) alone."""
        return []


@attrs.frozen(eq=False)
class Outcome:
    """Per-sample results of one set on one model (tensors on the CPU, in sample order)."""

    pred: torch.Tensor  # the model's prediction on the example
    success: torch.Tensor  # the attack's goal reached (recomputed by the core)
    distance: torch.Tensor  # in the threat model's norm
    queries: torch.Tensor
    eligible: torch.Tensor  # samples the attack is scored on (correct, and y != target)
    seconds: float  # compute time of the set, summed over its parts (also when read back)
    key: str = ""  # the set's cache key
    origin: str = "computed"  # computed, cache or resumed
    reused_batches: int = 0
    # Propagation accounting (advx.kernel.budget): per sample, -1 / nan where the set was
    # computed before advx counted; None where the outcome was not read from a set.
    forwards: torch.Tensor | None = None
    backwards: torch.Tensor | None = None
    best_distance: torch.Tensor | None = None
    out_of_budget: torch.Tensor | None = None

    def propagations(self):
        """Mean forward + backward propagations per eligible sample (None if not counted)."""
        if self.forwards is None or not bool(self.eligible.any()):
            return None
        spent = (self.forwards + self.backwards)[self.eligible]
        return None if bool((spent < 0).any()) else float(spent.double().mean())

    def returned_worse(self, kind):
        """How many eligible samples the attack (of ``kind``) returned a worse point for than
        an adversarial it had queried (None if not counted)."""
        if self.best_distance is None or bool(self.best_distance.isnan().any()):
            return None
        worse = returned_worse(kind, self.success, self.distance, self.best_distance)
        return int((worse & self.eligible).sum())

    def success_rate(self):
        """Fraction of eligible samples the attack succeeded on (None if none is eligible)."""
        n = int(self.eligible.sum())
        return float((self.success & self.eligible).sum()) / n if n else None


class SetMethod:
    """How the rows of a set are computed when it is not one attack call at one eps.

    :meth:`identity` joins the set's identity (so its cache key); :meth:`prepare` runs once
    before any rows are computed (also on resume: it must be deterministic) and returns a
    state; :meth:`compute` returns, for the rows ``start:stop`` of ``job`` (a
    :class:`SetJob`), a dict of tensors ``x_adv``, ``success``, ``distance``, ``pred`` and
    ``queries``.  A row's result must depend on that row (and the state) alone.
    """

    def identity(self):
        raise NotImplementedError

    def prepare(self, job):
        return None

    def compute(self, job, start, stop, state):
        raise NotImplementedError


@attrs.frozen(eq=False)
class SetJob:
    """Everything a set's computation reads: the model, the attack, and the samples.

    ``x``, ``y``, ``targets`` (-1 where untargeted), ``seeds`` (one int64 per sample, from the
    set's key and the sample's test-set index) and ``clean_logits`` are CPU tensors over the
    whole set; :meth:`rows` moves a slice to ``device``.
    """

    model: torch.nn.Module
    attack: object
    threat: object
    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor
    seeds: torch.Tensor
    clean_logits: torch.Tensor
    device: torch.device
    budget: int | None = None  # propagations per sample the core allows the attack

    def rows(self, start, stop):
        """``(x, y, targets or None, seeds)`` of the rows ``start:stop`` on the device."""
        part = [t[start:stop].to(self.device) for t in (self.x, self.y, self.targets,
                                                         self.seeds)]
        return part[0], part[1], part[2] if self.threat.targeted else None, part[3]


@attrs.frozen
class SetRequest:
    """One adversarial set: ``attack`` (an AttackSpec) on ``model`` (a ModelSpec) at ``eps``,
    computed by the attack alone or by ``method`` (a :class:`SetMethod`)."""

    model: object
    attack: object
    eps: float | None = None
    method: SetMethod | None = attrs.field(default=None, eq=False)


class RunContext(typing.Protocol):
    """What :meth:`Protocol.evaluate` measures with; the run implements it.

    Samples are the test samples the protocol's ``limit`` and ``classes`` select, in test-set
    order; every per-sample tensor follows that order.
    """

    models: tuple  # advx ModelSpec entries (id, plugin, defenses, ...)
    attacks: tuple  # advx AttackSpec entries (id, attack, norm, eps, targeted, ...)
    y: torch.Tensor  # labels of the samples (int64, CPU)
    x: torch.Tensor  # the samples (CPU)
    indices: torch.Tensor  # their test-set indices
    bounds: tuple  # the inputs' bounds
    dataset: typing.Any  # the dataset plugin
    tables: dict  # spec tables claimed by plugins: name -> parsed value
    device: torch.device

    def module(self, model):
        """The defended module of a model entry (eval mode, on the device)."""

    def clean_logits(self, model):
        """Logits of the clean samples (CPU)."""

    def clean_correct(self, model):
        """Per sample: the model classifies the clean input correctly."""

    def outcome(self, model, attack, eps):
        """The :class:`Outcome` of an attack entry at ``eps`` on a model entry (memoised)."""

    def obtain(self, request):
        """The set a :class:`SetRequest` names, from the cache or computed: an object with
        ``stored`` (``.arrays``: x_adv, success, distance, pred, queries, y, indices, targets
        as numpy; ``.key``; ``.seconds``), ``origin`` and ``reused_batches``."""

    def robust_correct(self, model, outcome):
        """Per sample: correct on the clean input, and on the adversarial one correct or
        rejected by a detector."""
