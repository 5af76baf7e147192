"""The attack interface: what every attack plugin subclasses, and what the core checks.

An attack plugin subclasses :class:`FixedEpsilonAttack` (maximise the loss inside the ball of the
threat model) or :class:`MinimizationAttack` (find the smallest adversarial), declares the norms
it supports and the access it needs, and overrides :meth:`Attack.run`.  Callers use
``attack(model, x, y, threat)``, which validates the inputs, runs the attack with the model in
eval mode, checks that every returned example lies inside the threat model (raising
:class:`~advx.ThreatModelViolation` that names the attack otherwise) and recomputes success
from the model's own predictions on the returned examples.
"""

from typing import ClassVar

import attrs
import torch

from .accounting import declared_rows
from .budget import Ledger, ledger_open, returned_worse
from .errors import ThreatModelViolation, UsageError
from .model import attacking, reject_index
from .random import SampleStreams
from .threat import ThreatModel

ACCESS = ("gradient", "score", "decision", "transfer")
KINDS = ("fixed-eps", "minimization")


@attrs.frozen(kw_only=True, eq=False)
class AttackResult:
    """Per-sample outcome of one attack on one batch (all tensors have length N)."""

    x_adv: torch.Tensor
    success: torch.Tensor  # bool: misclassified (untargeted) or classified as the target
    distance: torch.Tensor  # float: distance to the clean input in the threat model's norm
    pred: torch.Tensor  # int64: the model's prediction on x_adv
    queries: torch.Tensor  # int64: model evaluations the attack spent per sample
    # Counted by the core (advx.kernel.budget), per sample; None where nothing was counted
    # (results built outside Attack.__call__).
    forwards: torch.Tensor | None = None  # int64: forward propagations through the model
    backwards: torch.Tensor | None = None  # int64: backward propagations through the model
    best_distance: torch.Tensor | None = None  # best adversarial queried (inf: none)
    out_of_budget: torch.Tensor | None = None  # bool: a propagation was refused by the budget

    def returned_worse(self, kind):
        """Per sample: the attack had queried a better adversarial than the one it returned
        (``kind`` is the attack's: "fixed-eps" or "minimization"); None if not counted."""
        if self.best_distance is None:
            return None
        return returned_worse(kind, self.success, self.distance, self.best_distance)


