"""Estimated gradients: any gradient attack on a model that offers scores only.

Some models have no useful input gradient (the analysis-by-synthesis model classifies by an
optimisation at inference; its plugin declares ``access = "score"``).  This attack runs a
gradient attack on such a model through :func:`._estimation.estimating`: exact outputs,
input gradients estimated from outputs alone (NES or finite differences).
"""

import math

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, to_float

from ._estimation import ESTIMATORS, estimate_cost, estimating
from ._queries import budget_field, count_field
from .apgd import APGDCE, APGDDLR
from .bim import BIM
from .cw import CarliniWagnerL2, CarliniWagnerLinf
from .ddn import DDN
from .deepfool import DeepFool
from .fgsm import FGSM
from .jsma import JSMA
from .mi_fgsm import MIFGSM
from .pgd import PGD


def _is_gradient_attack(instance, attribute, value):
    if not isinstance(value, advx.Attack):
        raise ValueError(f"{attribute.name} must be a gradient attack table with name = "
                         f"\"<attack>\" and its parameters (e.g. {{ name = \"pgd\", steps = "
                         f"40 }}); got {value!r}")
    if value.access != "gradient":
        raise ValueError(f"{attribute.name} must be a gradient attack (access \"gradient\", "
                         f"e.g. pgd, ddn or cw-l2); {value.name!r} has access "
                         f"{value.access!r} and needs no gradient estimates")


class _FromInner:
    """A class attribute that an instance takes from its inner attack: the class answers
    ``default`` (what the contract and listings read), an instance its attack's value."""

    def __init__(self, default):
        self.default = default

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self.default
        return getattr(instance.attack, self.name)


def _restarted(attack):
    """Passes of a restarted run (pgd, cw-linf): each run ``steps``, plus one comparison
    pass per run when there are restarts."""
    return attack.restarts * (attack.steps + (attack.restarts > 1))


def _jsma(attack, threat, pixels):
    """JSMA's step limit: eps changed pixels (or gamma of them), two per step."""
    changes = (int(threat.eps) if threat.eps is not None
               else math.floor(attack.gamma * pixels))
    return math.ceil(changes * math.ceil(1 / attack.theta - 1e-9) / 2)


# The most model passes (forward, with or without a gradient) each built-in gradient attack
# spends on one sample, from its fields (and the threat, and pixels per image for JSMA).
MOST_PASSES = {
    FGSM: lambda a, threat, pixels: 1,
    BIM: lambda a, threat, pixels: a.steps,
    MIFGSM: lambda a, threat, pixels: a.steps,
    PGD: lambda a, threat, pixels: _restarted(a),
    CarliniWagnerLinf: lambda a, threat, pixels: _restarted(a),
    APGDCE: lambda a, threat, pixels: a.restarts * (a.steps + 1),
    APGDDLR: lambda a, threat, pixels: a.restarts * (a.steps + 1),
    CarliniWagnerL2: lambda a, threat, pixels: a.binary_search_steps * a.steps + 1,
    DDN: lambda a, threat, pixels: a.steps,
    DeepFool: lambda a, threat, pixels: 2 * a.steps + 1,  # a second forward when many fall
    JSMA: _jsma,
}


