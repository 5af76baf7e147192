"""The safe weight store: state dicts in HDF5, and torch checkpoints read without pickled code.

An advx weights file is HDF5 with one dataset per tensor under the group ``state_dict`` and root
attributes ``format`` ("advx-weights"), ``format_version`` and ``metadata`` (JSON). Files are
written to a temporary file beside the target and renamed, so a reader never sees half a file.
"""

import hashlib
import json
import pathlib

import h5py
import numpy as np
import torch

from ..kernel.errors import UsageError
from .atomic import write_file

FORMAT = "advx-weights"
FORMAT_VERSION = 1
H5_SUFFIXES = (".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
# numpy has no bfloat16: such tensors are stored as their int16 bit patterns
_STORED_AS = {torch.bfloat16: torch.int16}


def save_weights(module, path, metadata):
    """Write ``module``'s state dict and ``metadata`` (JSON-ready dict) to ``path`` atomically."""
    def write(temp):
        with h5py.File(temp, "w-") as f:
            _write(f, module.state_dict(), metadata)

    write_file(path, write)


def _write(f, state, metadata):
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["metadata"] = json.dumps(metadata, sort_keys=True, default=str)
    f.attrs["keys"] = json.dumps(list(state))
    group = f.create_group("state_dict")
    for index, (name, tensor) in enumerate(state.items()):
        tensor = tensor.detach().cpu()
        stored = tensor.view(_STORED_AS.get(tensor.dtype, tensor.dtype))
        dataset = group.create_dataset(str(index), data=stored.numpy())
        dataset.attrs["name"] = name
        dataset.attrs["dtype"] = str(tensor.dtype).removeprefix("torch.")


def load_weights(module, path):
    """Load the weights at ``path`` into ``module``; returns the file's metadata dict.

    Reads advx HDF5 files (.h5/.hdf5) and torch checkpoints (.pt/.pth/.ckpt holding a state dict,
    or a dict with a ``state_dict`` entry) with ``weights_only=True``: never arbitrary objects.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in H5_SUFFIXES:
        state, metadata = _read_h5(path)
    elif suffix in TORCH_SUFFIXES:
        state, metadata = _read_torch(path), {}
    else:
        allowed = ", ".join(H5_SUFFIXES + TORCH_SUFFIXES)
        raise UsageError(f"weights file {str(path)!r} has an unknown suffix; allowed: {allowed}")
    _check_compatible(module, state, path)
    module.load_state_dict(state, strict=True)
    return metadata


def _read_h5(path):
    try:
        with h5py.File(path, "r") as f:
            _check_format(f, path)
            names = json.loads(f.attrs["keys"])
            group = f["state_dict"]
            state = {name: _tensor(group[str(i)]) for i, name in enumerate(names)}
            return state, json.loads(f.attrs["metadata"])
    except UsageError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise UsageError(f"weights file {str(path)!r} is corrupt or truncated ({exc}); "
                         "delete it and train or download it again") from None


def _check_format(f, path):
    if f.attrs.get("format") != FORMAT:
        raise UsageError(f"{str(path)!r} is not an advx weights file (format attribute "
                         f"{f.attrs.get('format')!r}, expected {FORMAT!r})")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise UsageError(f"{str(path)!r} has weights format version {version}; this advx reads "
                         f"version {FORMAT_VERSION}: upgrade advx or re-create the file")


def _tensor(dataset):
    dtype = getattr(torch, dataset.attrs["dtype"])
    tensor = torch.from_numpy(np.array(dataset[()]))
    return tensor.view(dtype) if tensor.dtype != dtype else tensor


def _read_torch(path):
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling refusal, a truncated zip, a wrong file...
        raise UsageError(f"{str(path)!r} is not a loadable tensor checkpoint; only plain state "
                         f"dicts are read, never pickled objects ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(t) for t in loaded.values()):
        raise UsageError(f"{str(path)!r} holds no state dict (a dict of name -> tensor, "
                         "or {'state_dict': ...})")
    return _strip_prefix(loaded, "module.")


def _strip_prefix(state, prefix):
    """Drop a prefix every key shares (``module.`` from DataParallel checkpoints)."""
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: tensor for key, tensor in state.items()}
    return state


RESIZABLE = "advx_resizable"  # a submodule's buffers whose size comes from the data


def resizable_keys(module):
    """State-dict keys of buffers that a submodule lists in its ``advx_resizable`` attribute:
    their shape is the data's (a nearest-neighbour model's stored training set), fixed only
    when trained, so a weights file may hold another size than a freshly built module."""
    return {f"{prefix}.{name}" if prefix else name
            for prefix, sub in module.named_modules() for name in getattr(sub, RESIZABLE, ())}


def _check_compatible(module, state, path):
    expected = module.state_dict()
    resizable = resizable_keys(module)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
                for key in expected if key in state and key not in resizable
                and state[key].shape != expected[key].shape]
    problems = [f"{label}: {', '.join(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped))
                if keys]
    if problems:
        raise UsageError(f"weights in {str(path)!r} do not fit {type(module).__name__}; "
                         + "; ".join(problems))


def weights_digest(module):
    """sha256 hex digest over the state dict: names, dtypes, shapes and bytes of each tensor."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
