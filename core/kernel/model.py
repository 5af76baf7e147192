"""The model interface that model plugins implement: a named builder plus a training recipe."""

from typing import ClassVar

import attrs


@attrs.frozen(kw_only=True)
class ModelPlugin:
    """Base class of model plugins: builds an untrained ``torch.nn.Module`` for a dataset.

    The module maps inputs (N, C, H, W) in the dataset's bounds to logits (N, classes).
    ``default_recipe`` overrides fields of :class:`advx.TrainRecipe` for this architecture.
    """

    name: ClassVar[str]
    default_recipe: ClassVar[dict] = {}

    def build(self, info):
        """A freshly initialised module for a dataset described by ``info`` (DatasetInfo)."""
        raise NotImplementedError
