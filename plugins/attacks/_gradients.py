"""Pieces shared by the gradient attacks: the objective, its input gradient, steps and starts.

The objective is maximised by every attack here.  Untargeted, it is the cross-entropy of the true
label; targeted, it is minus the cross-entropy of the target label, so that ascending it moves
the prediction toward the target.  Gradients are taken of its sum over the batch, so each
sample's gradient does not depend on the rest of the batch.
"""

import contextlib

import advx
import torch
from advx import fold_rejection
from torch.nn import functional as F

GRADIENT_NORMS = frozenset({"linf", "l2"})

# Samples per forward/backward pass on CPU.  A batch of 500 MNIST digits keeps activations and
# their gradients out of the CPU caches: on 2 cores one pass of madry-cnn took 0.30 s whole and
# 0.22 s in chunks of 128, blog-cnn 0.095 s and 0.057 s.  Other devices take the whole batch.
CPU_CHUNK = 128


def chunk_size(x):
    """Samples per forward/backward pass for the batch ``x``: see :data:`CPU_CHUNK`."""
    return CPU_CHUNK if x.device.type == "cpu" else max(1, len(x))


def gradient_by_chunks(inputs, value_and_extras, backward=True):
    """``(gradient or None, values, *extras)``, each concatenated over chunks of rows.

    For each chunk of rows ``rows`` (a slice; see :func:`chunk_size`) the leaf
    ``inputs[rows]`` is built, ``value_and_extras(leaf, rows)`` returns per-sample values and
    any extra tensors (logits, say), and with ``backward`` the gradient of the values' sum is
    taken w.r.t. the leaf only.  Samples are independent, so the result does not depend on
    the chunking (up to float rounding).  Each chunk declares its rows
    (:func:`advx.for_samples`), so the core counts its passes for the right samples.
    """
    size, chunks = chunk_size(inputs), []
    for start in range(0, len(inputs), size):
        stop = min(start + size, len(inputs))
        rows = slice(start, stop)
        chunk = None if stop - start == len(inputs) else torch.arange(start, stop,
                                                                      device=inputs.device)
        with torch.enable_grad() if backward else torch.no_grad(), declared(chunk):
            leaf = inputs[rows].detach().requires_grad_(backward)
            value, *extras = value_and_extras(leaf, rows)
            grad = torch.autograd.grad(value.sum(), leaf)[0] if backward else None
        chunks.append((grad, value.detach(), *(t.detach() for t in extras)))
    if len(chunks) == 1:
        return chunks[0]
    return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*chunks))


def declared(index):
    """``advx.for_samples(index)``, or for ``index`` None a block that declares nothing (its
    model calls evaluate the rows of the enclosing selection, or of the whole batch)."""
    if index is None:
        return contextlib.nullcontext()
    return advx.for_samples(index)


def objective(logits, labels, targeted):
    """Per-sample value the attack maximises: CE(labels), or -CE(targets) when targeted
    (behind a detector, untargeted, on the logits with the rejection folded into the label:
    :func:`advx.fold_rejection`)."""
    loss = F.cross_entropy(fold_rejection(logits, labels, targeted), labels, reduction="none")
    return -loss if targeted else loss


def fooled(logits, labels, targeted):
    """Per-sample success: predicted as the target (targeted) or not as the label (nor
    rejected by a detector)."""
    pred = fold_rejection(logits, labels, targeted).argmax(1)
    return pred == labels if targeted else pred != labels


def objective_gradient(model, x_adv, labels, targeted):
    """``(gradient of the objective w.r.t. x_adv, logits)``, gradients taken w.r.t. x_adv only."""
    def value(leaf, rows):
        logits = model(leaf)
        return objective(logits, labels[rows], targeted), logits

    grad, _, logits = gradient_by_chunks(x_adv, value)
    return grad, logits


def per_sample(values, like):
    """View a per-sample vector so that it broadcasts against the batch ``like``."""
    return values.view(-1, *[1] * (like.dim() - 1))


def ascent_direction(norm, grad):
    """Steepest-ascent direction of unit ``norm``: sign for linf, normalised gradient for l2.

    A zero gradient gives a zero direction (the sample does not move).
    """
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        lengths = grad.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
        return grad / per_sample(lengths, grad)
    raise ValueError(f"no steepest-ascent step for norm {norm!r}")


def projection_onto(threat, x):
    """A function mapping points into the threat model's ball around ``x`` and its bounds.

    For linf the ball intersected with the box is itself a box: its corners are computed once,
    and each projection is one clamp (fewer full-size passes per step than
    ``threat.project``; equal to it up to one rounding of ``x +- eps``).  Other norms use
    ``threat.project``.
    """
    if threat.norm == "linf":
        lower, upper = threat.bounds
        eps = threat.radius(x)
        low = (x - eps).clamp_min(lower)
        high = (x + eps).clamp_max(upper)
        return lambda x_adv: torch.clamp(x_adv, low, high)
    return lambda x_adv: threat.project(x, x_adv)


def ascent_step(norm, project, x_adv, grad, step_size):
    """One projected step: move ``step_size`` (a number, or per sample shaped like
    ``ThreatModel.radius``) along the ascent direction, then ``project``."""
    direction = ascent_direction(norm, grad)
    if torch.is_tensor(step_size):
        return project(torch.addcmul(x_adv, step_size, direction))
    return project(torch.add(x_adv, direction, alpha=step_size))


def random_start(threat, x, rng):
    """A point drawn uniformly from the threat model's ball around ``x``, clipped to the bounds;
    ``rng`` holds one random stream per sample of ``x``.

    linf: each coordinate uniform in [-eps, eps].  l2: uniform over the ball's volume, i.e. a
    direction uniform on the sphere (a normalised Gaussian) and a radius ``eps * u ** (1 / d)``
    with ``u`` uniform in [0, 1] and ``d`` the number of coordinates per sample.  In the high
    dimensions of images this radius is close to ``eps`` (the sphere holds most of the volume).
    """
    if threat.norm == "linf":
        noise = rng.rand(x.shape[1:], dtype=x.dtype)
        delta = (2 * noise - 1) * threat.radius(x)
    elif threat.norm == "l2":
        gaussian = rng.randn(x.shape[1:], dtype=x.dtype)
        direction = ascent_direction("l2", gaussian)
        u = rng.rand(dtype=x.dtype)
        dims = x[0].numel()
        delta = direction * per_sample(threat.radius(u) * u.pow(1.0 / max(dims, 1)), x)
    else:
        raise ValueError(f"no random start for norm {threat.norm!r}")
    return threat.project(x, x + delta)


def per_sample_where(mask, a, b):
    """``a`` for samples where ``mask`` is True, else ``b`` (mask has shape (N,))."""
    return torch.where(per_sample(mask, a), a, b)
