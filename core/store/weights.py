"""The safe weight store: state dicts in HDF5, and torch checkpoints read without pickled code.

An advx weights file is HDF5 with one dataset per tensor under the group ``state_dict`` and root
attributes ``format`` ("advx-weights"), ``format_version``, ``metadata`` (JSON), ``keys`` (the
tensor names, in order) and ``digest``: :func:`weights_digest` of the tensors (sha256 over
names, dtypes, shapes and bytes). Files are built in memory and written to a temporary file
beside the target, then renamed (:mod:`advx.store.h5image`), so a reader never sees half a
file and a full disk is a clean :class:`~advx.kernel.errors.StorageError`.

Loading checks the declared names, dtypes and shapes against the module before any tensor data
is read (a resizable buffer may declare another shape, but not more bytes than the file holds),
then reads the tensors and recomputes their digest: a mismatch is a
:class:`DamagedWeightsError`. Files written before the digest existed load with a warning.
"""

import hashlib
import json
import pathlib
import warnings

import h5py
import numpy as np
import torch

from ..kernel.errors import UsageError
from .checkpoint import read_torch
from .h5image import write_h5

FORMAT = "advx-weights"
FORMAT_VERSION = 1  # the digest attribute is optional in version 1 (files of older advx)
H5_SUFFIXES = (".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
# numpy has no bfloat16: such tensors are stored as their int16 bit patterns
_STORED_AS = {torch.bfloat16: torch.int16}


class DamagedWeightsError(UsageError):
    """A weights file that cannot be trusted: unreadable, truncated or altered."""


class UnverifiedWeightsWarning(UserWarning):
    """An advx weights file without a digest (written by an advx before 0.x): not verified."""


def save_weights(module, path, metadata):
    """Write ``module``'s state dict and ``metadata`` (JSON-ready dict) to ``path`` atomically."""
    state = module.state_dict()
    write_h5(path, lambda f: _write(f, state, metadata))


def _write(f, state, metadata):
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["metadata"] = json.dumps(metadata, sort_keys=True, default=str)
    f.attrs["keys"] = json.dumps(list(state))
    f.attrs["digest"] = state_digest(state)
    group = f.create_group("state_dict")
    for index, (name, tensor) in enumerate(state.items()):
        tensor = tensor.detach().cpu()
        stored = tensor.view(_STORED_AS.get(tensor.dtype, tensor.dtype))
        dataset = group.create_dataset(str(index), data=stored.numpy())
        dataset.attrs["name"] = name
        dataset.attrs["dtype"] = str(tensor.dtype).removeprefix("torch.")


def load_weights(module, path):
    """Load the weights at ``path`` into ``module``; returns the file's metadata dict.

    Reads advx HDF5 files (.h5/.hdf5, verified by their digest) and torch checkpoints
    (.pt/.pth/.ckpt holding a state dict, or a dict with a ``state_dict`` entry) with
    ``weights_only=True``: never arbitrary objects. The module is changed only when every
    check passed.
    """
    state, metadata, verified = read_weights(module, path)
    if not verified:
        warnings.warn(f"weights file {str(path)!r} has no digest (written by an older advx): "
                      "loaded without verification", UnverifiedWeightsWarning, stacklevel=2)
    module.load_state_dict(state, strict=True)
    return metadata


def read_weights(module, path):
    """``(state dict, metadata, verified)`` of the weights at ``path``, checked against
    ``module`` (which is not changed); ``verified`` is False for an advx file without digest
    (torch checkpoints carry none and count as verified: they are the user's files)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in H5_SUFFIXES:
        return _read_h5(module, path)
    if suffix in TORCH_SUFFIXES:
        state = read_torch(path)
        _check_declared(module, {k: (t.dtype, tuple(t.shape)) for k, t in state.items()}, path,
                        dtypes=False)
        return state, {}, True
    allowed = ", ".join(H5_SUFFIXES + TORCH_SUFFIXES)
    raise UsageError(f"weights file {str(path)!r} has an unknown suffix; allowed: {allowed}")


def _read_h5(module, path):
    try:
        with h5py.File(path, "r") as f:
            _check_format(f, path)
            datasets = _datasets(f)
            _check_declared(module, {n: _declared(d) for n, d in datasets.items()}, path)
            state = {name: _tensor(dataset) for name, dataset in datasets.items()}
            metadata, digest = json.loads(f.attrs["metadata"]), f.attrs.get("digest")
    except UsageError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise DamagedWeightsError(f"weights file {str(path)!r} is corrupt or truncated "
                                  f"({exc}); delete it and train or download it again") from None
    if digest is not None and state_digest(state) != str(digest):
        raise DamagedWeightsError(f"weights file {str(path)!r} is damaged: its tensors do not "
                                  "match their digest; delete it and train or download it again")
    return state, metadata, digest is not None


def _check_format(f, path):
    if f.attrs.get("format") != FORMAT:
        raise UsageError(f"{str(path)!r} is not an advx weights file (format attribute "
                         f"{f.attrs.get('format')!r}, expected {FORMAT!r})")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise UsageError(f"{str(path)!r} has weights format version {version}; this advx reads "
                         f"version {FORMAT_VERSION}: upgrade advx or re-create the file")


def _datasets(f):
    """name -> dataset (not read) of every tensor of the open file ``f``."""
    names, group = json.loads(f.attrs["keys"]), f["state_dict"]
    if not isinstance(names, list) or len(names) != len(group):
        raise ValueError(f"{len(group)} tensors stored, but the keys attribute lists {names!r}")
    return {str(name): group[str(i)] for i, name in enumerate(names)}


def _declared(dataset):
    """``(torch dtype, shape)`` a dataset declares, checked against its stored type."""
    dtype = getattr(torch, str(dataset.attrs["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown tensor dtype {dataset.attrs['dtype']!r}")
    stored = torch.empty(0, dtype=_STORED_AS.get(dtype, dtype)).numpy().dtype
    if dataset.dtype != stored:
        raise ValueError(f"tensor {dataset.attrs.get('name')!r} is stored as {dataset.dtype}, "
                         f"not as its dtype {dtype} says")
    return dtype, tuple(dataset.shape)


def _tensor(dataset):
    dtype = getattr(torch, dataset.attrs["dtype"])
    tensor = torch.from_numpy(np.array(dataset[()]))
    return tensor.view(dtype) if tensor.dtype != dtype else tensor


RESIZABLE = "advx_resizable"  # a submodule's buffers whose size comes from the data


def resizable_keys(module):
    """State-dict keys of buffers that a submodule lists in its ``advx_resizable`` attribute:
    their shape is the data's (a nearest-neighbour model's stored training set), fixed only
    when trained, so a weights file may hold another size than a freshly built module."""
    return {f"{prefix}.{name}" if prefix else name
            for prefix, sub in module.named_modules() for name in getattr(sub, RESIZABLE, ())}


def _check_declared(module, declared, path, dtypes=True):
    """Raise unless ``declared`` (name -> (dtype, shape)) fits ``module``'s state dict: the
    same names, shapes (any for resizable buffers, within the file's size) and dtypes."""
    expected, resizable = module.state_dict(), resizable_keys(module)
    size = path.stat().st_size
    problems = {"missing": [k for k in expected if k not in declared],
                "unexpected": [k for k in declared if k not in expected], "wrong shape": [],
                "wrong dtype": [], "larger than the file": []}
    for key, (dtype, shape) in declared.items():
        if key not in expected:
            continue
        want = expected[key]
        if key in resizable:
            if len(shape) != want.dim() or _nbytes(dtype, shape) > size:
                problems["larger than the file"].append(f"{key} {shape}")
        elif shape != tuple(want.shape):
            problems["wrong shape"].append(f"{key} {shape} != {tuple(want.shape)}")
        if dtypes and dtype != want.dtype:
            problems["wrong dtype"].append(f"{key} {dtype} != {want.dtype}")
    found = [f"{label}: {', '.join(keys)}" for label, keys in problems.items() if keys]
    if found:
        raise UsageError(f"weights in {str(path)!r} do not fit {type(module).__name__}; "
                         + "; ".join(found))


def _nbytes(dtype, shape):
    count = 1
    for n in shape:
        count *= int(n)
    return count * torch.empty(0, dtype=dtype).element_size()


def state_digest(state):
    """sha256 hex digest over a state dict: names, dtypes, shapes and bytes of each tensor."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_digest(module):
    """sha256 hex digest over ``module``'s state dict (see :func:`state_digest`)."""
    return state_digest(module.state_dict())
