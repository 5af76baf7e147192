"""The peers' implementations of advx's algorithms as advx attack plugins (bench only).

Each class wraps one peer attack (Foolbox 3, torchattacks, adv_lib) as an
:class:`advx.MinimizationAttack` or :class:`advx.FixedEpsilonAttack`, so that a run spec can
name it beside advx's own attack and the core treats both alike: it counts every forward and
backward propagation the peer makes through the attacked model (the ledger's hook on the
model, :mod:`advx.kernel.budget`), caps them at the entry's ``propagations`` budget, checks the
returned examples against the threat model and recomputes success.  A peer that calls the
model on a subset of the batch rows (torchattacks' APGD and FAB on the samples not yet fooled,
adv_lib's restarts) declares nothing: the core attributes such rows to the nearest clean
input (L2), which is exact while every perturbation is shorter than half the distance
between two clean digits.

The adapters only translate: the peer's own defaults except where a bench entry sets a
parameter, its output clamped to the bounds (and, for a fixed-eps attack, projected into the
ball: float rounding in a peer's projection must not end the run).  The peers draw from
torch's global generator, seeded 0 before every call, so their results are reproducible but
not batch-invariant.  :data:`PLUGIN` registers the classes (``advx.hookimpl``).
"""

import importlib
import sys
import types
from typing import ClassVar

import advx
import attrs
import torch

TA_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
P_NORMS = {"l0": 0, "l1": 1, "l2": 2, "linf": float("inf")}
# adv_lib.attacks imports two modules that need packages the attacks do not use (torchvision
# for LPIPS, visdom for a logger): empty stand-ins let the package import without them.
ADV_LIB_STUBS = {"adv_lib.distances.lpips": "LPIPS", "adv_lib.utils.visdom_logger":
                 "VisdomLogger"}


def adv_lib_attacks():
    """``adv_lib.attacks`` (ImportError when adv-lib is not installed)."""
    for name, attribute in ADV_LIB_STUBS.items():
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                stub = types.ModuleType(name)
                setattr(stub, attribute, None)
                sys.modules[name] = stub
    return importlib.import_module("adv_lib.attacks")


def available(library):
    """Whether the peer ``library`` ("foolbox", "torchattacks", "adv_lib") imports."""
    try:
        adv_lib_attacks() if library == "adv_lib" else importlib.import_module(library)
    except ImportError:
        return False
    return True


def _count(default, text):
    return attrs.field(default=default, validator=advx.whole(1, 10**6), metadata={"help": text})


def _number(default, text):
    return attrs.field(default=default, converter=advx.to_float,
                       validator=advx.finite(0, 1e6, low_open=True), metadata={"help": text})


class _Peer:
    """The part every adapter shares: ``library`` and ``algorithm`` name the row of the bench,
    ``peer(model, x, y, threat)`` calls the peer on the batch."""

    access: ClassVar[str] = "gradient"
    supports_targeted: ClassVar[bool] = False
    library: ClassVar[str]
    algorithm: ClassVar[str]

    def run(self, model, x, y, threat, *, targets, rng):
        torch.manual_seed(0)
        with torch.enable_grad():
            x_adv = self.peer(model, x, y, threat)
        x_adv = torch.nan_to_num(x_adv.detach().to(x.dtype)).reshape(x.shape)
        x_adv = x_adv.clamp(*threat.bounds)
        return x_adv if threat.eps is None else threat.project(x, x_adv)


def _foolbox_call(attack, model, x, y, eps):
    import foolbox

    fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
    raw, _, _ = attack(fmodel, x, foolbox.criteria.Misclassification(y), epsilons=eps)
    return raw


@attrs.frozen(kw_only=True)
class FoolboxFMN(_Peer, advx.MinimizationAttack):
    """Foolbox's fast minimum-norm attack (``L0/L1/L2/LInfFMNAttack``)."""

    name = "foolbox-fmn"
    norms = frozenset({"l0", "l1", "l2", "linf"})
    library, algorithm = "foolbox", "fmn"
    steps: int = _count(100, "gradient steps")
    binary_search_steps: int = _count(10, "steps of the final search toward the boundary")

    def peer(self, model, x, y, threat):
        import foolbox.attacks as fa

        cls = {"l0": fa.L0FMNAttack, "l1": fa.L1FMNAttack, "l2": fa.L2FMNAttack,
               "linf": fa.LInfFMNAttack}[threat.norm]
        attack = cls(steps=self.steps, binary_search_steps=self.binary_search_steps)
        return _foolbox_call(attack, model, x, y, None)


