"""The training loop: seeded, deterministic on the CPU, cross-entropy unless told otherwise."""

import contextlib

import torch
import torch.nn.functional as F

from ..kernel.errors import UsageError
from ..kernel.progress import no_progress


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


def train_model(module, dataset, recipe, *, device="cpu", progress=no_progress, label=None,
                loss=None):
    """Train ``module`` on ``dataset``'s train split by ``recipe``; returns it in eval mode.

    Batches are drawn by a shuffle seeded from ``recipe.seed`` and dropout is seeded too, so two
    runs on the CPU with the same seed give identical weights. ``label`` names the model in the
    progress display (``progress``: a factory, see :mod:`advx.kernel.progress`).
    ``loss(module, x, y, position)`` replaces the clean cross-entropy of a batch (``position``
    is ``(epoch, batch)``).
    """
    label = label or _label(module, dataset)
    device = resolve_device(device)
    x, y = training_split(dataset, recipe.holdout)
    module.to(device).train()
    optimizer = make_optimizer(module, recipe)
    scheduler = make_scheduler(optimizer, recipe, recipe.epochs * -(-len(x) // recipe.batch_size))
    order = torch.Generator().manual_seed(recipe.seed)
    step = loss or clean_loss
    show = progress is not no_progress
    with seeded(recipe.seed, device):
        for epoch in range(recipe.epochs):
            batches = torch.randperm(len(x), generator=order).split(recipe.batch_size)
            description = f"train {label} epoch {epoch + 1}/{recipe.epochs}"
            with progress(description, len(batches)) as advance:
                for number, index in enumerate(batches):
                    xb, yb = x[index].to(device), y[index].to(device)
                    loss = _train_step(module, optimizer, step(module, xb, yb, (epoch, number)))
                    scheduler.step()
                    advance(status=f"loss {loss.item():.4f}" if show else None)
    return module.eval()


def training_split(dataset, holdout):
    """``dataset``'s training split without its last ``holdout`` samples (the validation
    split, see :func:`validation_split`)."""
    x, y = dataset.load("train")
    _check_holdout(len(x), holdout)
    return x[:len(x) - holdout], y[:len(y) - holdout]


def validation_split(dataset, holdout):
    """The last ``holdout`` samples of ``dataset``'s training split (empty for 0)."""
    x, y = dataset.load("train")
    _check_holdout(len(x), holdout)
    return x[len(x) - holdout:], y[len(y) - holdout:]


def _check_holdout(size, holdout):
    if holdout >= size:
        raise UsageError(f"train recipe: holdout = {holdout} leaves nothing to train on: the "
                         f"training split has {size} samples; allowed: 0 to {size - 1}")


def _label(module, dataset):
    return f"{type(module).__name__} on {getattr(dataset, 'name', type(dataset).__name__)}"


def clean_loss(module, x, y, position):
    """The cross-entropy of a clean batch (the default batch loss)."""
    return F.cross_entropy(module(x), y)


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
