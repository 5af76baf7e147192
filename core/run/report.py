"""The pages of a run: the sections the protocol and plugins contribute, and the hook that
writes them.  ``advx run`` and ``advx report RUN_DIR`` both go through :func:`write_pages`, so a
rebuilt page equals the first."""

import json
from pathlib import Path

from ..kernel.errors import UsageError


def report_sections(report, registry):
    """Markdown blocks for report.md: the protocol's :meth:`~advx.Protocol.sections`, then every
    plugin's ``advx_report_sections``.  A protocol that is not installed leaves a note."""
    blocks = []
    table = dict((report.get("spec") or {}).get("protocol") or {"name": report.get("protocol")})
    name = table.pop("name", None)
    try:
        protocol = registry.create("protocols", name, **table)
    except UsageError as exc:
        blocks.append(f"## Protocol results\n\nThe results of protocol {name!r} are in "
                      f"report.json only: {exc}")
    else:
        blocks += list(protocol.sections(report))
    for contributed in registry.hook.advx_report_sections(report=report):
        blocks += list(contributed or [])
    return blocks


def write_pages(report, out_dir, registry):
    """Have the plugins write the run's pages; the paths written."""
    sections = report_sections(report, registry)
    written = registry.hook.advx_write_report(report=report, sections=sections,
                                              out_dir=Path(out_dir))
    return [Path(p) for paths in written for p in (paths or [])]


def read_report(run_dir):
    """The parsed report.json of the run in ``run_dir``; a one-line :class:`UsageError`
    naming the file when it is missing or not a JSON object."""
    path = Path(run_dir) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (RUN_DIR must be the output folder of a "
                         "finished `advx run`)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno})") from None
    if not isinstance(report, dict):
        raise UsageError(f"{path}: not an advx report: its top level is a JSON "
                         f"{type(report).__name__}, not an object")
    return report