@attrs.frozen(kw_only=True)
class FoolboxDDN(_Peer, advx.MinimizationAttack):
    """Foolbox's decoupled direction and norm attack (``DDNAttack``)."""

    name = "foolbox-ddn"
    norms = frozenset({"l2"})
    library, algorithm = "foolbox", "ddn"
    steps: int = _count(100, "gradient steps")

    def peer(self, model, x, y, threat):
        import foolbox.attacks as fa

        return _foolbox_call(fa.DDNAttack(steps=self.steps), model, x, y, None)


@attrs.frozen(kw_only=True)
class FoolboxCW(_Peer, advx.MinimizationAttack):
    """Foolbox's Carlini-Wagner L2 attack (``L2CarliniWagnerAttack``)."""

    name = "foolbox-cw-l2"
    norms = frozenset({"l2"})
    library, algorithm = "foolbox", "cw-l2"
    steps: int = _count(10000, "Adam steps per value of c")
    binary_search_steps: int = _count(9, "values of c searched")
    stepsize: float = _number(0.01, "Adam's learning rate")
    initial_const: float = _number(0.001, "the first c")

    def peer(self, model, x, y, threat):
        import foolbox.attacks as fa

        attack = fa.L2CarliniWagnerAttack(
            binary_search_steps=self.binary_search_steps, steps=self.steps,
            stepsize=self.stepsize, initial_const=self.initial_const)
        return _foolbox_call(attack, model, x, y, None)


@attrs.frozen(kw_only=True)
class FoolboxPGD(_Peer, advx.FixedEpsilonAttack):
    """Foolbox's PGD (``L2/LinfProjectedGradientDescentAttack``), random start, step
    ``rel_step_size * eps``."""

    name = "foolbox-pgd"
    norms = frozenset({"l2", "linf"})
    library, algorithm = "foolbox", "pgd"
    steps: int = _count(40, "gradient steps")
    rel_step_size: float = _number(0.025, "step size as a fraction of eps")

    def peer(self, model, x, y, threat):
        import foolbox.attacks as fa

        cls = {"l2": fa.L2ProjectedGradientDescentAttack,
               "linf": fa.LinfProjectedGradientDescentAttack}[threat.norm]
        attack = cls(steps=self.steps, rel_stepsize=self.rel_step_size)
        return _foolbox_call(attack, model, x, y, threat.eps)


def _torchattacks(cls_name, model, **params):
    import torchattacks

    return getattr(torchattacks, cls_name)(model, **params)


@attrs.frozen(kw_only=True)
class TorchattacksFAB(_Peer, advx.MinimizationAttack):
    """torchattacks' FAB (untargeted), its eps (the restarts' radius and the bound it keeps
    results within) set to the box's diameter so that it minimises freely."""

    name = "torchattacks-fab"
    norms = frozenset({"linf", "l2", "l1"})
    library, algorithm = "torchattacks", "fab"
    steps: int = _count(10, "gradient steps")
    restarts: int = _count(1, "runs (the first from x)")

    def peer(self, model, x, y, threat):
        diameter = {"linf": 1.0, "l2": x[0].numel() ** 0.5, "l1": float(x[0].numel())}
        attack = _torchattacks("FAB", model, norm=TA_NORMS[threat.norm],
                               eps=diameter[threat.norm], steps=self.steps,
                               n_restarts=self.restarts, n_classes=_classes(model, x))
        return attack(x, y)


def _classes(model, x):
    with torch.no_grad():
        return model(x[:1]).shape[1]


@attrs.frozen(kw_only=True)
class TorchattacksAPGD(_Peer, advx.FixedEpsilonAttack):
    """torchattacks' APGD on the cross-entropy (``APGD(loss="ce")``)."""

    name = "torchattacks-apgd-ce"
    norms = frozenset({"linf", "l2"})
    library, algorithm = "torchattacks", "apgd-ce"
    steps: int = _count(10, "gradient steps")

    def peer(self, model, x, y, threat):
        return _torchattacks("APGD", model, norm=TA_NORMS[threat.norm], eps=threat.eps,
                             steps=self.steps, loss="ce")(x, y)


