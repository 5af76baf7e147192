"""The core's side of the attack contract: Attack.__call__ validates, enforces and recomputes."""

from typing import ClassVar

import advx
import attrs
import pytest
import torch


@attrs.frozen(kw_only=True)
class ShiftAttack(advx.FixedEpsilonAttack):
    """Adds ``shift`` to every input: a deliberately bad attack when the shift exceeds eps."""

    name = "shift-by"
    norms = frozenset({"linf", "l2"})
    shift: float = attrs.field(default=0.0, metadata={"help": "constant added to x"})

    def run(self, model, x, y, threat, *, targets, rng):
        return x + self.shift


@attrs.frozen(kw_only=True)
class TwiceEpsAttack(advx.FixedEpsilonAttack):
    """Returns x + 2 eps: outside the linf ball of every threat model."""

    name = "twice-eps"
    norms = frozenset({"linf"})

    def run(self, model, x, y, threat, *, targets, rng):
        return x + 2 * threat.eps


@attrs.frozen(kw_only=True)
class HalfFarMinimizer(advx.MinimizationAttack):
    """A minimisation attack whose even samples lie beyond eps and odd ones within it."""

    name = "half-far"
    norms = frozenset({"linf"})

    def run(self, model, x, y, threat, *, targets, rng):
        shift = torch.where(torch.arange(len(x)) % 2 == 0, 0.4, 0.08)
        return x + shift.view(-1, 1, 1, 1), torch.full((len(x),), 3)


@attrs.frozen(kw_only=True)
class ModeRecorder(advx.FixedEpsilonAttack):
    """Records whether the model was in training mode while the attack ran."""

    name = "mode-recorder"
    norms = frozenset({"linf"})
    seen: list = attrs.field(factory=list, metadata={"help": "training flags seen"})

    def run(self, model, x, y, threat, *, targets, rng):
        self.seen.append(model.training)
        return x


def mean_threshold_model():
    """Class 1 when the mean pixel exceeds 0.5, else class 0 (as logits)."""

    class MeanThreshold(torch.nn.Module):
        def forward(self, x):
            margin = (x.flatten(1).mean(1) - 0.5) * 100
            return torch.stack([-margin, margin], 1)

    return MeanThreshold()


def centred_batch(n=4):
    """Inputs at 0.3 (class 0) and 0.45 (class 0) with their true labels: far from the bounds."""
    x = torch.full((n, 1, 2, 2), 0.3)
    x[1::2] = 0.45
    return x, torch.zeros(n, dtype=torch.int64)


THREAT = advx.ThreatModel(norm="linf", eps=0.1)


class TestEnforcement:
    """The core raises ThreatModelViolation naming the attack, or resets minimisation results."""

    def test_outside_the_ball_raises_naming_the_attack(self):
        x, y = centred_batch()
        with pytest.raises(advx.ThreatModelViolation, match="twice-eps.*linf ball"):
            TwiceEpsAttack()(mean_threshold_model(), x, y, THREAT)

    def test_outside_the_bounds_raises_naming_the_attack(self):
        x, y = centred_batch()
        x[0] = 0.0
        with pytest.raises(advx.ThreatModelViolation, match="shift-by.*bounds"):
            ShiftAttack(shift=-0.05)(mean_threshold_model(), x, y, THREAT)

    def test_wrong_shape_or_dtype_raises(self):
        class Halving(ShiftAttack):
            def run(self, model, x, y, threat, *, targets, rng):
                return x.double()

        x, y = centred_batch()
        with pytest.raises(advx.ThreatModelViolation, match="returned"):
            Halving()(mean_threshold_model(), x, y, THREAT)

    def test_inside_passes_and_success_is_recomputed(self):
        x, y = centred_batch()
        result = ShiftAttack(shift=0.08)(mean_threshold_model(), x, y, THREAT)
        # 0.3 + 0.08 stays class 0; 0.45 + 0.08 crosses 0.5 and is fooled.
        assert result.success.tolist() == [False, True, False, True]
        assert result.pred.tolist() == [0, 1, 0, 1]
        torch.testing.assert_close(result.distance, torch.full((4,), 0.08))

    def test_minimization_result_beyond_eps_is_reset_and_unsuccessful(self):
        x, y = centred_batch()
        result = HalfFarMinimizer()(mean_threshold_model(), x, y, THREAT)
        # Even samples moved 0.4 (beyond eps 0.1, and fooling the model): reset to x, failed.
        assert torch.equal(result.x_adv[0::2], x[0::2])
        assert result.success.tolist() == [False, True, False, True]
        assert result.distance[0::2].tolist() == [0.0, 0.0]
        assert result.queries.dtype == torch.int64 and result.queries.tolist() == [3] * 4


