"""``advx report``: rebuild a finished run's report.md and report.html from its report.json."""

from pathlib import Path

import advx
import click
from advx.run.report import read_report, write_pages

from .listing import warn_failures


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def report_command(run_dir):
    """Rewrite RUN_DIR/report.md and RUN_DIR/report.html from RUN_DIR/report.json.

    RUN_DIR is the output folder of a finished `advx run`. Reads only that folder (report.json
    and the pictures it lists, embedded into report.html): no attack is recomputed and the cache
    is not touched.
    """
    report = read_report(run_dir)
    registry = advx.get_registry()
    warn_failures(registry)
    try:
        written = write_pages(report, run_dir, registry)
    except advx.UsageError as exc:
        raise advx.UsageError(f"{run_dir / 'report.json'}: not an advx report: {exc}") from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a value of the wrong type
        raise advx.UsageError(f"{run_dir / 'report.json'}: not an advx report: a value has the "
                              f"wrong type ({type(exc).__name__}: {exc})") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write into {run_dir}: {exc.strerror or exc}") from exc
    if not written:
        raise click.ClickException("no installed plugin writes report pages (the built-in "
                                   "reports plugin is disabled)")
    for picture in report.get("pictures") or []:
        problem = _picture_problem(run_dir, picture["path"])
        if problem:
            click.echo(f"note: picture {picture['path']} is not embedded: {problem}", err=True)
    click.echo(f"Wrote {' and '.join(str(p) for p in written)}.")


def _picture_problem(run_dir, relative):
    """Why the picture at ``relative`` cannot be embedded, or None."""
    root = Path(run_dir).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        return "its path leads outside the run folder"
    if not path.is_file():
        return "the file is missing"
    return None
