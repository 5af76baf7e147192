"""The ``nearest-neighbour`` model: 1-nearest-neighbour in L2 on the training split.

The baseline of Schott et al. (2019, the ABS paper).  The module stores training images and
labels as buffers; its logits come from squared L2 distances, so gradient attacks reach it.
"""

from typing import ClassVar

import advx
import attrs
import torch
from advx import MAX_SCALE, finite, to_float
from torch import nn

# Training images per block of the distance computation: a batch of B inputs holds one
# (B, TRAIN_BLOCK) block of distances at a time (with autograd, one per block until backward).
TRAIN_BLOCK = 4096
EMPTY = -1  # the label of an unused row of the stored set (a cap above the split's size)


def _optional_positive_int(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise advx.ParameterError(f"{attribute.name} must be an integer >= 1 or None, "
                                  f"got {value!r}")


@attrs.frozen(kw_only=True)
class NearestNeighbour(advx.ModelPlugin):
    """1-nearest-neighbour in L2 on the training split; logits -scale * (squared distance to
    each class's nearest stored image), so the argmax is the 1-NN label.

    Training stores the split (no gradient steps): all of it, or with ``max_train`` a
    class-balanced subset drawn with the recipe's seed (round robin over the classes, each in
    a random order, until ``max_train`` images are taken).  The stored set is the module's
    buffers, so the weights cache holds it.  Its row count must be known when the module is
    built, before the cached weights are loaded into it: with ``max_train`` the module always
    holds ``max_train`` rows (unused ones, when the split is smaller, carry label -1 and are
    ignored); without, it is sized by the training split only after training, and its buffers
    are declared resizable (``advx_resizable``) so the weights store loads any size.
    Untrained, the rows are seeded uniform noise labelled 0, 1, ..., a random classifier.
    """

    name: ClassVar[str] = "nearest-neighbour"

    max_train: int | None = attrs.field(default=None, validator=_optional_positive_int,
                                        metadata={"help": (
                                            "training images to store, a class-balanced "
                                            "seeded subset (default: all of the split)")})
    scale: float = attrs.field(
        default=1.0, converter=to_float, validator=finite(0, MAX_SCALE, low_open=True),
        metadata={"help": "logits are -scale * squared L2 distance (lower: softer softmax)"})

    def build(self, info):
        rows = self.max_train or info.num_classes
        lower, upper = info.bounds
        images = lower + (upper - lower) * torch.rand(rows, *info.shape)
        labels = torch.arange(rows) % info.num_classes
        return NearestNeighbourModule(images, labels, info, self.scale)

    def train(self, module, recipe, context):
        """Store the training split (or ``max_train`` of it) in ``module``: no gradient steps."""
        x, y = context.training_split(recipe)
        if self.max_train is not None:
            chosen = balanced_subset(y, self.max_train, module.num_classes, recipe.seed)
            x, y = x[chosen], y[chosen]
        module.store(x, y, rows=self.max_train)
        return module


def balanced_subset(labels, count, num_classes, seed):
    """Indices (ascending) of ``count`` samples taken round robin over the classes.

    Each class's samples are visited in an order seeded by ``seed``; the subset holds the
    first sample of every class, then the second, and so on (a class that runs out drops out),
    so no class gets more than one sample above any other that still has some.
    """
    if count >= len(labels):
        return torch.arange(len(labels))
    shuffled = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    by_class = torch.argsort(labels[shuffled], stable=True)
    counts = torch.bincount(labels, minlength=num_classes)
    starts = counts.cumsum(0) - counts
    ranks = torch.empty_like(by_class)
    ranks[by_class] = torch.arange(len(labels)) - starts[labels[shuffled][by_class]]
    turn = ranks * num_classes + labels[shuffled]  # the round in which a sample is taken
    return shuffled[torch.argsort(turn)[:count]].sort().values


class NearestNeighbourModule(nn.Module):
    """Logits ``z_c(x) = -scale * min_{i: t_i = c} ||x - t_i||^2`` over the stored images.

    Squared distances are ``||x||^2 + ||t||^2 - 2 x.t`` by matrix products over blocks of
    :data:`TRAIN_BLOCK` stored images, clamped at 0 (the expansion can round below it).  A
    class with no stored image gets the distance ``D * (upper - lower)^2 + 1`` (D: values per
    input), above any between two inputs in the bounds, so logits stay finite.
    """

    advx_resizable = ("images", "labels")  # sized by the training split (advx's weights store)

    def __init__(self, images, labels, info, scale):
        super().__init__()
        self.num_classes, self.scale = info.num_classes, scale
        lower, upper = info.bounds
        self.far = images[0].numel() * (upper - lower) ** 2 + 1.0
        self.register_buffer("images", images)
        self.register_buffer("labels", labels)

    def store(self, images, labels, rows=None):
        """Hold ``images`` and ``labels``, padded with unused rows up to ``rows`` if given."""
        images = images.to(self.images)
        labels = labels.to(device=self.labels.device, dtype=self.labels.dtype)
        if rows is not None and rows > len(images):
            images = torch.cat([images, images.new_zeros(rows - len(images), *images.shape[1:])])
            labels = torch.cat([labels, labels.new_full((rows - len(labels),), EMPTY)])
        self.images, self.labels = images.clone(), labels.clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The stored set takes the size of the one loaded (torch.nn's load_state_dict).
        for name in ("images", "labels"):
            incoming = state_dict.get(prefix + name)
            if incoming is not None and incoming.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(incoming, device=self.images.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x):
        flat = x.flatten(1)
        squared = flat.pow(2).sum(1, keepdim=True)
        # an unused row (label -1) goes to an extra column, dropped at the end
        nearest = flat.new_full((len(x), self.num_classes + 1), self.far)
        for start in range(0, len(self.images), TRAIN_BLOCK):
            block = self.images[start:start + TRAIN_BLOCK].flatten(1).to(flat.dtype)
            labels = self.labels[start:start + TRAIN_BLOCK]
            distances = (squared + block.pow(2).sum(1) - 2 * flat @ block.T).clamp_min(0)
            columns = torch.where(labels == EMPTY, self.num_classes, labels)
            nearest = nearest.scatter_reduce(1, columns.expand(len(x), -1), distances,
                                             reduce="amin")
        return -self.scale * nearest[:, :self.num_classes]
