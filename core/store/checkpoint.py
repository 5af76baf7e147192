"""Torch checkpoints given by path (.pt/.pth/.ckpt): plain state dicts, never pickled code.

Files are read with ``weights_only=True`` and, for torch's zip format, memory-mapped, so tensor
data is only read when the weights are copied into the module, after their names and shapes
were checked. torch's own warnings are silenced and its messages replaced: they advise retrying
with ``weights_only=False``, the unsafe step for a file that may be a payload.
"""

import pickle
import warnings

import torch

from ..kernel.errors import UsageError


def read_torch(path):
    """The state dict of the torch checkpoint at ``path`` (tensors possibly memory-mapped)."""
    try:
        loaded = _load(path)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():  # garbage: "invalid load key"
            raise UsageError(f"{str(path)!r} is not a loadable tensor checkpoint (plain state "
                             f"dicts only, never pickled objects): {_reason(exc)}") from None
        raise UsageError(f"{str(path)!r} is not a loadable tensor checkpoint: it holds pickled "
                         "objects other than tensors, and advx reads only plain state dicts, "
                         "never pickled objects (save `model.state_dict()` with torch.save)"
                         ) from None
    except Exception as exc:  # a truncated zip, not a torch file...
        raise UsageError(f"{str(path)!r} is not a loadable tensor checkpoint (plain state "
                         f"dicts only, never pickled objects): {_reason(exc)}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(t) for t in loaded.values()):
        raise UsageError(f"{str(path)!r} holds no state dict (a dict of name -> tensor, "
                         "or {'state_dict': ...})")
    return _strip_prefix(loaded, "module.")


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
        # torch's legacy (non-zip) format cannot be memory-mapped: read it whole
        return torch.load(path, map_location="cpu", weights_only=True)


def _reason(exc):
    """A one-line reason for ``exc`` without torch's advice about ``weights_only``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if not first or "weights_only" in first or len(first) > 200:
        return f"{type(exc).__name__} (unreadable, truncated or not a torch file)"
    return f"{type(exc).__name__}: {first}"


def _strip_prefix(state, prefix):
    """Drop a prefix every key shares (``module.`` from DataParallel checkpoints)."""
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: tensor for key, tensor in state.items()}
    return state