@attrs.frozen(kw_only=True)
class TorchattacksAPGDT(_Peer, advx.FixedEpsilonAttack):
    """torchattacks' targeted APGD-DLR over the most likely other classes (``APGDT``)."""

    name = "torchattacks-apgd-t"
    norms = frozenset({"linf", "l2"})
    library, algorithm = "torchattacks", "apgd-t"
    steps: int = _count(10, "gradient steps per target class")
    target_classes: int = _count(9, "most likely other classes attacked in turn")

    def peer(self, model, x, y, threat):
        attack = _torchattacks("APGDT", model, norm=TA_NORMS[threat.norm], eps=threat.eps,
                               steps=self.steps, n_classes=_classes(model, x))
        attack.n_target_classes = self.target_classes  # a constructor-less attribute
        return attack(x, y)


@attrs.frozen(kw_only=True)
class TorchattacksPGD(_Peer, advx.FixedEpsilonAttack):
    """torchattacks' PGD (Linf) and PGDL2, random start, step ``rel_step_size * eps``."""

    name = "torchattacks-pgd"
    norms = frozenset({"linf", "l2"})
    library, algorithm = "torchattacks", "pgd"
    steps: int = _count(10, "gradient steps")
    rel_step_size: float = _number(0.025, "step size as a fraction of eps")

    def peer(self, model, x, y, threat):
        cls = "PGD" if threat.norm == "linf" else "PGDL2"
        return _torchattacks(cls, model, eps=threat.eps, alpha=self.rel_step_size * threat.eps,
                             steps=self.steps)(x, y)


@attrs.frozen(kw_only=True)
class TorchattacksCW(_Peer, advx.MinimizationAttack):
    """torchattacks' Carlini-Wagner L2 (one constant c, no search on it)."""

    name = "torchattacks-cw-l2"
    norms = frozenset({"l2"})
    library, algorithm = "torchattacks", "cw-l2"
    steps: int = _count(50, "Adam steps")
    c: float = _number(1.0, "the constant c")
    lr: float = _number(0.01, "Adam's learning rate")

    def peer(self, model, x, y, threat):
        return _torchattacks("CW", model, c=self.c, steps=self.steps, lr=self.lr)(x, y)


@attrs.frozen(kw_only=True)
class AdvLibFMN(_Peer, advx.MinimizationAttack):
    """adv_lib's fast minimum-norm attack (``fmn``)."""

    name = "adv-lib-fmn"
    norms = frozenset({"l0", "l1", "l2", "linf"})
    library, algorithm = "adv_lib", "fmn"
    steps: int = _count(10, "gradient steps")

    def peer(self, model, x, y, threat):
        return adv_lib_attacks().fmn(model, x, y, norm=P_NORMS[threat.norm], steps=self.steps)


@attrs.frozen(kw_only=True)
class AdvLibDDN(_Peer, advx.MinimizationAttack):
    """adv_lib's DDN (``ddn``, with its 8-bit quantisation of the iterates)."""

    name = "adv-lib-ddn"
    norms = frozenset({"l2"})
    library, algorithm = "adv_lib", "ddn"
    steps: int = _count(100, "gradient steps")

    def peer(self, model, x, y, threat):
        return adv_lib_attacks().ddn(model, x, y, steps=self.steps)


@attrs.frozen(kw_only=True)
class AdvLibFAB(_Peer, advx.MinimizationAttack):
    """adv_lib's FAB (``fab``, untargeted)."""

    name = "adv-lib-fab"
    norms = frozenset({"linf", "l2", "l1"})
    library, algorithm = "adv_lib", "fab"
    steps: int = _count(100, "gradient steps")

    def peer(self, model, x, y, threat):
        return adv_lib_attacks().fab(model, x, y, norm=P_NORMS[threat.norm], n_iter=self.steps)


