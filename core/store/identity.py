"""What identifies a work unit's adversarial set, and the provenance stored with it.

The identity covers everything the set's content depends on: the model's weights, the defense
stack, the dataset and which samples, the attack and all its parameters (defaults included), the
threat model, how targets are chosen, the seed and the batch size (each batch's random stream is
seeded by its first index). It names nothing local to one spec file (entry ids, paths), so two
specs that ask for the same set share it. Seeds derive from the identity; the cache key adds the
format version (:func:`advx.store.set_key`).
"""

import datetime
import hashlib
import json
import platform

import attrs
import h5py
import numpy as np
import torch

from .._version import __version__


def unit_seed(*parts):
    """A deterministic 63-bit seed from the JSON of ``parts``."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return int(digest[:15], 16)


def attack_params(attack):
    """The attack's parameters as plain data, defaults included."""
    return attrs.asdict(attack, recurse=True)


def set_identity(*, model_name, weights_sha256, dataset_identity, n, attack, threat, target,
                 seed, batch_size, source_key=None, defenses=(), selection=None):
    """The identity of one adversarial set (JSON-ready); ``defenses`` is the model's defense
    stack as plain data (see :func:`advx.defense_stack.identity`)."""
    identity = {
        "model": {"plugin": model_name, "weights_sha256": weights_sha256},
        "defenses": list(defenses),
        "dataset": {"identity": dataset_identity, "split": "test",
                    "indices": _indices(selection, n)},
        "attack": {"plugin": attack.name, "params": attack_params(attack),
                   **({"revision": attack.revision} if attack.revision > 1 else {})},
        "threat": {"norm": threat.norm, "eps": threat.eps, "bounds": list(threat.bounds),
                   "targeted": threat.targeted},
        "target": target if threat.targeted else None,
        "seed": seed,
        "batch_size": batch_size,
    }
    if source_key is not None:
        identity["source_set"] = source_key
    return identity


def _indices(selection, n):
    """``[0, n]`` for the first n test samples (a range), else the list of indices."""
    if selection is None or torch.equal(selection, torch.arange(n)):
        return [0, n]
    return selection.tolist()


def provenance(identity, *, spec_fragment, device):
    """What is stored beside a set: its identity, the spec entries, versions, device, time."""
    return {
        "identity": identity,
        "spec": spec_fragment,
        "versions": {"advx": __version__, "torch": torch.__version__,
                     "h5py": h5py.__version__, "python": platform.python_version()},
        "device": str(device),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def result_layout(x, threat):
    """Result name -> (numpy dtype, row shape) of a set of attacks on inputs like ``x``."""
    sample = x[:1].cpu()
    distance = threat.distance(sample, sample)
    return {
        "x_adv": (_numpy_dtype(x.dtype), tuple(x.shape[1:])),
        "success": (np.dtype(bool), ()),
        "distance": (_numpy_dtype(distance.dtype), ()),
        "pred": (np.dtype(np.int64), ()),
        "queries": (np.dtype(np.int64), ()),
    }


def result_arrays(result):
    """An :class:`advx.AttackResult` as numpy arrays named like the set's results."""
    return {"x_adv": result.x_adv.detach().cpu().numpy(),
            "success": result.success.cpu().numpy(),
            "distance": result.distance.detach().cpu().numpy(),
            "pred": result.pred.cpu().numpy(),
            "queries": result.queries.cpu().numpy()}


def _numpy_dtype(dtype):
    return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)
