"""The built-in reports plugin: report.md, report.html, the pictures of a run, export PNGs.

It claims the spec table ``[pictures]``, draws the pictures when a run finishes (adding
``pictures`` and ``skipped_pictures`` to report.json), writes report.md and report.html from
report.json (again on ``advx report``), and draws a PNG grid on ``advx cache export``.
The drawing needs ``pip install advx[plots]`` (matplotlib, scikit-learn); without it the run
lists what it skipped and why.  Loaded through the ``advx`` entry point ``builtin-reports``.
"""

import advx

from . import export, markdown, picture_run


@advx.hookimpl
def advx_register_tables(register):
    register("pictures", picture_run.parse_pictures)


@advx.hookimpl
def advx_run_finished(context, report, out_dir):
    drawn, skipped = picture_run.render(context, report, out_dir, context.tables.get("pictures"))
    report["pictures"], report["skipped_pictures"] = drawn, skipped


@advx.hookimpl
def advx_write_report(report, sections, out_dir):
    return markdown.write_pages(out_dir, report, sections)


@advx.hookimpl
def advx_export_set(stored, clean, path, count):
    return export.export_png(stored, clean, path, count)