@attrs.frozen(kw_only=True)
class Attack:
    """Base class of attacks. Subclasses are ``@attrs.frozen(kw_only=True)`` with their params."""

    name: ClassVar[str]
    norms: ClassVar[frozenset] = frozenset()
    access: ClassVar[str] = "gradient"
    kind: ClassVar[str] = "fixed-eps"
    supports_targeted: ClassVar[bool] = True
    # Bumped when a change of the algorithm changes its results for the same parameters; a
    # revision above 1 joins the identity of the attack's cached sets, so older ones are
    # recomputed rather than served.
    revision: ClassVar[int] = 1
    # True when ``run`` accepts a threat model whose eps is a tensor of one radius per sample
    # (linf and l2; see ThreatModel.radius and .select): curve sweeps then probe samples at
    # different eps in one call.
    per_sample_eps: ClassVar[bool] = False
    # What the attack needs from a model beyond its outputs, e.g. "class-reconstructions"
    # (a generative classifier's; see advx.class_reconstructions): a spec runs it only on model
    # entries whose plugin ``offers`` all of it.
    requires: ClassVar[frozenset] = frozenset()

    def run(self, model, x, y, threat, *, targets, rng):
        """Return adversarial inputs for the batch, or ``(x_adv, queries)``.

        :param model: a module in eval mode mapping inputs to logits.
        :param x: clean inputs inside ``threat.bounds``.
        :param y: true labels (int64).
        :param threat: the :class:`ThreatModel`; ``threat.eps`` is None only for minimisation.
        :param targets: target labels when ``threat.targeted``, else None.
        :param rng: :class:`~advx.kernel.random.SampleStreams`, one random stream per sample of
            the batch on x's device, for any randomness (``rng.select(index).rand(...)`` for
            the samples ``index``): draw only from it, so that a sample's result depends on its
            own stream and not on the rest of the batch.
        """
        raise NotImplementedError

    def supported_norms(self):
        """The norms this instance can attack (the class's ``norms`` unless it depends on
        parameters, as a transfer attack's depends on its source attack)."""
        return self.norms

    def check_threat(self, threat):
        """Raise :class:`UsageError` when this attack cannot run under ``threat``."""
        if threat.norm not in self.supported_norms():
            allowed = ", ".join(sorted(self.supported_norms()))
            raise UsageError(f"attack {self.name!r} does not support norm {threat.norm!r}; "
                             f"it supports: {allowed}")
        if threat.targeted and not self.supports_targeted:
            raise UsageError(f"attack {self.name!r} has no targeted mode")
        if self.kind == "fixed-eps" and threat.eps is None:
            raise UsageError(f"attack {self.name!r} needs an eps in its threat model")
        if threat.per_sample and not self.per_sample_eps:
            raise UsageError(f"attack {self.name!r} takes one eps per call, not one per sample")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__call__" in vars(cls):
            raise TypeError(f"{cls.__qualname__} overrides Attack.__call__, where the core checks "
                            "every result against its threat model; override run() instead")

    def __call__(self, model, x, y, threat, *, targets=None, seed=None, budget=None):
        """Attack ``model`` on the batch ``(x, y)`` under ``threat``; see :class:`AttackResult`.

        ``seed`` is an int (row ``i`` draws from the stream of ``(seed, i)``), an int64 tensor
        of one seed per sample (a sample's result then depends on its seed alone, not on the
        rest of the batch), or None (seed 0).  ``budget`` caps the forward plus backward
        propagations per sample (an int, an int64 tensor of one cap per sample, or None: no
        cap); the core counts them and enforces it
        (:mod:`advx.kernel.budget`).  Final: subclasses override :meth:`run`.
        """
        if not isinstance(threat, ThreatModel):
            raise TypeError(f"threat must be an advx.ThreatModel, got {type(threat).__name__}")
        self.check_threat(threat)
        _check_batch(x, y, targets, threat)
        _check_budget(budget, len(x))
        rng = _streams(seed, x)
        ledger = Ledger(model, x, targets if threat.targeted else y, threat,
                        rejected=reject_index(model), budget=budget, base=declared_rows())
        was_training = model.training
        model.eval()
        try:
            with attacking(model), ledger_open(ledger):
                out = self.run(model, x, y, threat, targets=targets, rng=rng)
            x_adv, queries = out if isinstance(out, tuple) else (out, None)
            x_adv = self._enforce(x, x_adv.detach(), threat)
            with torch.no_grad():
                pred = model(x_adv).argmax(1)
        finally:
            model.train(was_training)
        result = self._result(x, y, x_adv, pred, threat, targets, queries, reject_index(model))
        return attrs.evolve(result, forwards=ledger.forwards, backwards=ledger.backwards,
                            best_distance=ledger.best, out_of_budget=ledger.refused)

    def _enforce(self, x, x_adv, threat):
        """The core's check of the returned examples against the threat model."""
        if x_adv.shape != x.shape or x_adv.dtype != x.dtype:
            raise ThreatModelViolation(
                f"attack {self.name!r} returned {tuple(x_adv.shape)} {x_adv.dtype}, "
                f"expected {tuple(x.shape)} {x.dtype}")
        unbounded = attrs.evolve(threat, eps=None)
        if not bool(unbounded.contains(x, x_adv).all()):
            raise ThreatModelViolation(
                f"attack {self.name!r} returned examples outside the input bounds {threat.bounds}")
        # Within float tolerance of the bounds: clip exactly (moves toward x, so stays in the ball).
        x_adv = x_adv.clamp(*threat.bounds)
        inside = threat.contains(x, x_adv)
        if self.kind == "minimization":
            # A minimal adversarial beyond eps is not an adversarial of this threat model.
            keep = inside.view(-1, *[1] * (x.dim() - 1))
            return torch.where(keep, x_adv, x)
        if not bool(inside.all()):
            worst = float(threat.distance(x, x_adv).max())
            raise ThreatModelViolation(
                f"attack {self.name!r} returned examples outside the {threat.norm} ball of "
                f"radius {_describe(threat.eps)} (largest distance {worst:.6g})")
        return x_adv

    def _result(self, x, y, x_adv, pred, threat, targets, queries, rejected):
        success = pred == targets if threat.targeted else pred != y
        if rejected is not None:  # a detector's "rejected" output is no success
            success &= pred != rejected
        if queries is None:
            queries = torch.zeros(len(x), dtype=torch.int64, device=x.device)
        return AttackResult(x_adv=x_adv, success=success, distance=threat.distance(x, x_adv),
                            pred=pred, queries=queries.to(torch.int64))


@attrs.frozen(kw_only=True)
class FixedEpsilonAttack(Attack):
    """Maximises the model's loss inside the ball of radius ``threat.eps``."""

    kind: ClassVar[str] = "fixed-eps"


