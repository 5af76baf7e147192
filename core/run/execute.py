"""Running a spec from start to finish: protocol, session, report files."""

import datetime
import time
from pathlib import Path

import attrs
import torch

from .._version import __version__
from ..train.loop import resolve_device
from . import picture_run
from .report import write_report
from .session import Session
from .spec import PluginSpec
from .tomlwrite import dumps


def with_overrides(spec, limit=None, seed=None):
    """``spec`` with the protocol's limit and seed replaced where given (CLI flags win)."""
    params = dict(spec.protocol.params)
    if limit is not None:
        params["limit"] = limit
    if seed is not None:
        params["seed"] = seed
    return attrs.evolve(spec, protocol=PluginSpec(spec.protocol.name, params))


def execute(spec, registry, out_dir, *, device="auto", cache=None, progress=True):
    """Evaluate ``spec``; write report.json, report.md and spec.toml to ``out_dir``."""
    started = time.perf_counter()
    protocol = registry.create("protocols", spec.protocol.name, **spec.protocol.params)
    session = Session(spec, registry, protocol, device=resolve_device(device), cache=cache,
                      progress=progress)
    hook = registry.loaded.pm.hook.advx_unit_finished
    session.observers.append(lambda unit, result: hook(unit=unit, result=result))
    measured = protocol.evaluate(session)
    drawn, skipped = picture_run.render(session, measured, Path(out_dir), spec.pictures)
    report = {
        "advx_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": str(session.device),
        "title": spec.title,
        "spec": spec.to_dict(),
        "dataset": {"name": spec.dataset.name, "identity": session.dataset.identity(),
                    "n": session.n},
        "protocol": spec.protocol.name,
        "models": [_model_entry(session, m, measured) for m in spec.models],
        **measured,
        "pictures": drawn,
        "skipped_pictures": skipped,
    }
    report["seconds"] = round(time.perf_counter() - started, 2)
    # wall time of the attack phase: computing, resuming or reading every adversarial set
    report["attack_phase_seconds"] = round(session.set_seconds, 3)
    write_report(out_dir, report, dumps(spec.to_dict()))
    return report


def _model_entry(session, model_spec, measured):
    session.model(model_spec)
    return {"id": model_spec.id, "name": model_spec.plugin.name,
            "params": model_spec.plugin.params, "source": session.model_sources[model_spec.id],
            "defenses": [d.name for d in model_spec.defenses], "adaptive": model_spec.adaptive,
            "weights_digest": session.weights_digest(model_spec),
            "clean_accuracy": measured.get("clean_accuracy", {}).get(model_spec.id)}
