"""Defensive distillation (Papernot et al., 2016), as Carlini & Wagner (2016) reproduced it."""

import copy

import attrs
import torch
import torch.nn.functional as F
from advx import MAX_SCALE, finite, to_float

from ._recipe import RecipeOverrides


@attrs.frozen(kw_only=True)
class Distillation(RecipeOverrides):
    """A teacher trained at temperature T; the model trained on its soft labels at T; deployed
    at T = 1.

    The teacher (the same architecture, from the same initial weights) minimises the
    cross-entropy of ``softmax(Z / T)``; the student then minimises the cross-entropy between
    its ``softmax(Z / T)`` and the teacher's.  Deployed at T = 1, the student's logits are about
    T times larger than a normal model's, so its softmax saturates: the cross-entropy gradient
    underflows to zero and FGSM or PGD on the cross-entropy "fail", while attacks on the logits
    (CW, whose margin loss reads Z directly) do not (Carlini & Wagner, 2016).  advx models
    return logits, and every advx attack works on them.  Presets: ``cpu`` (T = 100 with the
    model's own recipe for teacher and student, on the MNIST sample), ``paper`` (T = 100, SGD
    at 0.01 with momentum 0.9, batches of 128, 50 epochs each, as Carlini & Wagner trained it).
    """

    name = "distillation"
    presets = {
        "cpu": {"temperature": 100.0},
        "paper": {"temperature": 100.0, "epochs": 50, "lr": 0.01, "batch_size": 128,
                  "optimizer": "sgd", "lr_schedule": "constant"},
    }

    temperature: float = attrs.field(
        default=100.0, converter=to_float, validator=finite(0, MAX_SCALE, low_open=True),
        metadata={"help": "softmax temperature T of teacher and student training"})

    def train(self, module, recipe, context):
        t, label = self.temperature, context.label or "model"
        teacher = copy.deepcopy(module)
        context.fit(teacher, recipe, label=f"{label} teacher (T={t:g})",
                    loss=lambda m, x, y, position: F.cross_entropy(m(x) / t, y))

        def soft_labels(m, x, y, position):
            with torch.no_grad():
                target = F.softmax(teacher(x) / t, dim=1)
            return -(target * F.log_softmax(m(x) / t, dim=1)).sum(1).mean()

        return context.fit(module, recipe, label=f"{label} student (T={t:g})", loss=soft_labels)
