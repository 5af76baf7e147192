"""What identifies an adversarial set, the seeds derived from it, and the provenance stored with it.

The identity covers everything the set's content depends on: the model's weights (the whole
defended model's, defenses' own parts included) and defense stack, the dataset and which
samples, the attack and all its parameters (defaults included), the threat model, how targets
are chosen, the seed and, for a set that is not one attack call, the method that computes it.
It names nothing local to one spec file (entry ids, paths) and nothing that does not change the
content (batch size, device count), so two specs or two machines that ask for the same set
share it.  Every sample's random stream is seeded from the identity and the sample's test-set
index (:func:`sample_seeds`); the cache key adds the format version
(:func:`advx.store.format.set_key`).
"""

import datetime
import hashlib
import json
import platform

import h5py
import numpy as np
import torch

from .._version import __version__
from ..kernel.params import plugin_identity
from ..kernel.random import derive
from .format import identity_digest


def unit_seed(*parts):
    """A deterministic 63-bit seed from the JSON of ``parts``."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return int(digest[:15], 16)


def set_identity(*, model_name, weights_sha256, defenses, dataset_identity, indices, attack,
                 threat, target, seed, method=None, source_key=None, budget=None):
    """The identity of one adversarial set (JSON-ready).

    :param defenses: the model's defense stack as plain data (name, kind, parameters).
    :param indices: the test-set indices of the set's samples (an int64 tensor).
    :param attack: the attack instance.
    :param method: the identity of the set's :class:`advx.SetMethod`, if it has one.
    :param budget: the propagations per sample the core allowed the attack, if capped.
    """
    identity = {
        "model": {"plugin": model_name, "weights_sha256": weights_sha256},
        "defenses": list(defenses),
        "dataset": {"identity": dataset_identity, "split": "test",
                    "indices": _indices(indices)},
        "attack": {**plugin_identity(attack),
                   **({"revision": attack.revision} if attack.revision > 1 else {})},
        "threat": {"norm": threat.norm, "eps": threat.eps, "bounds": list(threat.bounds),
                   "targeted": threat.targeted},
        "target": target if threat.targeted else None,
        "seed": seed,
    }
    if budget is not None:  # propagations per sample: the core cut the attack short
        identity["budget"] = budget
    if method is not None:
        identity["method"] = method
    if source_key is not None:
        identity["source_set"] = source_key
    return identity


def _indices(indices):
    """``[0, n]`` for the first n test samples (a range), else the list of indices."""
    n = len(indices)
    if torch.equal(indices, torch.arange(n)):
        return [0, n]
    return indices.tolist()


def sample_seeds(identity, indices):
    """One int64 seed per sample: from the identity's digest and the sample's test-set index,
    so a sample draws the same random numbers in whatever batch or shard it is computed."""
    base = torch.full((len(indices),), unit_seed(identity_digest(identity)), dtype=torch.int64)
    return derive(base, indices.to(torch.int64))


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
        "forwards": (np.dtype(np.int64), ()),
        "backwards": (np.dtype(np.int64), ()),
        "best_distance": (_numpy_dtype(distance.dtype), ()),
        "out_of_budget": (np.dtype(bool), ()),
    }


def _numpy_dtype(dtype):
    return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)
