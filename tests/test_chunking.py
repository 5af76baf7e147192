"""Gradient attacks run their passes in chunks of samples on CPU (``_gradients.CPU_CHUNK``):
samples are independent, so the results must not depend on the chunk size."""

import advx
import pytest
import torch
from advx.plugins.attacks import _gradients

from .small_cnn import train_small_cnn

CASES = {
    "fgsm": ({}, "linf", 0.2, False),
    "pgd": ({"steps": 5}, "l2", 1.5, False),
    "bim": ({"steps": 5}, "linf", 0.1, True),
    "apgd-ce": ({"steps": 8}, "linf", 0.1, False),
    "apgd-dlr": ({"steps": 8}, "linf", 0.1, True),
    "cw-linf": ({"steps": 5, "confidence": 5.0}, "linf", 0.1, False),
    "cw-l2": ({"steps": 10, "binary_search_steps": 2}, "l2", None, False),
    "deepfool": ({"steps": 10}, "l2", None, False),
    "ddn": ({"steps": 10}, "l2", None, True),
}


@pytest.fixture(scope="module")
def mnist():
    data = advx.get_dataset("mnist")
    x_train, y_train = (t[:1000] for t in data.load("train"))
    x, y = (t[:23] for t in data.load("test"))
    return train_small_cnn(x_train, y_train), x, y


def _run(monkeypatch, chunk, name, model, x, y):
    params, norm, eps, targeted = CASES[name]
    monkeypatch.setattr(_gradients, "CPU_CHUNK", chunk)
    threat = advx.ThreatModel(norm=norm, eps=eps, targeted=targeted)
    targets = (y + 1) % 10 if targeted else None
    return advx.get_attack(name, **params)(model, x, y, threat, targets=targets, seed=3)


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunk_size_does_not_change_the_result(monkeypatch, mnist, name):
    model, x, y = mnist
    whole = _run(monkeypatch, 1000, name, model, x, y)
    chunked = _run(monkeypatch, 4, name, model, x, y)  # 23 samples: five chunks of 4, one of 3
    torch.testing.assert_close(chunked.x_adv, whole.x_adv, atol=1e-5, rtol=0)
    assert torch.equal(chunked.success, whole.success)


def test_gradient_by_chunks_concatenates_in_order(monkeypatch):
    monkeypatch.setattr(_gradients, "CPU_CHUNK", 2)
    x = torch.arange(5.0).view(5, 1)
    grad, value, doubled = _gradients.gradient_by_chunks(
        x, lambda leaf, rows: (leaf.squeeze(1) ** 2, 2 * leaf))
    assert grad.flatten().tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert value.tolist() == [0.0, 1.0, 4.0, 9.0, 16.0]
    assert doubled.flatten().tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    none, *_ = _gradients.gradient_by_chunks(x, lambda leaf, rows: (leaf.sum(1),), False)
    assert none is None
