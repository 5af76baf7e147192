"""APGD-T, the targeted Auto-PGD of AutoAttack (Croce & Hein, 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", section 4).

An untargeted threat model is attacked through targeted runs: the classes other than the label
are ranked by the clean logits, and for each of the ``target_classes`` most likely ones in turn
Auto-PGD (:class:`~advx.plugins.attacks.apgd._APGD`, same step-size schedule) ascends the
targeted DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` towards that class, with
``restarts`` random starts, on the samples that no earlier run has misclassified.  A run
succeeds when the model misclassifies the sample as any class (the target is only a guide).
Per sample the first success is kept; a sample never fooled keeps the point of highest
targeted DLR loss over all its runs.
"""

import advx
import attrs
import torch

from ._gradients import fooled
from ._iterative import Run, merge
from ._losses import check_classes, targeted_dlr
from .apgd import _APGD


@attrs.frozen(kw_only=True)
class APGDT(_APGD):
    """Targeted Auto-PGD on the DLR loss towards the top-k most likely other classes.

    For each of the ``target_classes`` classes ranked after the label by the clean logits, in
    order, ``restarts`` Auto-PGD runs of ``steps`` steps ascend the targeted DLR loss towards
    it, each on the samples still unfooled.  Untargeted threat models only: a targeted one is
    refused (apgd-dlr attacks a given target with the same loss).  Costs one forward pass on
    the clean batch plus ``steps + 1`` passes per run a sample takes part in.  Host syncs: one
    per run to select the unfooled samples, besides Auto-PGD's per checkpoint.
    """

    name = "apgd-t"
    supports_targeted = False

    target_classes: int = attrs.field(
        default=9, validator=advx.whole(1),
        metadata={"help": "how many of the most likely classes other than the label are "
                          "attacked as targets, one after the other (at most all of them)"})

    def check_threat(self, threat):
        if threat.targeted and threat.norm in self.supported_norms():
            raise advx.UsageError(f"attack {self.name!r} attacks untargeted threat models "
                                  "through its own targets; for a given target use 'apgd-dlr', "
                                  "which ascends the same targeted DLR loss")
        super().check_threat(threat)

    def loss(self, logits, y, targets, targeted):
        return targeted_dlr(logits, y, targets)

    def run(self, model, x, y, threat, *, targets, rng):
        with torch.no_grad():
            clean = model(x)
        check_classes(clean, 4, self.name)
        ranked = ranked_targets(clean, y, self.target_classes, advx.reject_index(model))
        score = torch.full((len(x),), float("-inf"), dtype=clean.dtype, device=x.device)
        best = Run(x, fooled(clean, y, False), score)
        queries = torch.ones(len(x), dtype=torch.int64, device=x.device)
        for rank in range(ranked.shape[1]):
            for _ in range(self.restarts):
                # One host sync per run: attack only the samples still unfooled.
                index = (~best.fooled).nonzero().squeeze(1)
                if index.numel() == 0:
                    return best.x_adv, queries
                with advx.for_samples(index):  # the run calls the model on these samples
                    run, passes = self._one_run(model, x[index], y[index],
                                                ranked[index, rank], y[index], threat,
                                                rng.select(index))
                queries[index] += passes
                best = merge(best, run, index)
        return best.x_adv, queries


def ranked_targets(logits, y, count, reject=None):
    """The ``count`` classes other than ``y`` with the highest logits, most likely first: at
    most all the other classes, never the output ``reject`` (a detector's, or None)."""
    logits = logits.scatter(1, y.unsqueeze(1), float("-inf"))
    others = logits.shape[1] - 1
    if reject is not None and reject < logits.shape[1]:
        logits[:, reject] = float("-inf")
        others -= 1
    return logits.topk(min(count, others), dim=1).indices
