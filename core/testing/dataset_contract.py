"""The dataset contract: tests every dataset plugin must pass, for plugin authors to subclass.

In your plugin's test suite::

    from advx.testing import DatasetContract

    class TestMyData(DatasetContract):
        dataset_name = "my-data"
        dataset_params = {"path": "tests/data/my-data"}
"""

import json
import typing

import advx
import pytest
import torch

from .plugin_checks import check_declaration, check_parameters


class DatasetContract:
    """Base class of the dataset contract suite; set ``dataset_name`` (and
    ``dataset_params``); override :meth:`make_dataset` for an unregistered class."""

    dataset_name: typing.ClassVar[str | None] = None
    dataset_params: typing.ClassVar[dict] = {}

    def make_dataset(self):
        return advx.get_dataset(self.dataset_name, **self.dataset_params)

    def test_declares_what_it_is(self):
        check_declaration(type(self.make_dataset()), advx.Dataset)

    def test_parameters_are_described(self):
        check_parameters(type(self.make_dataset()))

    def test_info_is_valid(self):
        info = self.make_dataset().info
        assert isinstance(info, advx.DatasetInfo)
        assert len(info.shape) == 3 and all(isinstance(s, int) and s > 0 for s in info.shape)
        assert isinstance(info.num_classes, int) and info.num_classes >= 2
        assert not info.class_names or len(info.class_names) == info.num_classes
        lower, upper = info.bounds
        assert lower < upper

    @pytest.mark.parametrize("split", ["train", "test"])
    def test_splits_match_the_info(self, split):
        """float32 images of the declared shape inside the bounds, int64 labels of a class."""
        dataset = self.make_dataset()
        info = dataset.info
        x, y = dataset.load(split)
        assert x.dtype == torch.float32 and x.dim() == 4 and x.shape[1:] == info.shape
        assert y.dtype == torch.int64 and y.shape == (len(x),) and len(x) >= 1
        assert bool(torch.isfinite(x).all())
        assert float(x.min()) >= info.bounds[0] and float(x.max()) <= info.bounds[1]
        assert int(y.min()) >= 0 and int(y.max()) < info.num_classes

    def test_loads_the_same_data_and_identity_every_time(self):
        """Two instances load equal splits, and their identity is JSON-ready and equal (the
        caches key trained weights and sets by it)."""
        first, second = self.make_dataset(), self.make_dataset()
        for split in ("train", "test"):
            (x1, y1), (x2, y2) = first.load(split), second.load(split)
            assert torch.equal(x1, x2) and torch.equal(y1, y2), split
        identity = first.identity()
        assert json.loads(json.dumps(identity)) == identity == second.identity()

    def test_an_unknown_split_is_a_usage_error(self):
        with pytest.raises(advx.UsageError):
            self.make_dataset().load("validation-please")
