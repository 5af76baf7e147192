"""``advx list``: what the installed plugins registered."""

import json

import advx
import click

KINDS = ("attacks", "models", "datasets", "defenses", "generators", "protocols", "executors")



def warn_failures(registry):
    """Report plugins that failed to load on stderr; the others keep working."""
    for failure in registry.failures:
        click.echo(f"warning: plugin {failure.name!r} ({failure.distribution}) failed: "
                   f"{failure.error}", err=True)


def _format_params(params):
    parts = []
    for p in params:
        default = "(required)" if p["required"] else f"={p['default']!r}"
        parts.append(f"{p['name']}{default}")
    return ", ".join(parts) or "none"


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of objects.")
def list_command(kind, as_json):
    """List registered attacks, models, datasets, defenses, generators, protocols, executors."""
    registry = advx.get_registry()
    entries = advx.list_plugins(kind)
    if as_json:
        click.echo(json.dumps(entries, indent=2, default=str))
    else:
        for k in [kind] if kind else list(KINDS):
            click.echo(f"{k}:")
            rows = [e for e in entries if e["kind"] + "s" == k]
            for e in rows:
                click.echo(f"  {e['name']:<20} {e['summary']}  [{e['plugin']}]")
                click.echo(f"  {'':<20} params: {_format_params(e['params'])}")
                if e.get("defense_kind"):
                    presets = ", ".join(e["presets"]) or "none"
                    click.echo(f"  {'':<20} {e['defense_kind']} defense; presets: {presets}")
            if not rows:
                click.echo("  (none installed)")
    warn_failures(registry)
