"""``advx plugins``: the loaded plugin modules, their distributions and load failures."""

import json

import advx
import click


@click.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Include advx's built-in plugins.")
def plugins_command(show_all):
    """Show installed plugins as JSON (built-ins only with --all)."""
    registry = advx.get_registry()
    loaded = registry.loaded
    rows = []
    for name, dist in sorted(loaded.distributions.items()):
        if dist == "advx" and not show_all:
            continue
        hooks = sorted(h.name for h in loaded.pm.get_hookcallers(loaded.pm.get_plugin(name)))
        rows.append({"name": name, "distribution": dist, "hooks": hooks})
    rows += [{"name": f.name, "distribution": f.distribution, "error": f.error}
             for f in registry.failures]
    click.echo(json.dumps(rows, indent=2))
