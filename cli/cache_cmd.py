"""``advx cache``: the adversarial example sets already computed, with their provenance."""

import json
import pathlib

import advx
import click
from advx.kernel.errors import UsageError
from advx.store.export import clean_inputs, export_npz
from advx.store.format import CorruptSetError, read_set, resolve_key, sets_dir
from advx.store.inventory import collect, files_of, list_sets, remove_set, verify
from advx.store.paths import cache_root

CACHE_OPTION = click.option(
    "--cache", "cache_dir", type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Cache root (default: $ADVX_CACHE or data_cache/).")


@click.group("cache")
def cache_group():
    """Adversarial example sets in the cache (<cache>/adversarials/, one HDF5 file each).

    KEY may be any unique prefix of a set's key.
    """


@cache_group.command("ls")
@CACHE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ls_command(cache_dir, as_json):
    """List every set: key, model, attack, threat, samples done/total, size, created."""
    entries = list_sets(cache_root(cache_dir))
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"no adversarial sets in {sets_dir(cache_root(cache_dir))}")
        return
    click.echo(f"{'key':<12}  {'status':<8}  {'model':<14}  {'attack':<14}  {'threat':<18}  "
               f"{'done/total':>11}  {'size':>9}  created")
    for e in entries:
        click.echo(f"{e.key[:12]:<12}  {e.status:<8}  {e.model[:14]:<14}  {e.attack[:14]:<14}  "
                   f"{e.threat[:18]:<18}  {f'{e.done}/{e.total}':>11}  {_size(e.size):>9}  "
                   f"{e.created}")


@cache_group.command("info")
@CACHE_OPTION
@click.argument("key")
def info_command(cache_dir, key):
    """Show one set: its files, provenance and datasets."""
    root = cache_root(cache_dir)
    full, paths = files_of(root, key)
    report = {"key": full, "files": []}
    for path in paths:
        report["files"].append(_file_info(path))
    click.echo(json.dumps(report, indent=2, default=str))


def _file_info(path):
    import h5py
    from advx.store.inventory import describe

    entry = describe(path)
    info = {"path": str(path), "status": entry.status, "done": entry.done, "total": entry.total,
            "size": entry.size}
    if entry.problem:
        info["problem"] = entry.problem
        return info
    with h5py.File(path, "r", locking=False) as f:
        info["format"] = f"{f.attrs['format']} v{int(f.attrs['format_version'])}"
        info["datasets"] = {name: f"{f[name].dtype} {f[name].shape}" for name in f
                            if isinstance(f[name], h5py.Dataset)}
        info["provenance"] = json.loads(f.attrs["provenance"])
    return info


@cache_group.command("verify")
@CACHE_OPTION
def verify_command(cache_dir):
    """Check every set file (format, completeness, content digest); exit 1 on a bad one."""
    entries = list_sets(cache_root(cache_dir))
    bad = 0
    for entry in entries:
        problem = verify(entry.path)
        status = "BAD" if problem else "ok"
        bad += bool(problem)
        click.echo(f"{status:<4} {entry.path.name}" + (f": {problem}" if problem else ""))
    click.echo(f"{len(entries)} files checked, {bad} bad.")
    if bad:
        raise SystemExit(1)


@cache_group.command("export")
@CACHE_OPTION
@click.argument("key")
@click.argument("out", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@click.option("--count", default=8, show_default=True, type=click.IntRange(min=1),
              help="Samples drawn in the PNG grid.")
def export_command(cache_dir, key, out, count):
    """Write the set KEY to OUT (.npz) and a PNG grid of clean / perturbation / adversarial."""
    root = cache_root(cache_dir)
    full = resolve_key(root, key)
    path = sets_dir(root) / f"{full}.h5"
    if not path.exists():
        raise UsageError(f"set {full[:12]} is not complete yet (resume its run first)")
    try:
        stored = read_set(path)
    except CorruptSetError as exc:
        raise UsageError(f"set {full[:12]} cannot be read: {exc}") from None
    out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
    registry = advx.get_registry()
    x, why = clean_inputs(stored, registry)
    export_npz(stored, out, x)
    click.echo(f"Wrote {out}" + ("" if x is not None else " (without clean inputs: " + why + ")"))
    for lines in registry.hook.advx_export_set(stored=stored, clean=x, path=out,
                                              count=count):
        for line in lines or []:
            click.echo(line)


@cache_group.command("rm")
@CACHE_OPTION
@click.argument("key")
def rm_command(cache_dir, key):
    """Remove the set KEY (its complete and partial files), unless a run is computing it."""
    full, paths = remove_set(cache_root(cache_dir), key)
    click.echo(f"Removed set {full} ({len(paths)} file{'s' if len(paths) != 1 else ''}).")


@cache_group.command("gc")
@CACHE_OPTION
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc_command(cache_dir, dry_run):
    """Remove sets of other format versions, unreadable files and stale lock/temp files
    (never what a running process is using)."""
    found = collect(cache_root(cache_dir), dry_run=dry_run)
    for path, reason, action in found:
        click.echo(f"{action} {path.name}: {reason}")
    count = sum(action != "kept" for *_, action in found)
    click.echo(f"{count} file{'s' if count != 1 else ''} "
               f"{'to remove' if dry_run else 'removed'}.")


def _size(size):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