@attrs.frozen(kw_only=True)
class EstimatedGradient(advx.Attack):
    """A gradient attack on gradients estimated from the model's outputs (score access).

    ``attack`` runs unchanged on a wrapper of the model whose outputs are exact and whose input
    gradients are estimated: by NES (Ilyas et al., 2018: ``samples`` antithetic pairs of
    Gaussian directions at scale ``sigma``, 2 x samples queries per estimate) or by central
    finite differences per input element (2 x elements queries).  The model's backward never
    runs.  Norms, kind, targeted mode and per-sample eps are the inner attack's.  A row's
    directions are seeded by its content alone, so the estimate at a point does not depend
    on the rest of the batch, and neither do results.

    ``queries`` is an *upper bound* per sample, from the inner attack's own per-sample count
    of model passes: each pass is charged one forward query plus one whole estimate (later
    gradients of the same pass reuse its probes and cost nothing).  The wrapper cannot count
    exactly and batch-invariantly (the inner attack hands it subsets of rows that carry no
    identity), so a pass that takes no gradient (PGD's comparison of restarts, DeepFool's
    re-run) is overcharged; where every pass takes one (fgsm, bim, mi-fgsm, ddn, pgd without
    restarts)
    the count is exact.  ``budget`` is enforced statically: a built-in inner attack whose
    most passes (steps, restarts, search rounds; :data:`MOST_PASSES`) times that charge
    exceed it is refused before any query, when the threat is checked (as a spec is read);
    finite differences and JSMA without eps depend on the image size, so the run checks them
    again with it before its first query.
    """

    name = "estimated-gradient"
    norms = frozenset(advx.NORMS)
    access = "score"
    kind = _FromInner("fixed-eps")
    supports_targeted = _FromInner(True)
    per_sample_eps = _FromInner(False)
    revision = _FromInner(1)

    attack: advx.Attack = attrs.field(
        factory=lambda: {"name": "pgd"}, validator=_is_gradient_attack,
        metadata={"help": "the gradient attack to run on estimated gradients: name and "
                          "parameters (e.g. { name = \"ddn\", steps = 50 })",
                  "plugin": "attacks"})
    estimator: str = attrs.field(
        default="nes", validator=attrs.validators.in_(ESTIMATORS),
        metadata={"help": "\"nes\" (antithetic Gaussian directions) or \"finite-differences\" "
                          "(two queries per input element)"})
    samples: int = count_field(50, "NES: antithetic pairs of directions per estimate")
    sigma: float = attrs.field(
        default=0.001, converter=to_float, validator=finite(0, MAX_SCALE, low_open=True),
        metadata={"help": "probe distance on the input scale"})
    budget: int | None = budget_field(
        None, "the most queries per sample (None: no limit); an inner attack that may spend "
              "more is refused before any query")

    def supported_norms(self):
        return self.attack.supported_norms()

    def check_threat(self, threat):
        super().check_threat(threat)
        self.attack.check_threat(threat)
        self._check_budget(threat)  # the image size is not known yet: the least for any

    def run(self, model, x, y, threat, *, targets, rng):
        elements = math.prod(x.shape[1:])
        self._check_budget(threat, elements, _pixels(x))
        wrapped = estimating(model, self.estimator, self.samples, self.sigma)
        out = self.attack.run(wrapped, x, y, threat, targets=targets, rng=rng)
        x_adv, passes = out if isinstance(out, tuple) else (out, None)
        if passes is None:
            passes = self._passes_without_count(threat, x)
        return x_adv, passes * (1 + estimate_cost(self.estimator, self.samples, elements))

    def most_queries(self, threat, elements, pixels):
        """The most queries the inner attack may spend per sample, or None when its passes
        are not known (an attack not built in)."""
        passes = MOST_PASSES.get(type(self.attack))
        if passes is None:
            return None
        cost = estimate_cost(self.estimator, self.samples, elements)
        return passes(self.attack, threat, pixels) * (1 + cost)

    def _check_budget(self, threat, elements=None, pixels=None):
        """Refuse an inner attack that may spend more than ``budget`` queries per sample on
        images of ``elements`` input elements and ``pixels`` pixels (None: not known yet, so
        the least any image needs)."""
        if self.budget is None:
            return
        most = self.most_queries(threat, elements or 1, pixels or 1)
        if most is None:
            raise advx.UsageError(
                f"attack {self.name!r}: budget needs a bound on the passes of "
                f"{self.attack.name!r}, known for the built-in gradient attacks only "
                f"({', '.join(sorted(cls.name for cls in MOST_PASSES))}); leave budget out")
        if most > self.budget:
            raise advx.UsageError(
                f"attack {self.name!r}: {self.attack.name!r} may spend "
                f"{'at least' if elements is None and self._sized(threat) else 'up to'} "
                f"{most} queries per sample "
                f"({_charge(self, elements)}), above budget = {self.budget}; "
                "lower its steps, restarts or search rounds, or samples, or raise budget")

    def _sized(self, threat):
        """Whether the bound depends on the image size: finite differences cost 2 queries per
        input element, JSMA without eps may change a fraction of the pixels."""
        return (self.estimator == "finite-differences"
                or isinstance(self.attack, JSMA) and threat.eps is None)

    def _passes_without_count(self, threat, x):
        """The inner attack returned no query count: charge its most passes, if known."""
        passes = MOST_PASSES.get(type(self.attack))
        if passes is None:
            raise advx.UsageError(
                f"attack {self.name!r}: {self.attack.name!r} reports no queries per sample, "
                "so its estimated-gradient queries cannot be counted")
        most = passes(self.attack, threat, _pixels(x))
        return torch.full((len(x),), most, dtype=torch.int64, device=x.device)


def _charge(attack, elements):
    """How one pass is charged, in words (``elements`` None: the image size is not known)."""
    if attack.estimator == "nes":
        return f"each pass 1 + {2 * attack.samples} queries: nes, samples = {attack.samples}"
    if elements is None:
        return "each pass 1 + 2 x input elements queries: finite differences"
    return f"each pass 1 + {2 * elements} queries: finite differences over {elements} elements"


def _pixels(x):
    """Pixels per image as JSMA counts them (H x W of a 4-D batch, else elements)."""
    return x.shape[2] * x.shape[3] if x.dim() == 4 else math.prod(x.shape[1:])
