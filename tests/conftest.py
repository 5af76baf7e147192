"""Shared fixtures: a throwaway cache, a tiny spec on synthetic data, hypothesis profiles."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None, max_examples=30,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# One thread: on a shared 2-core machine, two OpenMP threads spin-wait and can run 10-100x slower.
torch.set_num_threads(1)

TINY_SPEC = """
title = "tiny"

[dataset]
name = "synthetic"
n_train = 256
n_test = 64

[[models]]
name = "blog-cnn"
train = {{ epochs = 2, batch_size = 64 }}

[[attacks]]
name = "fgsm"
norm = "linf"
eps = [0.05, 0.3]

[[attacks]]
name = "pgd"
norm = "linf"
eps = [0.05, 0.3]
steps = 5
{extra}
[protocol]
name = "robust-accuracy"
batch_size = 32
"""


@pytest.fixture
def tiny_spec(tmp_path):
    def write(extra="", text=None):
        path = tmp_path / "spec.toml"
        path.write_text(text if text is not None else TINY_SPEC.format(extra=extra))
        return path

    return write
