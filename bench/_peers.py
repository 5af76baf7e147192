"""Adapters that run advx's attacks and the peers' (torchattacks, Foolbox, ART) alike.

Every runner is ``run(ctx, x, y, targets, threat) -> x_adv`` on CPU float32 tensors: ``ctx``
is a :class:`Context` holding the model and the peers' wrappers of it, ``targets`` the target
labels of a targeted row (else None).  Runners return the library's own output, unprojected:
the bench's scoring checks it against the threat model.  The peers are imported only here
and only when used (advx itself never imports them); a missing peer drops its rows.
Parameter names are those of the installed versions (torchattacks 3.5.1, Foolbox 3.3.4,
adversarial-robustness-toolbox 1.20.1), read from their sources.
"""

import importlib
import importlib.metadata

import advx
import attrs
import numpy as np
import torch

PEERS = {"torchattacks": "torchattacks", "foolbox": "foolbox",
         "art": "adversarial-robustness-toolbox"}


def available(library):
    """Whether ``library`` ("advx" or a key of :data:`PEERS`) can be imported."""
    if library == "advx":
        return True
    try:
        importlib.import_module(library)
    except ImportError:
        return False
    return True


def versions():
    """``{library: version}`` of advx and the importable peers."""
    found = {"advx": advx.__version__}
    for library, dist in PEERS.items():
        if available(library):
            found[library] = importlib.metadata.version(dist)
    return found


@attrs.define
class Context:
    """The model (eval mode, CPU) and, made on first use, the peers' wrappers of it."""

    model: torch.nn.Module
    shape: tuple
    classes: int
    _fmodel: object = None
    _art: object = None

    @property
    def fmodel(self):
        if self._fmodel is None:
            import foolbox

            self._fmodel = foolbox.PyTorchModel(self.model, bounds=(0.0, 1.0), device="cpu")
        return self._fmodel

    @property
    def art(self):
        if self._art is None:
            from art.estimators.classification import PyTorchClassifier

            self._art = PyTorchClassifier(
                model=self.model, loss=torch.nn.CrossEntropyLoss(), input_shape=self.shape,
                nb_classes=self.classes, clip_values=(0.0, 1.0), device_type="cpu")
        return self._art


def seed_everything(seed=0):
    """Seed torch's and numpy's global generators (the peers draw from them)."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def advx_runner(name, **params):
    """advx's attack ``name``; the core's checks and projection apply, seed 0."""
    attack = advx.get_attack(name, **params)

    def run(ctx, x, y, targets, threat):
        return attack(ctx.model, x, y, threat, targets=targets, seed=0).x_adv

    return run


def ta_runner(cls_name, **params):
    """torchattacks' ``cls_name`` (targeted rows: ``set_mode_targeted_by_label``)."""

    def run(ctx, x, y, targets, threat):
        import torchattacks

        attack = getattr(torchattacks, cls_name)(ctx.model, **params)
        if targets is not None:
            attack.set_mode_targeted_by_label(quiet=True)
        return attack(x, y if targets is None else targets).detach()

    return run


def fb_runner(cls_name, **params):
    """Foolbox's ``cls_name``; its raw output (before Foolbox clips it to eps)."""

    def run(ctx, x, y, targets, threat):
        import foolbox

        attack = getattr(foolbox.attacks, cls_name)(**params)
        criterion = (foolbox.criteria.TargetedMisclassification(targets)
                     if targets is not None else foolbox.criteria.Misclassification(y))
        raw, _, _ = attack(ctx.fmodel, x, criterion, epsilons=threat.eps)
        return raw.detach()

    return run


def art_runner(cls_name, **params):
    """ART's evasion attack ``cls_name`` on numpy arrays, given the true (or target) labels."""

    def run(ctx, x, y, targets, threat):
        from art.attacks import evasion

        attack = getattr(evasion, cls_name)(ctx.art, **params)
        labels = (y if targets is None else targets).numpy()
        out = attack.generate(x.numpy(), y=labels)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    return run


def guarded(ctx, row, lib, errors):
    """The runner of ``lib`` on one batch; an exception is recorded and x returned."""
    run = row.libraries[lib]

    def on_batch(batch):
        bx, by, bt = batch
        seed_everything(0)
        try:
            return run(ctx, bx, by, bt, row.threat).detach().cpu().reshape(bx.shape)
        except Exception as error:  # a peer failing must not end the benchmark
            errors[lib] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
            return bx.clone()

    return on_batch


RUNNERS = {"advx": advx_runner, "torchattacks": ta_runner, "foolbox": fb_runner,
           "art": art_runner}


