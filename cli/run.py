"""``advx run``: evaluate what a spec describes (the built-in quickstart without one)."""

import datetime
from importlib import resources
from pathlib import Path

import advx
import click
from advx.run.execute import execute
from advx.run.spec import load_spec, parse_spec, with_overrides

from .folders import prepare_folders
from .listing import warn_failures
from .progress import progress_factory


def quickstart_text():
    """The built-in quickstart spec (cli/quickstart.toml)."""
    return resources.files("advx.cli").joinpath("quickstart.toml").read_text(encoding="utf-8")


def default_out_dir():
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / stamp


def chosen_executor(registry, spec, name, address):
    """The executor ``--executor``/``--address`` ask for (None: the spec's, else local); the
    spec's parameters are kept when the flag names the spec's executor."""
    if name is None and address is None:
        return None
    if name is None:
        if spec.executor is None:
            raise advx.UsageError("--address needs an executor that takes one: "
                                  "--executor ray")
        name = spec.executor.name
    params = {} if address is None else {"address": address}
    if spec.executor is not None and spec.executor.name == name:
        params = {**advx.plugin_params(spec.executor, defaults=False), **params}
    return registry.create("executors", name, **params)


@click.command("run")
@click.argument("spec_path", metavar="[SPEC]", required=False,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: runs/<timestamp>/).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where models and attacks run.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate the first N test samples.")
@click.option("--seed", type=int, help="Base seed of every adversarial set (overrides the spec).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Cache root (default: $ADVX_CACHE or data_cache/).")
@click.option("--progress/--no-progress", default=None,
              help="Show progress bars (default: when stderr is a terminal).")
@click.option("--executor", "executor_name", metavar="NAME",
              help="Where shards of sets are computed: local (default) or ray "
                   "(pip install advx[ray]); overrides the spec's [executor].")
@click.option("--address", metavar="ADDR",
              help="Ray cluster to join (auto: the one running here; default: start a local "
                   "instance sized to this machine).")
def run_command(spec_path, out_dir, device, limit, seed, cache_dir, progress, executor_name,
                address):
    """Evaluate models against attacks as SPEC (TOML) describes; write report.json and report.md.

    Without SPEC, runs the quickstart: the embedded MNIST sample, blog-cnn (trained on first use
    and cached), FGSM and PGD at eps 0.1, 0.2 and 0.3 on 1,000 test digits.
    """
    registry = advx.get_registry()
    warn_failures(registry)
    if spec_path is None:
        spec = parse_spec(quickstart_text(), registry, source="<quickstart>")
    else:
        spec = load_spec(spec_path, registry)
    spec = with_overrides(spec, limit=limit, seed=seed)
    executor = chosen_executor(registry, spec, executor_name, address)
    out_dir = out_dir or default_out_dir()
    prepare_folders(out_dir, cache_dir)  # before any model trains or any attack runs
    execute(spec, registry, out_dir, device=device, cache=cache_dir,
            progress=progress_factory(progress), executor=executor)
    page = out_dir / "report.md"
    if page.is_file():
        click.echo(page.read_text(encoding="utf-8"), nl=False)
    else:
        click.echo("No installed plugin writes report.md (the built-in reports plugin is "
                   "disabled); report.json holds the results.")
    written = [p for p in ("report.json", "report.md", "report.html", "spec.toml")
               if (out_dir / p).is_file()]
    click.echo(f"Wrote {', '.join(str(out_dir / p) for p in written[:-1])} and "
               f"{out_dir / written[-1]}.")
