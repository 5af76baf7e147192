"""Running a spec from start to finish: protocol, artefacts, report files.

1. The protocol evaluates on a :class:`~advx.run.context.Session` (the run context).  An
   executor that computes units concurrently first trains the classifiers the cache lacks,
   together (:mod:`advx.train.units`), then computes the sets the protocol lists, together.
2. ``advx_run_finished(context, report, out_dir)``: plugins write artefacts (the built-in
   reports plugin draws the pictures) and may add entries of their own to the report.
3. spec.toml and report.json are written (atomically).
4. ``advx_write_report(report, sections, out_dir)``: plugins write the pages (report.md,
   report.html) from report.json and the protocol's and plugins' sections, as
   ``advx report RUN_DIR`` does again later.
"""

import copy
import datetime
import json
import time
from pathlib import Path

import torch

from .._version import __version__
from ..kernel.errors import AdvxError
from ..kernel.params import plugin_params
from ..kernel.progress import no_progress
from ..kernel.protocol import RUN_KEYS
from ..store.atomic import write_text
from ..train.units import train_models
from .context import Session
from .report import write_pages
from .spec_write import spec_to_dict
from .tomlwrite import dumps


class ProtocolError(AdvxError):
    """A protocol returned results the report cannot hold."""


def execute(spec, registry, out_dir, *, device="auto", cache=None, progress=no_progress,
            executor=None):
    """Evaluate ``spec``; write spec.toml, report.json and the plugins' pages to ``out_dir``.

    ``executor`` (an :class:`advx.Executor`) overrides the spec's ``[executor]`` (default:
    ``local``); it is closed when the run ends."""
    started, out_dir = time.perf_counter(), Path(out_dir)
    session = Session(spec, registry, device=device, cache=cache, progress=progress,
                      executor=executor)
    session.observers.append(
        lambda unit, result: registry.hook.advx_unit_finished(unit=unit, result=result))
    try:
        if session.executor.prefetch:  # models, then sets, together on the executor
            train_models(model_entries(spec), session.builder, session.executor,
                         session.progress)
            session.prefetch(spec.protocol.requests(session))
        measured = checked_results(spec.protocol, spec.protocol.evaluate(session))
    finally:
        session.executor.close()
    report = {
        "advx_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": str(session.device),
        "title": spec.title,
        "spec": spec_to_dict(spec),
        "dataset": {"name": spec.dataset.name, "identity": spec.dataset.identity(),
                    "n": session.n},
        "protocol": spec.protocol.name,
        "models": [_model_entry(session, m, measured) for m in spec.models],
        **measured,
    }
    before = copy.deepcopy(report)  # JSON-ready data: a plugin must not change it in place
    registry.hook.advx_run_finished(context=session, report=report, out_dir=out_dir)
    changed = sorted(k for k, value in before.items() if report.get(k) != value)
    if changed:
        raise ProtocolError(f"a plugin's advx_run_finished changed the report's "
                            f"{', '.join(changed)}; plugins add keys of their own")
    report["seconds"] = round(time.perf_counter() - started, 2)
    # wall time of the attack phase: computing, resuming or reading every adversarial set
    report["attack_phase_seconds"] = round(session.set_seconds, 3)
    write_text(out_dir / "spec.toml", dumps(report["spec"]))
    write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_pages(report, out_dir, registry)
    return report


def checked_results(protocol, measured):
    """``measured`` if it is a JSON-ready dict whose keys are not the run's own."""
    if not isinstance(measured, dict):
        raise ProtocolError(f"protocol {protocol.name!r} returned {type(measured).__name__}, "
                            "not a dict")
    taken = sorted(set(measured) & RUN_KEYS)
    if taken:
        raise ProtocolError(f"protocol {protocol.name!r} returned the key(s) "
                            f"{', '.join(taken)}, which the run writes itself; use other names")
    try:
        json.dumps(measured)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"protocol {protocol.name!r} returned a value JSON cannot hold: "
                            f"{exc}") from None
    return measured


def model_entries(spec):
    """The model entries of ``spec`` and the source models of its transfer entries."""
    return [*spec.models, *(a.source for a in spec.attacks if a.source is not None)]


def _model_entry(session, model, measured):
    return {"id": model.id, "name": model.name,
            "params": plugin_params(model.plugin, defaults=False),
            "source": session.model_source(model),
            "defenses": [d.name for d in model.defenses], "adaptive": model.adaptive,
            "weights_digest": session.weights_digest(model),
            "clean_accuracy": measured.get("clean_accuracy", {}).get(model.id)}
