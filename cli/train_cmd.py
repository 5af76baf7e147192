"""``advx train``: train (or find in the cache) the weights of every model a spec names."""

import time
from pathlib import Path

import advx
import click
from advx.run.spec import load_spec
from advx.train import stack
from advx.train.builder import Builder

from .folders import prepare_cache
from .listing import warn_failures
from .progress import progress_factory


@click.command("train")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where the models train.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Cache root (default: $ADVX_CACHE or data_cache/).")
@click.option("--progress/--no-progress", default=None,
              help="Show progress bars (default: when stderr is a terminal).")
def train_command(spec_path, device, cache_dir, progress):
    """Train and cache the weights of every model in SPEC (defenses included).

    Transfer attacks' source models are trained too.

    Models already in the cache are loaded, not retrained; `advx run SPEC` then finds them all.
    Prints each model's source (trained or cache), its test accuracy and its weights file.
    """
    registry = advx.get_registry()
    warn_failures(registry)
    spec = load_spec(spec_path, registry)
    prepare_cache(cache_dir)  # before any model trains
    builder = Builder(spec.dataset, registry, device, cache_dir, progress_factory(progress))
    x, y = spec.dataset.load("test")
    click.echo("| model | defenses | source | test accuracy | seconds | weights |")
    click.echo("|---|---|---|---|---|---|")
    sources = [a.source for a in spec.attacks if a.source is not None]  # transfer sources
    for model in (*spec.models, *sources):
        started = time.perf_counter()
        built = stack.build(model, builder)
        seconds = time.perf_counter() - started
        accuracy = advx.evaluate_accuracy(built.module, x, y, device=builder.device)
        metadata = built.classifier.advx_metadata
        names = ", ".join(d.name for d in model.defenses) or "none"
        click.echo(f"| {model.id} | {names} | {metadata.get('source')} | {accuracy:.2%} | "
                   f"{seconds:.1f} | {metadata.get('path', '')} |")
