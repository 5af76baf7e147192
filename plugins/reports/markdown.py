"""report.md and report.html: a run's report for people, rendered from report.json.

The page is the run's header and clean accuracies, then the sections the run hands over (the
protocol's and any plugin's, from ``advx_report_sections``), then the pictures report.json
lists.  Both files are functions of report.json and the PNG files it lists, so
``advx report RUN_DIR`` rebuilds them without recomputing anything.
"""

import re
from pathlib import Path
from urllib.parse import quote

import advx

from .html import to_html

REQUIRED = ("advx_version", "torch_version", "device", "dataset", "seconds", "models")
ENTRY_KEYS = {"models": ("id", "source", "clean_accuracy"), "pictures": ("kind", "path"),
              "skipped_pictures": ("kind", "reason")}


def markdown(report, sections=()):
    """report.md: the header, clean accuracy, ``sections`` (Markdown blocks), the pictures."""
    lines = [f"# advx report{': ' + report['title'] if report.get('title') else ''}", ""]
    lines += [f"advx {report['advx_version']}, torch {report['torch_version']}, "
              f"device {report['device']}, dataset {report['dataset']['name']} "
              f"({report['dataset']['n']} test samples), {report['seconds']:.1f} s.", ""]
    lines += ["## Clean accuracy", "", "| model | source | clean accuracy |", "|---|---|---|"]
    for model in report["models"]:
        lines.append(f"| {model['id']} | {model['source']} | {_pct(model['clean_accuracy'])} |")
    for block in sections:
        lines += ["", block.strip("\n")]
    lines += _pictures_section(report.get("pictures"), report.get("skipped_pictures"))
    return "\n".join(lines + [""])


def html(report, run_dir, sections=()):
    """report.html: :func:`markdown` as one self-contained page, pictures read from
    ``run_dir``."""
    return to_html(markdown(report, sections), run_dir)


def write_pages(out_dir, report, sections=()):
    """Write report.md and report.html (pictures embedded from ``out_dir``); their paths."""
    problem = check_report(report)
    if problem:
        raise advx.UsageError(problem)
    out_dir = Path(out_dir)
    pages = (out_dir / "report.md", out_dir / "report.html")
    advx.write_text_atomically(pages[0], markdown(report, sections))
    advx.write_text_atomically(pages[1], html(report, out_dir, sections))
    return list(pages)


def check_report(report):
    """The first thing that keeps ``report`` (parsed report.json) from being rendered, or None."""
    if not isinstance(report, dict):
        return f"its top level is a JSON {type(report).__name__}, not an object"
    missing = [key for key in REQUIRED if key not in report]
    if missing:
        return "it lacks " + ", ".join(map(repr, missing))
    if not isinstance(report["dataset"], dict) or {"name", "n"} - set(report["dataset"]):
        return "'dataset' lacks 'name' or 'n'"
    for key, fields in ENTRY_KEYS.items():
        entries = report.get(key)
        if entries is not None and not isinstance(entries, list):
            return f"{key!r} is not a list"
        for index, entry in enumerate(entries or []):
            if not isinstance(entry, dict):
                return f"{key}[{index}] is not an object"
            absent = [f for f in fields if f not in entry]
            if absent:
                return f"{key}[{index}] lacks " + ", ".join(map(repr, absent))
    for index, picture in enumerate(report.get("pictures") or []):
        if not isinstance(picture["path"], str):
            return f"pictures[{index}]: 'path' is not a string"
    return None


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _pictures_section(pictures, skipped):
    """Each picture as a heading and an image; a list of the pictures not drawn and why."""
    if not pictures and not skipped:
        return []
    lines = ["", "## Pictures"]
    for picture in pictures or []:
        title = _picture_title(picture)
        alt = re.sub(r"([\\\[\]])", r"\\\1", title)
        lines += ["", f"### {title}", "", f"![{alt}]({quote(picture['path'], safe='/')})"]
    if skipped:
        lines += ["", "Pictures not drawn:", ""]
        lines += [f"- {_one_line(s['kind'])}: {_one_line(s['reason'])}" for s in skipped]
    return lines


def _picture_title(picture):
    title = picture.get("title") or " ".join(
        str(picture[k]) for k in ("kind", "model", "attack") if picture.get(k))
    return _one_line(title)


def _one_line(text):
    return " ".join(str(text).split())
