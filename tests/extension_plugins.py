"""Small third-party plugins that use every extension point, written as a plugin author would:
``import advx`` and nothing else of it.  tests/test_extension_points.py registers them.

- one defense of each kernel kind: a preprocessor, a detector, a whole-model defense and a
  training defense (the last two train modules of their own through the build context);
- a protocol with its own set method and its own report section;
- implementations of the spec-table, run-finished, report-section, write-report and export
  hooks.
"""

import json

import advx
import attrs
import torch
import torch.nn.functional as F
from torch import nn

# -- defenses, one per kind ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Quantize(advx.Preprocessor):
    """Rounds every input to one of ``levels`` values (a step function: BPDA when adaptive)."""

    name = "test-quantize"
    levels: int = attrs.field(default=8, metadata={"help": "values per input coordinate"})

    def transform(self, x):
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


class _LowConfidence(nn.Module):
    """Score: one minus the classifier's largest softmax probability."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return 1 - F.softmax(self.classifier(x), dim=1).amax(1)


@attrs.frozen(kw_only=True)
class ConfidenceDetector(advx.Detector):
    """Rejects inputs the classifier is unsure about."""

    name = "test-confidence-detector"

    def scorer(self, classifier, context):
        return _LowConfidence(classifier)


TWIN_TRAININGS = []  # the twins trained (a test reads it: cached twins are not retrained)


class _Average(nn.Module):
    def __init__(self, first, second):
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x):
        return (self.first(x) + self.second(x)) / 2


@attrs.frozen(kw_only=True)
class TwinEnsemble(advx.ModelDefense):
    """Averages the classifier's logits with those of a twin trained by the defense itself."""

    name = "test-twin-ensemble"
    seed: int = attrs.field(default=5, metadata={"help": "seed of the twin"})

    def build(self, classifier, context):
        info = context.dataset.info

        def make():
            return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(info.shape).prod()),
                                                         info.num_classes))

        def train(module):
            TWIN_TRAININGS.append(self.seed)
            return context.fit(module, advx.TrainRecipe(epochs=2, batch_size=64, lr=0.01,
                                                        seed=self.seed))

        twin = context.cached({"twin": self.name, "seed": self.seed}, make, train)
        return _Average(classifier, twin)


class _Scaled(nn.Module):
    def __init__(self, inner, temperature):
        super().__init__()
        self.inner, self.temperature = inner, temperature

    def forward(self, x):
        return self.inner(x) / self.temperature


@attrs.frozen(kw_only=True)
class Temperature(advx.ModelDefense):
    """Divides the logits by a temperature (a whole-model defense that knows no detector)."""

    name = "test-temperature"
    temperature: float = attrs.field(default=2.0, metadata={"help": "the temperature"})

    def build(self, classifier, context):
        return _Scaled(classifier, self.temperature)


@attrs.frozen(kw_only=True)
class LabelSmoothing(advx.TrainingDefense):
    """Trains on labels smoothed by ``smoothing`` (a training defense with its own loss)."""

    name = "test-label-smoothing"
    smoothing: float = attrs.field(default=0.1, metadata={"help": "label smoothing"})

    def train(self, module, recipe, context):
        return context.fit(module, recipe, loss=lambda m, x, y, position: F.cross_entropy(
            m(x), y, label_smoothing=self.smoothing))


@advx.hookimpl
def advx_register_defenses(register):
    for cls in (Quantize, ConfidenceDetector, TwinEnsemble, Temperature, LabelSmoothing):
        register(cls)


# -- a protocol with its own set method and section ---------------------------------------

class HalfEps(advx.SetMethod):
    """The attack at half the request's eps: a set computed by a plugin's own method."""

    def __init__(self, eps):
        self.eps = eps

    def identity(self):
        return {"name": "test-half-eps", "eps": self.eps / 2}

    def compute(self, job, start, stop, state):
        x, y, targets, seeds = job.rows(start, stop)
        return job.attack(job.model, x, y, job.threat.with_eps(self.eps / 2), targets=targets,
                          seed=seeds)


@attrs.frozen(kw_only=True)
class HalfEpsProtocol(advx.Protocol):
    """Robust accuracy of each attack at its first eps and at half of it."""

    name = "test-half-eps"

    def evaluate(self, context):
        rows = []
        for model in context.models:
            for attack in context.attacks:
                eps = attack.eps[0]
                full = context.outcome(model, attack, eps)
                half = context.obtain(advx.SetRequest(model, attack, None, HalfEps(eps)))
                pred = torch.from_numpy(half.stored.arrays["pred"])
                correct = context.clean_correct(model)
                rejected = advx.reject_index(context.module(model))
                survived = (pred == context.y) | (pred == rejected)
                rows.append({"model": model.id, "attack": attack.id, "eps": eps,
                             "full": float(context.robust_correct(model, full).float().mean()),
                             "half": float((correct & survived).float().mean()),
                             "cache": half.origin})
        return {"clean_accuracy": {m.id: float(context.clean_correct(m).float().mean())
                                   for m in context.models}, "half_eps": rows}

    def sections(self, report):
        lines = ["## Half eps", "", "| model | attack | eps | at eps | at eps / 2 |",
                 "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['attack']} | {r['eps']:g} | {100 * r['full']:.1f}% "
                  f"| {100 * r['half']:.1f}% |" for r in report["half_eps"]]
        return ["\n".join(lines)]


@advx.hookimpl
def advx_register_protocols(register):
    register(HalfEpsProtocol)


# -- the other hooks -----------------------------------------------------------------------

def _parse_notes(value, spec):
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise advx.UsageError("needs text = \"...\"")
    if value.get("model", spec.models[0].id) not in [m.id for m in spec.models]:
        raise advx.UsageError(f"model {value['model']!r} is not a model of the spec")
    return value["text"]


@advx.hookimpl
def advx_register_tables(register):
    register("test-notes", _parse_notes)


@advx.hookimpl
def advx_run_finished(context, report, out_dir):
    notes = context.tables.get("test-notes")
    if notes is not None:
        advx.write_text_atomically(out_dir / "notes.txt", notes + "\n")
        report["test_notes"] = {"text": notes, "models": [m.id for m in context.models]}


@advx.hookimpl
def advx_report_sections(report):
    if "test_notes" not in report:
        return []
    return [f"## Notes\n\n{report['test_notes']['text']}"]


@advx.hookimpl
def advx_write_report(report, sections, out_dir):
    path = out_dir / "summary.json"
    advx.write_text_atomically(path, json.dumps({"sections": len(sections),
                                                 "models": len(report["models"])}))
    return [path]


@advx.hookimpl
def advx_export_set(stored, clean, path, count):
    extra = path.with_suffix(".count.txt")
    advx.write_text_atomically(extra, f"{min(count, stored.n)}\n")
    return [f"Wrote {extra}"]