class TestValidation:
    """Bad inputs raise advx.UsageError before the attack runs."""

    @pytest.mark.parametrize("case", [
        "int-x", "float-y", "short-y", "x-out-of-bounds", "targeted-without-targets",
        "targets-untargeted", "unsupported-norm", "no-eps", "float-targets"])
    def test_bad_inputs(self, case):
        x, y = centred_batch()
        threat, targets = THREAT, None
        if case == "int-x":
            x = (x * 10).to(torch.int64)
        elif case == "float-y":
            y = y.float()
        elif case == "short-y":
            y = y[:2]
        elif case == "x-out-of-bounds":
            x[0, 0, 0, 0] = 1.5
        elif case == "targeted-without-targets":
            threat = attrs.evolve(THREAT, targeted=True)
        elif case == "targets-untargeted":
            targets = torch.ones_like(y)
        elif case == "unsupported-norm":
            threat = advx.ThreatModel(norm="l1", eps=1.0)
        elif case == "no-eps":
            threat = advx.ThreatModel(norm="linf")
        elif case == "float-targets":
            threat, targets = attrs.evolve(THREAT, targeted=True), torch.ones(len(y))
        with pytest.raises(advx.UsageError):
            ShiftAttack()(mean_threshold_model(), x, y, threat, targets=targets)

    def test_threat_must_be_a_threat_model(self):
        x, y = centred_batch()
        with pytest.raises(TypeError):
            ShiftAttack()(mean_threshold_model(), x, y, "linf:0.1")

    def test_targeted_success_means_hitting_the_target(self):
        x, y = centred_batch()
        threat = attrs.evolve(THREAT, targeted=True)
        targets = torch.ones_like(y)
        result = ShiftAttack(shift=0.08)(mean_threshold_model(), x, y, threat, targets=targets)
        assert result.success.tolist() == [False, True, False, True]


class TestModelMode:
    """The attack sees the model in eval mode; the caller's mode is restored afterwards."""

    @pytest.mark.parametrize("training", [True, False])
    def test_mode_restored(self, training):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5),
                                    torch.nn.Linear(4, 2)).train(training)
        attack = ModeRecorder()
        attack(model, *centred_batch(), THREAT)
        assert attack.seen == [False]
        assert model.training is training and model[1].training is training

    def test_mode_restored_after_a_violation(self):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).train()
        with pytest.raises(advx.ThreatModelViolation):
            TwiceEpsAttack()(model, *centred_batch(), THREAT)
        assert model.training


def test_outputs_within_float_tolerance_are_clipped_exactly_into_the_bounds():
    @attrs.frozen(kw_only=True)
    class Overshoot(advx.FixedEpsilonAttack):
        """Returns ones plus a float-rounding overshoot of 5e-7."""

        name: ClassVar[str] = "overshoot"
        norms: ClassVar[frozenset] = frozenset({"linf"})

        def run(self, model, x, y, threat, *, targets, rng):
            return torch.ones_like(x) + 5e-7

    x = torch.full((2, 1, 2, 2), 0.9)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    result = Overshoot()(model, x, torch.zeros(2, dtype=torch.int64),
                         advx.ThreatModel(norm="linf", eps=0.2))
    assert float(result.x_adv.max()) == 1.0