@attrs.frozen(kw_only=True)
class AdvLibAPGD(_Peer, advx.FixedEpsilonAttack):
    """adv_lib's APGD on the cross-entropy (``apgd(loss_function="ce")``)."""

    name = "adv-lib-apgd-ce"
    norms = frozenset({"linf", "l2"})
    library, algorithm = "adv_lib", "apgd-ce"
    steps: int = _count(100, "gradient steps")

    def peer(self, model, x, y, threat):
        return adv_lib_attacks().apgd(model, x, y, eps=threat.eps, norm=P_NORMS[threat.norm],
                                      n_iter=self.steps, loss_function="ce")


@attrs.frozen(kw_only=True)
class AdvLibAPGDT(_Peer, advx.FixedEpsilonAttack):
    """adv_lib's targeted APGD-DLR over the most likely other classes (``apgd_targeted``)."""

    name = "adv-lib-apgd-t"
    norms = frozenset({"linf", "l2"})
    library, algorithm = "adv_lib", "apgd-t"
    steps: int = _count(100, "gradient steps per target class")
    target_classes: int = _count(9, "most likely other classes attacked in turn")

    def peer(self, model, x, y, threat):
        return adv_lib_attacks().apgd_targeted(
            model, x, y, eps=threat.eps, norm=P_NORMS[threat.norm], n_iter=self.steps,
            num_targets=self.target_classes)


@attrs.frozen(kw_only=True)
class AdvLibPGD(_Peer, advx.FixedEpsilonAttack):
    """adv_lib's Linf PGD (``pgd_linf``), random start, step ``rel_step_size * eps``."""

    name = "adv-lib-pgd"
    norms = frozenset({"linf"})
    library, algorithm = "adv_lib", "pgd"
    steps: int = _count(40, "gradient steps")
    rel_step_size: float = _number(0.025, "step size as a fraction of eps")

    def peer(self, model, x, y, threat):
        return adv_lib_attacks().pgd_linf(model, x, y, ε=threat.eps, steps=self.steps,
                                          relative_step_size=self.rel_step_size)


@attrs.frozen(kw_only=True)
class AdvLibCW(_Peer, advx.MinimizationAttack):
    """adv_lib's Carlini-Wagner L2 (``carlini_wagner_l2``, binary search on c)."""

    name = "adv-lib-cw-l2"
    norms = frozenset({"l2"})
    library, algorithm = "adv_lib", "cw-l2"
    steps: int = _count(10000, "Adam steps per value of c")
    binary_search_steps: int = _count(9, "values of c searched")
    learning_rate: float = _number(0.01, "Adam's learning rate")
    initial_const: float = _number(0.001, "the first c")

    def peer(self, model, x, y, threat):
        return adv_lib_attacks().carlini_wagner_l2(
            model, x, y, learning_rate=self.learning_rate, initial_const=self.initial_const,
            binary_search_steps=self.binary_search_steps, max_iterations=self.steps,
            abort_early=self.steps >= 10)  # its abort check divides by steps // 10


@attrs.frozen(kw_only=True)
class AdvLibSigmaZero(_Peer, advx.MinimizationAttack):
    """adv_lib's sigma-zero (``sigma_zero``)."""

    name = "adv-lib-sigma-zero"
    norms = frozenset({"l0"})
    library, algorithm = "adv_lib", "sigma-zero"
    steps: int = _count(1000, "gradient steps")

    def peer(self, model, x, y, threat):
        return adv_lib_attacks().sigma_zero(model, x, y, num_steps=self.steps)


ATTACKS = (FoolboxFMN, FoolboxDDN, FoolboxCW, FoolboxPGD, TorchattacksFAB, TorchattacksAPGD,
           TorchattacksAPGDT, TorchattacksPGD, TorchattacksCW, AdvLibFMN, AdvLibDDN, AdvLibFAB,
           AdvLibAPGD, AdvLibAPGDT, AdvLibPGD, AdvLibCW, AdvLibSigmaZero)


class _Plugin:
    """The hook implementation that registers :data:`ATTACKS` (pass :data:`PLUGIN` to
    ``advx.host.pluginmanager.add_plugin``)."""

    @advx.hookimpl
    def advx_register_attacks(self, register):
        for cls in ATTACKS:
            register(cls)


PLUGIN = _Plugin()
