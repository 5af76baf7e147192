"""``advx report``: rebuild a finished run's report.md and report.html from its report.json."""

from pathlib import Path

import click
from advx.kernel.errors import UsageError
from advx.run.report import read_report, write_pages
from advx.run.report_html import data_uri

from . import cli


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def report_command(run_dir):
    """Rewrite RUN_DIR/report.md and RUN_DIR/report.html from RUN_DIR/report.json.

    RUN_DIR is the output folder of a finished `advx run`. Reads only that folder (report.json
    and the pictures it lists, embedded into report.html): no attack is recomputed and the cache
    is not touched.
    """
    report = read_report(run_dir)
    try:
        markdown_path, html_path = write_pages(run_dir, report)
    except (TypeError, ValueError, AttributeError) as exc:  # a value of the wrong type
        raise UsageError(f"{run_dir / 'report.json'}: not an advx report: a value has the "
                         f"wrong type ({type(exc).__name__}: {exc})") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write into {run_dir}: {exc.strerror or exc}") from exc
    for picture in report.get("pictures") or []:
        _, problem = data_uri(run_dir, picture["path"])
        if problem:
            click.echo(f"note: picture {picture['path']} is not embedded: {problem}", err=True)
    click.echo(f"Wrote {markdown_path} and {html_path}.")
