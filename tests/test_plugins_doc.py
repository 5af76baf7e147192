"""docs/plugins.md documents every hook with its exact signature, and the names it promises."""

import inspect
from pathlib import Path

import advx
import pytest
from advx.host import hookspecs

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("advx_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    signature = f"`{hook}{inspect.signature(getattr(hookspecs, hook))}`"
    assert signature in DOC, f"docs/plugins.md lacks {signature}"


def test_the_names_the_doc_promises_are_on_the_package_root():
    for name in ("Attack", "FixedEpsilonAttack", "MinimizationAttack", "ThreatModel",
                 "SampleStreams", "ModelPlugin", "DatasetInfo", "Dataset", "TrainRecipe",
                 "Preprocessor", "Detector", "Detected", "ModelDefense", "TrainingDefense",
                 "Defense", "BuildContext", "Protocol", "RunContext", "Outcome", "SetRequest",
                 "SetMethod", "UsageError", "reject_index", "write_text_atomically", "hookimpl"):
        assert f"advx.{name}" in DOC, name
        assert getattr(advx, name) is not None
