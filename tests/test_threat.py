"""Properties of advx.ThreatModel: projection, distance, containment, parsing and validation."""

import math

import numpy as np
import pytest
import torch
from advx import NORMS, ThreatModel
from advx.kernel.threat import distance, project_delta
from advx.testing.strategies import image_batches, threat_models
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


@st.composite
def batch_and_point(draw, low=-1.0, high=2.0):
    """``(x, x_adv)``: images in [0, 1] and an arbitrary point of the same shape."""
    x = draw(image_batches())
    elements = st.floats(low, high, width=32, allow_nan=False, allow_subnormal=False)
    return x, torch.from_numpy(draw(hnp.arrays(np.float32, tuple(x.shape), elements=elements)))


def _l1_reference(delta, eps):
    """Projection onto the L1 ball by bisection on the threshold theta, in float64."""
    v = delta.double().flatten()
    if v.abs().sum() <= eps:
        return v.view_as(delta)
    low, high = 0.0, float(v.abs().max())
    for _ in range(200):
        theta = (low + high) / 2
        if float((v.abs() - theta).clamp_min(0).sum()) > eps:
            low = theta
        else:
            high = theta
    return (v.sign() * (v.abs() - high).clamp_min(0)).view_as(delta)


class TestProject:
    """ThreatModel.project lands inside, is idempotent and fixes points already inside."""

    @given(data=batch_and_point(), threat=threat_models(bounded=False))
    def test_lands_in_ball_and_bounds(self, data, threat):
        x, x_adv = data
        assert bool(threat.contains(x, threat.project(x, x_adv)).all())

    def test_l1_lands_inside_when_many_equal_coordinates_sit_just_above_the_threshold(self):
        # Found by CI: in float32 the threshold's cumulative sum lost digits and the projection
        # of 90 coordinates of 1.487 onto the 0.5 ball measured 0.5000067.
        x, x_adv = torch.zeros(1, 3, 5, 6), torch.full((1, 3, 5, 6), 1.4870359897613525)
        threat = ThreatModel(norm="l1", eps=0.5)
        assert bool(threat.contains(x, threat.project(x, x_adv), rtol=0, atol=1e-7).all())

    @given(data=batch_and_point(), threat=threat_models(bounded=False))
    def test_is_idempotent(self, data, threat):
        x, x_adv = data
        once = threat.project(x, x_adv)
        torch.testing.assert_close(threat.project(x, once), once, rtol=1e-5, atol=1e-6)

    @given(data=batch_and_point(), threat=threat_models(), shrink=st.floats(0, 1))
    def test_leaves_points_inside_unchanged(self, data, threat, shrink):
        x, x_adv = data
        inside = x + shrink * (threat.project(x, x_adv) - x)  # the ball and box are star-shaped
        torch.testing.assert_close(threat.project(x, inside), inside, rtol=1e-5, atol=1e-6)
        assert torch.equal(threat.project(x, x), x)

    @settings(max_examples=50)
    @given(data=batch_and_point(-3, 4), eps=st.floats(0, 20))
    def test_l1_matches_bisection_reference(self, data, eps):
        x, x_adv = data
        delta = x_adv - x
        projected = project_delta("l1", delta, eps).double()
        expected = torch.stack([_l1_reference(d, eps) for d in delta])
        torch.testing.assert_close(projected, expected, rtol=1e-4, atol=1e-5)

    @given(data=batch_and_point(), k=st.integers(0, 70))
    def test_l0_keeps_the_k_largest_pixels(self, data, k):
        x, x_adv = data
        delta = x_adv - x
        magnitude = delta.abs().amax(1).flatten(1)  # per pixel, over channels
        kept = project_delta("l0", delta, k)
        kept_magnitude = kept.abs().amax(1).flatten(1)
        changed = (magnitude > 0).sum(1)
        assert torch.equal((kept_magnitude > 0).sum(1), changed.clamp(max=k))
        is_kept = kept_magnitude > 0
        # Kept pixels are kept whole (every channel), and none dropped is larger than one kept.
        assert torch.equal(kept, delta * is_kept.view(len(x), 1, *x.shape[2:]))
        smallest_kept = torch.where(is_kept, magnitude, math.inf).amin(1)
        largest_dropped = torch.where(is_kept, -math.inf, magnitude).amax(1)
        assert bool((largest_dropped <= smallest_kept).all())