@attrs.frozen(kw_only=True)
class MinimizationAttack(Attack):
    """Searches the smallest adversarial perturbation; with an eps, success means within it."""

    kind: ClassVar[str] = "minimization"


@attrs.frozen(kw_only=True)
class TransferAttack(FixedEpsilonAttack):
    """Adversarials crafted on a *source* model by a *source attack*, evaluated on the target.

    Subclasses declare two fields: ``source`` (a model table as in a spec: name, parameters,
    ``train`` or ``checkpoint``; or, from Python, a module) and ``source_attack`` (an attack,
    built by the registry from a table with its name and parameters; its field metadata says
    ``{"plugin": "attacks"}``).  Inside ``advx run`` the run takes the source set from the
    cache (computing it if absent, under the same threat model, samples and targets) and
    evaluates it on the target through :class:`Replay`; ``run`` is only used when an attack is
    called directly from Python.
    """

    access: ClassVar[str] = "transfer"

    def supported_norms(self):
        return _source_attack(self).supported_norms()

    def check_threat(self, threat):
        super().check_threat(threat)
        _source_attack(self).check_threat(threat)


def _source_attack(transfer):
    attack = transfer.source_attack
    if not isinstance(attack, Attack):
        raise UsageError(f"attack {transfer.name!r}: source_attack must be an attack; build the "
                         "transfer attack with advx.get_attack(...) so that its table is built "
                         f"by the registry (got {attack!r})")
    return attack


@attrs.frozen(kw_only=True, eq=False)
class Replay(FixedEpsilonAttack):
    """Examples computed elsewhere (a transfer source), evaluated on a model as they are.

    Not a registered plugin: the set pipeline builds one per part of a transfer set
    (:class:`advx.run.pipeline.ReplaySource`). The core checks the examples
    against the threat model like any attack's output; they cost the target no query.
    """

    name: ClassVar[str] = "replay"
    norms: ClassVar[frozenset] = frozenset({"l0", "l1", "l2", "linf"})
    access: ClassVar[str] = "transfer"

    examples: torch.Tensor = attrs.field(metadata={"help": "the examples, aligned with x"})

    def run(self, model, x, y, threat, *, targets, rng):
        return self.examples.to(device=x.device, dtype=x.dtype)


def _describe(eps):
    return f"up to {float(eps.max()):g} (per sample)" if torch.is_tensor(eps) else f"{eps:g}"


def _check_batch(x, y, targets, threat):
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 2:
        raise UsageError("x must be a floating-point tensor of shape (N, C, H, W)")
    if not torch.is_tensor(y) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise UsageError(f"y must be an int64 tensor of shape ({x.shape[0]},)")
    if y.device != x.device:
        raise UsageError(f"x is on {x.device} but y on {y.device}")
    if threat.per_sample and (threat.eps.shape != y.shape or threat.eps.device != x.device):
        raise UsageError(f"a per-sample eps needs one radius per sample on x's device: "
                         f"{x.shape[0]} on {x.device}, got {tuple(threat.eps.shape)} on "
                         f"{threat.eps.device}")
    lower, upper = threat.bounds
    if x.numel() and (float(x.min()) < lower or float(x.max()) > upper):
        raise UsageError(f"x has values outside the threat model's bounds {threat.bounds}")
    if threat.targeted:
        if (targets is None or not torch.is_tensor(targets) or targets.shape != y.shape
                or targets.dtype != torch.int64 or targets.device != x.device):
            raise UsageError("a targeted threat model needs targets: an int64 tensor like y")
    elif targets is not None:
        raise UsageError("targets were given but the threat model is not targeted")


def _check_budget(budget, n):
    if budget is None:
        return
    if torch.is_tensor(budget):
        if budget.dtype != torch.int64 or budget.shape != (n,) or bool((budget < 0).any()):
            raise UsageError(f"a per-sample budget must be an int64 tensor of shape ({n},) "
                             f"holding numbers >= 0, got {budget.dtype} "
                             f"{tuple(budget.shape)}")
        return
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UsageError(f"budget must be a whole number of propagations per sample >= 1, "
                         f"an int64 tensor of one per sample, or None; got {budget!r}")


def _streams(seed, x):
    """The :class:`SampleStreams` of a call: from one int, or from one seed per sample."""
    if torch.is_tensor(seed):
        if seed.dtype != torch.int64 or seed.shape != (len(x),):
            raise UsageError(f"a per-sample seed must be an int64 tensor of shape ({len(x)},), "
                             f"got {seed.dtype} {tuple(seed.shape)}")
        return SampleStreams(seed.to(x.device))
    return SampleStreams.from_seed(0 if seed is None else int(seed), len(x), x.device)
