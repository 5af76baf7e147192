"""Per-sample losses on logits beyond the cross-entropy: the logit margin and the DLR loss.

Every function takes logits of shape (N, K) and int64 labels of shape (N,) and returns a
per-sample tensor of shape (N,).  They cost no model evaluation: callers pass the logits they
already computed.
"""

import advx
from advx import fold_rejection


def label_logit(logits, labels):
    """``z_label`` per sample."""
    return logits.gather(1, labels.unsqueeze(1)).squeeze(1)


def best_other_logit(logits, labels):
    """``max_{j != label} z_j`` per sample."""
    return logits.scatter(1, labels.unsqueeze(1), float("-inf")).amax(1)


def best_other_class(logits, labels):
    """``argmax_{j != label} z_j`` per sample: the runner-up class when ``label`` leads
    (never a detector's reject output)."""
    logits = fold_rejection(logits, labels)
    return logits.scatter(1, labels.unsqueeze(1), float("-inf")).argmax(1)


def margin(logits, labels, targeted):
    """The logit margin an attack lowers (Carlini & Wagner's f6 with kappa = 0).

    Untargeted ``z_y - max_{j != y} z_j``; targeted ``max_{j != t} z_j - z_t``.  It is
    negative exactly when the model misclassifies the sample (predicts the target), up to ties.
    Behind a detector the untargeted margin counts rejection as the label
    (:func:`advx.fold_rejection`).
    """
    logits = fold_rejection(logits, labels, targeted)
    gap = label_logit(logits, labels) - best_other_logit(logits, labels)
    return -gap if targeted else gap


def check_classes(logits, needed, attack_name):
    """Raise :class:`advx.UsageError` when the model has fewer than ``needed`` classes."""
    if logits.shape[1] < needed:
        raise advx.UsageError(f"attack {attack_name!r} needs a model with at least {needed} "
                              f"classes, this one has {logits.shape[1]}")


def dlr(logits, y):
    """The Difference of Logits Ratio loss (Croce & Hein, 2020, eq. 3), to be maximised.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with ``z_pi1 >= z_pi2 >= ...`` the
    sorted logits: the margin of the true class, made invariant to shifting and rescaling the
    logits.  Needs at least 3 classes.  Behind a detector rejection counts as the label.
    """
    logits = fold_rejection(logits, y)
    top = logits.topk(3, dim=1).values
    gap = label_logit(logits, y) - best_other_logit(logits, y)
    return -gap / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(logits, y, targets):
    """The targeted DLR loss (Croce & Hein, 2020, eq. 4), to be maximised.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``: raising it lifts the target's
    logit above the true class's.  Needs at least 4 classes.
    """
    top = logits.topk(4, dim=1).values
    gap = label_logit(logits, y) - label_logit(logits, targets)
    return -gap / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)