def runner(library, name, **params):
    """The runner of ``library``'s attack ``name`` with ``params``."""
    return RUNNERS[library](name, **params)


BATCH = 500  # digits per batch, for every library (ART's batch_size too)


@attrs.frozen
class Row:
    """One attack at one budget, run by several libraries.

    ``passes``: the k forward + backward passes of its floor; None for attacks with a variable
    number of passes (their time is reported as a multiple of one pass).  ``n``: digits;
    ``caps``: fewer digits for libraries too slow for ``n`` (they run on the first ones).
    ``slow``: black-box rows and rows slow in the peers, run on ``--slow-models`` only.
    """

    key: str
    title: str
    budget: str
    threat: advx.ThreatModel
    n: int
    passes: int | None
    libraries: dict
    extra_norm: str | None = None
    slow: bool = False
    caps: dict = attrs.Factory(dict)

    def n_of(self, library):
        """Digits that ``library`` runs on."""
        return min(self.n, self.caps.get(library, self.n))


def _row(key, title, budget, threat, n, passes, extra_norm=None, slow=False, **libraries):
    """A :class:`Row`; each library is ``(name, params)`` or ``(name, params, digits)``."""
    runners = {lib: runner(lib, spec[0], **spec[1]) for lib, spec in libraries.items()}
    caps = {lib: spec[2] for lib, spec in libraries.items() if len(spec) > 2}
    return Row(key, title, budget, advx.ThreatModel.parse(threat, targeted=key == "jsma"),
               n, passes, runners, extra_norm, slow, caps)


