"""bench/attacks.py: its scoring on hand-made cases, and one row run end to end on a toy model."""

import argparse
import importlib.util
import pathlib
import sys

import advx
import pytest
import torch

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    """bench/attacks.py as a module (its helpers import each other from bench/)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_attacks", BENCH / "attacks.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


class _SumModel(torch.nn.Module):
    """Class 0 when the pixels sum to more than 1, else class 1."""

    def forward(self, x):
        total = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([total - 1, 1 - total], dim=1)


def _cases():
    x = torch.full((4, 1, 2, 2), 0.5)
    x[2] = 0.1  # sums to 0.4: misclassified before any attack
    y = torch.zeros(4, dtype=torch.int64)
    x_adv = x.clone()
    x_adv[0] -= 0.3  # sums to 0.8: fooled, at Linf 0.3
    x_adv[1] += 0.5  # outside the ball and the bounds: projected to 0.8, still class 0
    return x, y, x_adv


def test_score_recomputes_success_and_projects(bench):
    x, y, x_adv = _cases()
    s = bench.score(_SumModel(), x, y, x_adv, advx.ThreatModel(norm="linf", eps=0.3))
    assert s.correct.tolist() == [True, True, False, True]
    assert s.success.tolist() == [True, False, False, False]
    assert s.robust.tolist() == [False, True, False, True]
    assert s.outside == 1 and s.placeholders == 0
    assert s.success_rate == pytest.approx(1 / 3)
    assert s.robust_accuracy == 0.5
    assert s.median() == pytest.approx(0.3)
    assert s.distance[1] == pytest.approx(0.3)  # scored after projection


def test_score_counts_all_zero_placeholders_as_failures(bench):
    x, y, x_adv = _cases()
    x_adv[0] = 0.0  # Foolbox CW's "nothing found": misclassified, but no attack result
    s = bench.score(_SumModel(), x, y, x_adv, advx.ThreatModel(norm="l2"), extra_norm="l0")
    assert s.placeholders == 1 and not s.success[0] and s.robust[0]
    assert s.outside == 0  # l2 without eps: only the bounds count; x_adv[1] = 1.0 is inside
    assert s.extra is not None and s.extra[3] == 0


def test_score_targeted(bench):
    x, y, x_adv = _cases()
    threat = advx.ThreatModel(norm="linf", eps=0.3, targeted=True)
    s = bench.score(_SumModel(), x, y, x_adv, threat, targets=torch.ones(4, dtype=torch.int64))
    assert s.success.tolist() == [True, False, False, False]


def test_fgsm_row_agrees_across_libraries(bench):
    for peer in ("torchattacks", "foolbox", "art"):
        pytest.importorskip(peer)
    import _peers

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    x, y = torch.rand(12, 1, 4, 4), torch.randint(0, 10, (12,))
    ctx = _peers.Context(model, (1, 4, 4), 10)
    (row,) = _peers.select("fgsm", 12)
    args = argparse.Namespace(floor_passes=2, rounds=1)
    results = bench.run_row(ctx, "toy", row, x, y, args, log=lambda *_: None)
    assert [r.library for r in results] == ["advx", "torchattacks", "foolbox", "art"]
    assert all(r.error is None for r in results), [r.error for r in results]
    reference = results[0].score
    for r in results:
        assert r.score.outside == 0
        assert torch.equal(r.score.success, reference.success)
        assert torch.allclose(r.score.distance, reference.distance, atol=1e-6)
        assert r.timing.ratio > 0
    assert bench.table_line(results[0], True).startswith("| FGSM | advx | Linf 0.3 | 12 |")
