"""The dataset interface that dataset plugins implement."""

from typing import ClassVar

import attrs


@attrs.frozen(kw_only=True)
class DatasetInfo:
    """Shape and classes of a dataset's inputs; inputs lie in ``bounds``."""

    shape: tuple  # (C, H, W)
    num_classes: int
    class_names: tuple = ()
    bounds: tuple = (0.0, 1.0)


@attrs.frozen(kw_only=True)
class Dataset:
    """Base class of dataset plugins: fixed train and test splits of labelled images.

    Subclasses are ``@attrs.frozen(kw_only=True)`` classes whose fields are their parameters.
    """

    name: ClassVar[str]

    @property
    def info(self):
        """The :class:`DatasetInfo` of this dataset."""
        raise NotImplementedError

    def load(self, split):
        """``(x, y)`` of ``split`` ("train"/"test"): float32 (N, C, H, W) in bounds, int64 (N,)."""
        raise NotImplementedError

    def identity(self):
        """A JSON-ready dict that changes whenever the data changes (name, params, source)."""
        return {"name": self.name, **attrs.asdict(self)}