def rows(big=1000):
    """The benchmark's rows; ``big`` digits for FGSM, PGD, APGD and DeepFool."""
    inf, linf, l2 = np.inf, {"norm": "Linf", "eps": 0.3}, {"batch_size": BATCH}
    pgd = {"eps": 0.3, "eps_step": 0.01, "max_iter": 40, "num_random_init": 1, "verbose": False}
    pgd2 = {"norm": 2, "eps": 2.0, "eps_step": 0.125, "max_iter": 40, "verbose": False}
    # APGD at eps 0.1: at 0.3 every digit falls within a few steps and advx's APGD stops early
    # (the peers do not), which says nothing about its cost per step.
    apgd = {"norm": inf, "eps": 0.1, "eps_step": 0.2, "max_iter": 100, "nb_random_init": 1,
            "batch_size": BATCH, "verbose": False}
    linf1 = {"norm": "Linf", "eps": 0.1}
    cw = {"steps": 100, "initial_const": 1.0}
    return [
        _row("fgsm", "FGSM", "Linf 0.3", "linf:0.3", big, 1,
             advx=("fgsm", {}), torchattacks=("FGSM", {"eps": 0.3}),
             foolbox=("LinfFastGradientAttack", {}),
             art=("FastGradientMethod", {"norm": inf, "eps": 0.3, **l2})),
        _row("pgd-linf", "PGD", "Linf 0.3, 40 x 0.01, random start", "linf:0.3", big, 40,
             advx=("pgd", {"steps": 40, "step_size": 0.01}),
             torchattacks=("PGD", {"eps": 0.3, "alpha": 0.01, "steps": 40}),
             foolbox=("LinfProjectedGradientDescentAttack", {"abs_stepsize": 0.01, "steps": 40}),
             art=("ProjectedGradientDescent", {"norm": inf, **pgd, **l2})),
        _row("pgd-l2", "PGD", "L2 2.0, 40 x 0.125, no random start", "l2:2.0", big, 40,
             advx=("pgd", {"steps": 40, "step_size": 0.125, "random_start": False}),
             torchattacks=("PGDL2", {"eps": 2.0, "alpha": 0.125, "steps": 40,
                                     "random_start": False}),
             foolbox=("L2ProjectedGradientDescentAttack", {"abs_stepsize": 0.125, "steps": 40,
                                                           "random_start": False}),
             art=("ProjectedGradientDescent", {**pgd2, **l2})),
        _row("apgd-ce", "APGD-CE", "Linf 0.1, 100 steps, 1 run", "linf:0.1", big, 100,
             advx=("apgd-ce", {"steps": 100}),
             torchattacks=("APGD", {**linf1, "steps": 100, "loss": "ce"}),
             art=("AutoProjectedGradientDescent", {**apgd, "loss_type": "cross_entropy"})),
        _row("apgd-dlr", "APGD-DLR", "Linf 0.1, 100 steps, 1 run", "linf:0.1", big, 100,
             advx=("apgd-dlr", {"steps": 100}),
             torchattacks=("APGD", {**linf1, "steps": 100, "loss": "dlr"}),
             art=("AutoProjectedGradientDescent",
                  {**apgd, "loss_type": "difference_logits_ratio"})),
        _row("cw-l2", "CW-L2", "c = 1, 100 Adam steps of lr 0.1 (1 x 100)", "l2", 200, 100,
             advx=("cw-l2", {**cw, "binary_search_steps": 1, "lr": 0.1}),
             torchattacks=("CW", {"c": 1.0, "steps": 100, "lr": 0.1}),
             foolbox=("L2CarliniWagnerAttack", {**cw, "binary_search_steps": 1,
                                                "stepsize": 0.1}),
             art=("CarliniL2Method", {"binary_search_steps": 1, "max_iter": 100,
                                      "learning_rate": 0.1, "initial_const": 1.0,
                                      "verbose": False, **l2}, 50)),
        _row("cw-l2-default", "CW-L2", "advx default: 9 x 100, c from 1, lr 0.1", "l2", 100,
             900, advx=("cw-l2", {}),
             foolbox=("L2CarliniWagnerAttack", {**cw, "binary_search_steps": 9,
                                                "stepsize": 0.1})),
        _row("cw-linf", "CW-Linf", "Linf 0.3, 100 steps, kappa 0", "linf:0.3", 500, 100,
             advx=("cw-linf", {"steps": 100})),
        _row("cw-plus", "CW+", "Linf 0.3, 100 steps, kappa 50", "linf:0.3", 500, 100,
             advx=("cw-linf", {"steps": 100, "confidence": 50.0})),
        _row("deepfool", "DeepFool", "L2, 50 steps, overshoot 0.02, 10 classes", "l2", big,
             None, advx=("deepfool", {"steps": 50, "overshoot": 0.02, "candidates": 10}),
             torchattacks=("DeepFool", {"steps": 50, "overshoot": 0.02}, 50),
             foolbox=("L2DeepFoolAttack", {"steps": 50, "overshoot": 0.02, "candidates": 10}),
             art=("DeepFool", {"max_iter": 50, "epsilon": 0.02, "nb_grads": 10,
                               "verbose": False, **l2}, 250)),
        _row("ddn", "DDN", "L2, 100 steps, eps from 1, gamma 0.05", "l2", 200, 100,
             advx=("ddn", {"steps": 100}),
             foolbox=("DDNAttack", {"init_epsilon": 1.0, "steps": 100, "gamma": 0.05})),
        _row("square", "Square", "Linf 0.3, 1,000 queries, p 0.8", "linf:0.3", 100, None,
             slow=True, advx=("square", {"queries": 1000}),
             torchattacks=("Square", {**linf, "n_queries": 1000, "p_init": 0.8}),
             art=("SquareAttack", {"norm": inf, "eps": 0.3, "max_iter": 1000, "p_init": 0.8,
                                   "verbose": False, **l2})),
        _row("jsma", "JSMA", "targeted (y + 1 mod 10), theta 1, gamma 0.1", "l0", 100, None,
             slow=True, advx=("jsma", {"theta": 1.0, "gamma": 0.1}),
             torchattacks=("JSMA", {"theta": 1.0, "gamma": 0.1}, 50),
             art=("SaliencyMapMethod", {"theta": 1.0, "gamma": 0.1, "verbose": False, **l2})),
        _row("one-pixel", "One-pixel", "1 pixel, DE population 400, 10 generations", "l0:1",
             20, None, slow=True, advx=("one-pixel", {"population": 400, "iterations": 10}),
             torchattacks=("OnePixel", {"pixels": 1, "steps": 10, "popsize": 400,
                                        "inf_batch": 400}),
             art=("PixelAttack", {"th": 1, "es": 1, "max_iter": 10, "verbose": False})),
        _row("boundary", "Boundary", "L2, 5,000 queries", "l2", 20, None, slow=True,
             advx=("boundary", {"queries": 5000}),
             foolbox=("BoundaryAttack", {"steps": 4500})),
        _row("salt-and-pepper", "Salt & pepper", "1,000 queries", "l0", 100, None,
             extra_norm="l2", slow=True, advx=("salt-and-pepper", {"steps": 1000}),
             foolbox=("SaltAndPepperNoiseAttack", {"steps": 1000})),
    ]


def select(keys, big):
    """The rows named in ``keys`` (comma-separated; None: all), at most ``big`` digits each."""
    chosen = rows(big)
    if keys:
        unknown = set(keys.split(",")) - {row.key for row in chosen}
        if unknown:
            raise SystemExit(f"unknown attacks: {', '.join(sorted(unknown))}")
        chosen = [row for row in chosen if row.key in keys.split(",")]
    return [attrs.evolve(row, n=min(row.n, big)) for row in chosen]
