"""A progress bar on stderr for long loops (training epochs, attack batches)."""

import contextlib

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _no_op(n=1, status=None):
    """Advance nothing: the bar is disabled."""


@contextlib.contextmanager
def progress_bar(description, total, enabled=True):
    """A rich progress bar over ``total`` steps; yields ``advance(n=1, status=None)``.

    ``status`` is a short text shown after the bar (for example the running loss). With
    ``enabled`` False nothing is printed and ``advance`` does nothing.
    """
    if not enabled:
        yield _no_op
        return
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
