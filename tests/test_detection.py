"""Detectors under attack: the N+1-class view, rejection folded into untargeted losses,
thresholds at the requested false-positive rate, and adaptive attacks beating naive ones."""

import advx
import pytest
import torch
from advx.kernel.defense import calibrate
from advx.kernel.model import attacking
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn


class _Mean(nn.Module):
    def forward(self, x):
        return x.flatten(1).mean(1)


class _LowConfidence(nn.Module):
    """1 - the largest softmax probability, scaled: high near the decision boundary."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return 10 * (1 - torch.softmax(self.classifier(x), 1).amax(1))


def _linear(seed=0, classes=3, features=16):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(features, classes))
    with torch.no_grad():
        model[1].weight.mul_(4)
    return model.eval()


def test_fold_rejection_counts_rejection_as_the_label_only_while_attacking():
    logits = torch.tensor([[1.0, 3.0, 0.0, 5.0], [4.0, 0.0, 1.0, 2.0]])
    labels = torch.tensor([0, 0])
    module = nn.Identity()
    module.advx_reject_index = 3
    assert advx.fold_rejection(logits, labels) is logits  # no attack running: unchanged
    with attacking(module):
        folded = advx.fold_rejection(logits, labels)
        assert folded.tolist() == [[5.0, 3.0, 0.0], [4.0, 0.0, 1.0]]
        assert advx.fold_rejection(logits, labels, targeted=True) is logits
    assert advx.fold_rejection(logits, labels) is logits


@settings(max_examples=20, deadline=None)
@given(fpr=st.sampled_from([0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]),
       seed=st.integers(0, 10_000))
def test_threshold_fpr_on_fresh_clean_data_is_within_sampling_error(fpr, seed):
    generator = torch.Generator().manual_seed(seed)
    validation, test = torch.randn(2, 4000, 1, 2, 2, generator=generator)
    scorer = _Mean()
    threshold = calibrate(scorer, validation, fpr, torch.device("cpu"))
    assert float((scorer(validation) > threshold).float().mean()) <= fpr + 1e-12
    measured = float((scorer(test) > threshold).float().mean())
    error = (fpr * (1 - fpr) / len(test)) ** 0.5
    assert abs(measured - fpr) <= 4.5 * error + 2 / len(test)


def test_the_n_plus_one_view_rejects_exactly_where_the_score_exceeds_the_threshold():
    classifier = _linear()
    scorer = _LowConfidence(classifier)
    x = torch.rand(500, 1, 4, 4)
    threshold = float(scorer(x).detach().median())
    detected = advx.Detected(classifier, scorer, threshold, 3).eval()
    with torch.no_grad():
        pred = detected(x).argmax(1)
        over = scorer(x) > threshold
    assert advx.reject_index(detected) == 3
    assert torch.equal(pred == 3, over)
    assert torch.equal(pred[~over], classifier(x[~over]).argmax(1))


@pytest.mark.parametrize("attack_name", ["pgd", "bim"])
def test_an_adaptive_attack_beats_the_naive_one_on_a_confidence_detector(attack_name):
    """A naive attack stops at the first misclassified point, just across the boundary, where
    the detector (low confidence) rejects it; the adaptive one, with rejection folded into its
    loss, pushes on to a confident wrong class."""
    classifier = _linear(seed=1)
    x = torch.rand(400, 1, 4, 4)
    y = classifier(x).argmax(1)
    scorer = _LowConfidence(classifier)
    threshold = float(torch.quantile(scorer(x).detach(), 0.95))
    params = {"steps": 40, "step_size": 0.02}
    attack = advx.get_attack(attack_name, **params)
    threat = advx.ThreatModel(norm="linf", eps=0.3)
    robust = {}
    for adaptive in (True, False):
        detected = advx.Detected(classifier, scorer, threshold, 3, adaptive=adaptive).eval()
        result = attack(detected, x, y, threat)
        clean = detected(x).argmax(1) == y
        robust[adaptive] = float((clean & ~result.success).float().mean())
    assert robust[True] < robust[False] - 0.03, robust  # measured: 4.8 (pgd), 3.8 (bim) points
