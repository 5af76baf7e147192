"""The ``advx`` command: a click group whose commands live one per module, loaded on use.

``advx --version`` and ``advx --help`` import neither torch nor any plugin: the built-in
commands' modules load when one of them runs, and plugin commands (``advx_register_commands``)
are added to this group the first time a name is not a built-in one.
"""

import importlib
import traceback

import click
from advx._version import __version__
from advx.kernel.errors import AdvxError, ExitCode, UsageError

# command name -> ("module:attribute" of its click command, its one-line help for --help,
# which must not import the module; a test checks that these match the commands' own)
BUILTIN = {
    "cache": ("cache_cmd:cache_group",
              "Adversarial example sets in the cache (<cache>/adversarials/, one HDF5 file each)."),
    "list": ("listing:list_command",
             "List registered attacks, models, datasets, defenses, generators, protocols, "
             "executors."),
    "plugins": ("plugins_cmd:plugins_command",
                "Show installed plugins as JSON (built-ins only with --all)."),
    "report": ("report_cmd:report_command",
               "Rewrite RUN_DIR/report.md and RUN_DIR/report.html from RUN_DIR/report.json."),
    "run": ("run:run_command", "Evaluate models against attacks as SPEC (TOML) describes; write "
                               "report.json and report.md."),
    "train": ("train_cmd:train_command",
              "Train and cache the weights of every model in SPEC (defenses included)."),
}


class SpecUsageError(click.ClickException):
    """A usage error found in the user's input (spec, name, parameter): exit code 2."""

    exit_code = ExitCode.USAGE


class AdvxGroup(click.Group):
    """Loads commands on use and maps advx's exceptions to exit codes; ``--debug`` shows the
    traceback instead."""

    plugin_commands_loaded = False

    def list_commands(self, ctx):
        return sorted(set(BUILTIN) | set(self.commands))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        if name in BUILTIN:
            module, attribute = BUILTIN[name][0].split(":")
            command = getattr(importlib.import_module(f".{module}", __name__), attribute)
            self.add_command(command, name)
            return command
        self.load_plugin_commands()
        return self.commands.get(name)

    def format_commands(self, ctx, formatter):
        """The command list of ``--help``, without importing the built-in commands' modules."""
        rows = [(name, _shorten(BUILTIN[name][1], formatter.width - 6 - len(name)))
                for name in sorted(BUILTIN) if name not in self.commands]
        rows += [(name, command.get_short_help_str(formatter.width - 6 - len(name)))
                 for name, command in sorted(self.commands.items()) if not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))

    def load_plugin_commands(self):
        """Let every plugin add its commands to this group (once)."""
        if not AdvxGroup.plugin_commands_loaded:
            AdvxGroup.plugin_commands_loaded = True
            import advx

            advx.get_registry().hook.advx_register_commands(cli=self)

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


@click.group(cls=AdvxGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Plugins may add commands of their own: `advx plugins` lists the installed "
                    "plugins and the hooks they implement.")
@click.version_option(__version__, package_name="advx", prog_name="advx")
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


def _shorten(text, limit):
    """``text`` cut at a word to at most ``limit`` characters, as click shortens help."""
    return click.utils.make_default_short_help(text, max(limit, 45))


def main():
    """Console-script entry point."""
    cli(prog_name="advx")


__all__ = ["cli", "main"]
