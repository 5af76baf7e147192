"""The ``advx`` command: a click group whose commands live one per module."""

import traceback

import advx
import click
from advx.kernel.errors import AdvxError, ExitCode, UsageError


class SpecUsageError(click.ClickException):
    """A usage error found in the user's input (spec, name, parameter): exit code 2."""

    exit_code = ExitCode.USAGE


class AdvxGroup(click.Group):
    """Maps advx's exceptions to exit codes; ``--debug`` shows the traceback instead."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            if isinstance(exc, UsageError):
                raise SpecUsageError(str(exc)) from None
            if isinstance(exc, AdvxError):
                raise click.ClickException(str(exc)) from None
            click.echo(traceback.format_exception_only(exc)[-1].strip(), err=True)
            raise click.ClickException(
                "internal error (run again with --debug for the traceback)") from None


@click.group(cls=AdvxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(advx.__version__, package_name="advx", prog_name="advx")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def cli(debug):
    """Evaluate image classifiers against adversarial attacks.

    \b
    advx run                      the built-in quickstart (MNIST sample, blog-cnn, FGSM + PGD)
    advx run spec.toml --out DIR  evaluate what a run spec describes
    advx train spec.toml          train and cache the spec's models (defenses included)
    advx report DIR               rebuild a run's report.md and report.html
    advx list attacks             every attack the installed plugins registered
    advx cache ls                 adversarial example sets already computed
    """


def main():
    """Console-script entry point."""
    cli(prog_name="advx")


from . import cache_cmd, listing, plugins_cmd, report_cmd, run, train_cmd  # noqa: E402  (the commands attach themselves to cli)

advx.get_registry().loaded.pm.hook.advx_register_commands(cli=cli)

__all__ = ["cli", "main", "cache_cmd", "listing", "plugins_cmd", "report_cmd", "run", "train_cmd"]
