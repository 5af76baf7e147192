"""``advx train``: train (or find in the cache) the weights of every model a spec names."""

import sys
import time
from pathlib import Path

import advx
import click
from advx.run import stack as defense_stack
from advx.run.spec import load_spec
from advx.train import zoo
from advx.train.loop import evaluate_accuracy

from . import cli
from .listing import warn_failures


@cli.command("train")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where the models train.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Cache root (default: $ADVX_CACHE or data_cache/).")
@click.option("--progress/--no-progress", default=None,
              help="Show progress bars (default: when stderr is a terminal).")
def train_command(spec_path, device, cache_dir, progress):
    """Train and cache the weights of every model in SPEC (training defenses included).

    Models already in the cache are loaded, not retrained; `advx run SPEC` then finds them all.
    Prints each model's source (trained or cache), its test accuracy and its weights file.
    """
    registry = advx.get_registry()
    warn_failures(registry)
    spec = load_spec(spec_path, registry)
    show = sys.stderr.isatty() if progress is None else progress
    dataset = registry.create("datasets", spec.dataset.name, **spec.dataset.params)
    x, y = dataset.load("test")
    click.echo("| model | defenses | source | test accuracy | seconds | weights |")
    click.echo("|---|---|---|---|---|---|")
    for model in spec.models:
        training, preprocessors = defense_stack.instances(registry, model)
        started = time.perf_counter()
        module = zoo.load_model(model.plugin.name, dataset, params=model.plugin.params,
                                recipe=model.train, checkpoint=model.checkpoint, cache=cache_dir,
                                device=device, progress=show, registry=registry,
                                training=training)
        seconds = time.perf_counter() - started
        wrapped = defense_stack.wrap(module, preprocessors, model.adaptive)
        accuracy = evaluate_accuracy(wrapped, x, y, device=next(module.parameters()).device)
        metadata = module.advx_metadata
        names = ", ".join(d.name for d in model.defenses) or "none"
        click.echo(f"| {model.id} | {names} | {metadata.get('source')} | {accuracy:.2%} | "
                   f"{seconds:.1f} | {metadata.get('path', '')} |")
