"""The ``fashion-mnist`` dataset: Zalando's Fashion-MNIST (60,000/10,000 28x28 grey) from IDX files.

Nothing is embedded or downloaded. The files are looked up in ``path``, else
``$ADVX_DATA/fashion-mnist``, else ``/usr/share/datasets/fashion-mnist``, where the Debian and
Ubuntu package ``dataset-fashion-mnist`` installs them (gzip-compressed, about 30 MB).
"""

import os
from pathlib import Path
from typing import ClassVar

import attrs
from advx import Dataset, DatasetInfo, UsageError

from .arrays import IDX_FILE_LIST, check_split, find_idx_files, load_idx_directory

DATA_ENV = "ADVX_DATA"
SYSTEM_DIRECTORY = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
INFO = DatasetInfo(shape=(1, 28, 28), num_classes=10, class_names=CLASS_NAMES)


@attrs.frozen(kw_only=True)
class FashionMnistDataset(Dataset):
    """Zalando's Fashion-MNIST: 10 classes of clothing, 28x28 grey, from local IDX files."""

    name: ClassVar[str] = "fashion-mnist"

    path: str | None = attrs.field(default=None, metadata={"help": (
        "directory holding the four Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...); "
        "default: $ADVX_DATA/fashion-mnist, else /usr/share/datasets/fashion-mnist")})

    @property
    def info(self):
        return INFO

    def load(self, split):
        check_split(split)
        return load_idx_directory(self.idx_directory()).tensors(split)

    def identity(self):
        """Name, split sizes and the content sha256 (not the directory: data, not location)."""
        arrays = load_idx_directory(self.idx_directory())
        return {"name": self.name, "source": "idx", **arrays.counts(), "sha256": arrays.sha256}

    def idx_directory(self):
        """The first candidate directory holding the IDX files; :class:`UsageError` if none."""
        candidates = self.candidate_directories()
        for directory in candidates:
            if find_idx_files(directory) is not None:
                return directory
        looked = ", ".join(repr(str(d)) for d in candidates)
        raise UsageError(
            f"fashion-mnist: no directory holds the IDX files {IDX_FILE_LIST}; looked in {looked}. "
            "Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or "
            "download them from https://github.com/zalandoresearch/fashion-mnist and pass "
            f"path=DIR or set {DATA_ENV} to a directory with a fashion-mnist/ subdirectory.")

    def candidate_directories(self):
        """Where the files are looked for, in order: ``path`` alone when given."""
        if self.path is not None:
            return [Path(self.path).expanduser()]
        root = os.environ.get(DATA_ENV)
        env = [Path(root).expanduser() / "fashion-mnist"] if root else []
        return [*env, SYSTEM_DIRECTORY]
