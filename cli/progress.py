"""Progress bars on stderr (rich) for the command line: a progress factory as the core takes."""

import contextlib
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def progress_bar(description, total):
    """A rich progress bar over ``total`` steps; yields ``advance(n=1, status=None)``.

    ``status`` is a short text shown after the bar (for example the running loss).
    """
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, status="")

        def advance(n=1, status=None):
            fields = {} if status is None else {"status": status}
            bar.update(task, advance=n, **fields)

        yield advance


def progress_factory(show):
    """The factory for ``--progress/--no-progress``: bars when ``show`` (None: when stderr is
    a terminal), else the core's silent one."""
    import advx

    if show is None:
        show = sys.stderr.isatty()
    return progress_bar if show else advx.no_progress
