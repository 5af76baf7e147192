"""The standard training recipe: a seeded, deterministic (on CPU) cross-entropy training loop."""

import contextlib
from collections.abc import Mapping

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v

from ..kernel.errors import ParameterError, UsageError
from .progress import progress_bar

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine")


def _checked(*validators):
    """An attrs validator that reports failures as :class:`ParameterError`."""
    inner = v.and_(*validators)

    def check(instance, attribute, value):
        try:
            inner(instance, attribute, value)
        except (TypeError, ValueError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            raise ParameterError(f"train recipe: {message}") from None

    return check


def _adversary_table(instance, attribute, value):
    if value is None:
        return
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise TypeError("'adversary' must be a table with the attack's name, norm and eps, e.g. "
                        "{ name = \"pgd\", norm = \"linf\", eps = 0.3, steps = 7 }")


def _not_bool(instance, attribute, value):
    if isinstance(value, bool):
        raise TypeError(f"'{attribute.name}' must be a number, not the bool {value!r}")


_INT = v.and_(_not_bool, v.instance_of(int))
_NUMBER = v.and_(_not_bool, v.instance_of((int, float)))


@attrs.frozen(kw_only=True)
class TrainRecipe:
    """How to train a model: optimizer, learning rate, epochs, batch size and seed.

    ``lr_schedule`` "cosine" anneals the learning rate from ``lr`` to 0 over all batches.
    ``adversary`` (a table: attack ``name``, ``norm``, ``eps``, the attack's parameters and an
    optional ``clean_weight``) trains on that attack's adversarials of each batch instead of the
    clean batch (adversarial training, Madry et al. 2018); see :mod:`advx.adversarial_training`.
    """

    optimizer: str = attrs.field(default="adam", validator=_checked(v.in_(OPTIMIZERS)))
    lr: float = attrs.field(default=1e-3, validator=_checked(_NUMBER, v.gt(0)))
    epochs: int = attrs.field(default=5, validator=_checked(_INT, v.gt(0)))
    batch_size: int = attrs.field(default=128, validator=_checked(_INT, v.gt(0)))
    weight_decay: float = attrs.field(default=0.0, validator=_checked(_NUMBER, v.ge(0)))
    momentum: float = attrs.field(default=0.9, validator=_checked(_NUMBER, v.ge(0), v.lt(1)))
    seed: int = attrs.field(default=0, validator=_checked(_INT, v.ge(0)))
    lr_schedule: str = attrs.field(default="constant", validator=_checked(v.in_(LR_SCHEDULES)))
    adversary: dict | None = attrs.field(default=None, validator=_checked(_adversary_table))

    @classmethod
    def from_dict(cls, d, base=None):
        """``base`` (default: the defaults) with the fields named in ``d`` replaced."""
        base = cls() if base is None else base
        if not isinstance(d, Mapping):
            raise ParameterError(f"train recipe must be a table of fields, not {d!r}")
        allowed = [field.name for field in attrs.fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ParameterError(f"train recipe has no field {', '.join(map(str, unknown))}; "
                                 f"allowed: {', '.join(allowed)}")
        return attrs.evolve(base, **d)


def resolve_device(device):
    """A ``torch.device``; ``"auto"`` picks CUDA when it is available."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") \
            from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' was asked for but torch sees no CUDA device")
    return device


def make_optimizer(module, recipe):
    """The optimizer named by ``recipe`` over the parameters of ``module``."""
    params = module.parameters()
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def make_scheduler(optimizer, recipe, total_steps):
    """The per-batch learning-rate schedule of ``recipe`` over ``total_steps`` batches."""
    if recipe.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


@contextlib.contextmanager
def seeded(seed, device="cpu"):
    """Run a block with torch's random state seeded by ``seed``, restoring it afterwards."""
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def train_model(module, dataset, recipe, *, device="cpu", progress=True, label=None,
                loss=None):
    """Train ``module`` on ``dataset``'s train split by ``recipe``; returns it in eval mode.

    Batches are drawn by a shuffle seeded from ``recipe.seed`` and dropout is seeded too, so two
    runs on the CPU with the same seed give identical weights. ``label`` names the model in the
    progress bar.  ``loss(module, x, y, position)`` replaces the recipe's batch loss (see
    :func:`batch_loss`; ``position`` is ``(epoch, batch)``).
    """
    label = label or _label(module, dataset)
    device = resolve_device(device)
    x, y = dataset.load("train")
    module.to(device).train()
    optimizer = make_optimizer(module, recipe)
    scheduler = make_scheduler(optimizer, recipe, recipe.epochs * -(-len(x) // recipe.batch_size))
    order = torch.Generator().manual_seed(recipe.seed)
    step = loss or batch_loss(recipe, dataset.info.bounds)
    with seeded(recipe.seed, device):
        for epoch in range(recipe.epochs):
            batches = torch.randperm(len(x), generator=order).split(recipe.batch_size)
            description = f"train {label} epoch {epoch + 1}/{recipe.epochs}"
            with progress_bar(description, len(batches), enabled=progress) as advance:
                for number, index in enumerate(batches):
                    xb, yb = x[index].to(device), y[index].to(device)
                    loss = _train_step(module, optimizer, step(module, xb, yb, (epoch, number)))
                    scheduler.step()
                    advance(status=f"loss {loss.item():.4f}" if progress else None)
    return module.eval()


def _label(module, dataset):
    return f"{type(module).__name__} on {getattr(dataset, 'name', type(dataset).__name__)}"


def batch_loss(recipe, bounds):
    """``f(module, x, y, position) -> loss`` of one batch: cross-entropy on the clean batch, or
    on adversarials of it when the recipe has an adversary."""
    if recipe.adversary is None:
        return lambda module, x, y, position: F.cross_entropy(module(x), y)
    from .adversarial import adversarial_loss  # needs the registry: imported late

    return adversarial_loss(recipe, bounds)


def _train_step(module, optimizer, loss):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def evaluate_accuracy(module, x, y, batch_size=1000, device="cpu"):
    """Fraction of ``x`` that ``module`` classifies as ``y`` (eval mode, inference mode)."""
    if len(x) == 0:
        raise UsageError("evaluate_accuracy needs at least one sample")
    device = resolve_device(device)
    was_training = module.training
    module.to(device).eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.inference_mode():
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            correct += (module(xb.to(device)).argmax(1) == yb.to(device)).sum()
    module.train(was_training)
    return correct.item() / len(x)