class TestDistance:
    """Distances are non-negative, zero exactly for equal inputs, and count pixels for l0."""

    @given(data=batch_and_point(), norm=st.sampled_from(NORMS))
    def test_non_negative_and_zero_iff_equal(self, data, norm):
        x, x_adv = data
        assume(bool(((x_adv - x).abs().flatten(1).amax(1) > 0).all()))
        d = distance(norm, x_adv - x)
        assert bool((d > 0).all())
        assert bool((distance(norm, x - x) == 0).all())

    @given(data=batch_and_point(), draw=st.data(),
           scale=st.sampled_from([-3.0, -1.0, -0.5, 0.01, 0.25, 2.0, 7.5]),
           norm=st.sampled_from(NORMS))
    def test_norm_axioms(self, data, draw, scale, norm):
        """l1, l2, linf are norms (homogeneous, triangle inequality); l0 counts changed units,
        so it ignores scaling by a non-zero factor and is subadditive."""
        x, a = data
        elements = st.floats(-1, 2, width=32, allow_nan=False, allow_subnormal=False)
        b = torch.from_numpy(draw.draw(hnp.arrays(np.float32, tuple(x.shape), elements=elements)))
        d, e = (a - x).double(), (b - x).double()
        scaled = distance(norm, scale * d)
        expected = distance(norm, d) * (1 if norm == "l0" else abs(scale))
        assert torch.allclose(scaled, expected, rtol=1e-6, atol=1e-9)
        assert bool((distance(norm, d + e) <= distance(norm, d) + distance(norm, e) + 1e-9).all())

    def test_l2_of_a_tiny_perturbation_is_positive(self):
        assert float(distance("l2", torch.tensor([[1e-30, 0.0]]))) > 0

    def test_l0_counts_pixels_of_image_batches(self):
        delta = torch.zeros(2, 3, 4, 4)
        delta[0, :, 1, 1] = 0.5  # one pixel, all channels
        delta[1, 0, 0, 0] = 0.1  # two pixels, one channel each
        delta[1, 2, 3, 2] = -0.1
        assert distance("l0", delta).tolist() == [1.0, 2.0]
        assert distance("l0", delta.flatten(1)).tolist() == [3.0, 2.0]  # elements when not 4-D

    def test_norms_of_a_known_perturbation(self):
        delta = torch.tensor([[[[3.0, -4.0]]]])
        assert [float(distance(n, delta)) for n in NORMS] == [2.0, 7.0, 5.0, 4.0]

    def test_unknown_norm_is_rejected(self):
        with pytest.raises(ValueError, match="unknown norm"):
            distance("l3", torch.zeros(1, 2))
        with pytest.raises(ValueError, match="unknown norm"):
            project_delta("l3", torch.zeros(1, 2), 1.0)


class TestContains:
    """contains checks bounds, ball and finiteness per sample."""

    def test_per_sample_verdicts(self):
        threat = ThreatModel(norm="linf", eps=0.1)
        x = torch.full((4, 1, 2, 2), 0.5)
        x_adv = x.clone()
        x_adv[1] += 0.2  # outside the ball
        x_adv[2, 0, 0, 0] = float("nan")
        x_adv[3] = 0.55
        assert threat.contains(x, x_adv).tolist() == [True, False, False, True]
        x_out = torch.zeros(1, 1, 1, 1) - 0.01
        assert not bool(threat.contains(torch.zeros(1, 1, 1, 1), x_out))


class TestParseAndValidate:
    """Construction from text, and rejection of invalid values with ValueError."""

    @pytest.mark.parametrize(("text", "norm", "eps"), [
        ("linf:8/255", "linf", 8 / 255), ("l2:2.0", "l2", 2.0), ("L1: 10", "l1", 10.0),
        ("l0:5", "l0", 5.0), ("l0", "l0", None), ("linf:0", "linf", 0.0)])
    def test_parse(self, text, norm, eps):
        threat = ThreatModel.parse(text)
        assert (threat.norm, threat.eps) == (norm, eps)
        assert threat.bounds == (0.0, 1.0) and threat.targeted is False

    def test_parse_passes_options_and_prints_back(self):
        threat = ThreatModel.parse("l2:0.5", targeted=True, bounds=(-1, 1))
        assert threat == ThreatModel(norm="l2", eps=0.5, bounds=(-1.0, 1.0), targeted=True)
        assert str(threat) == "l2:0.5 (targeted)" and str(ThreatModel(norm="l0")) == "l0:min"
        assert threat.with_eps(1.0).eps == 1.0

    @pytest.mark.parametrize("kwargs", [
        {"norm": "l3", "eps": 1.0}, {"norm": "Linf", "eps": 1.0}, {"norm": "linf", "eps": -0.1},
        {"norm": "linf", "eps": float("nan")}, {"norm": "l2", "eps": float("inf")},
        {"norm": "l0", "eps": 2.5}, {"norm": "linf", "eps": 0.1, "bounds": (1.0, 0.0)},
        {"norm": "linf", "eps": 0.1, "bounds": (0.5, 0.5)}, {"norm": "linf", "eps": "abc"},
        {"norm": "linf", "eps": 0.1, "bounds": (0.0, float("nan"))}])
    def test_invalid_values_raise_value_error(self, kwargs):
        with pytest.raises(ValueError):
            ThreatModel(**kwargs)

    @pytest.mark.parametrize("text", ["lp:1", "linf:-1", "l0:1.5", "linf:x", "l2:1/0"])
    def test_invalid_text_raises_value_error(self, text):
        with pytest.raises(ValueError):
            ThreatModel.parse(text)

    @given(threat=threat_models(bounded=False, targeted=st.booleans()))
    def test_strategy_draws_valid_models(self, threat):
        assert threat.norm in NORMS
        assert threat.eps is None or threat.eps >= 0
        assert threat.norm != "l0" or threat.eps is None or threat.eps == int(threat.eps)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_an_eps_beyond_float32_is_refused(norm):
    """Attacks compute in float32: a radius it cannot hold would overflow into inf and nan."""
    with pytest.raises(ValueError, match="largest float32"):
        ThreatModel(norm=norm, eps=1e300)
    x = torch.rand(2, 1, 4, 4)
    ThreatModel(norm=norm, eps=3e38).project(x, x + 1)  # the largest that fits still works
