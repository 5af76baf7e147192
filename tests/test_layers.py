"""The layers of advx, enforced on the import statements of every module (read with ast).

    kernel <- host <- store <- train <- run <- testing
                                            <- cli (the command line)
    plugins: advx (the package root), advx.testing, and their own package only

A module imports only from its own layer or a lower one; no core module (but advx.testing,
written against the public API as plugins are) imports the package root (``import advx``, or
``from .. import get_registry``): the root is the public face that loads the layers, not a
layer itself; and the core's imports have no cycle.
Function-level imports count like any other.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"core": "advx", "plugins": "advx.plugins", "cli": "advx.cli"}
CORE_LAYERS = ("kernel", "host", "store", "train", "run", "testing")
PUBLIC_FOR_PLUGINS = ("advx", "advx.testing")


def modules():
    """module name -> (path, is a package)."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found[".".join([package, *parts])] = (path, is_package)
    return found


MODULES = modules()


def imports(name):
    """The advx modules ``name`` imports (absolute names; ``from X import y`` gives X.y when
    that is a module, else X)."""
    path, is_package = MODULES[name]
    return imports_in(path.read_text(), name, is_package)


def imports_in(text, name, is_package=False):
    """The advx modules the source ``text`` of module ``name`` imports."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "advx"}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            if base is None or base.split(".")[0] != "advx":
                continue
            subs = [f"{base}.{alias.name}" for alias in node.names]
            modules_named = [s for s in subs if s in MODULES]
            found |= set(modules_named) if len(modules_named) == len(subs) else {base}
    return found


def _absolute(node, package):
    if node.level == 0:
        return node.module
    parts = package.split(".")
    base = parts[:len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def layer(name):
    """The layer of an advx module: root, a core layer, plugins:<package>, or cli."""
    parts = name.split(".")
    if name in ("advx", "advx._version"):
        return "root"
    if parts[1] == "plugins":
        return f"plugins:{parts[2]}" if len(parts) > 2 else "plugins"
    if parts[1] == "cli":
        return "cli"
    return parts[1]


def allowed(importer, imported):
    """Whether a module of layer ``importer`` may import ``imported`` (a module name)."""
    target = layer(imported)
    if importer.startswith("plugins"):
        return (imported in PUBLIC_FOR_PLUGINS or imported.startswith("advx.testing.")
                or target == importer)
    if importer == "cli":  # the command line: any of the core, never a plugin
        return not target.startswith("plugins")
    if importer == "root":
        return True
    if target == "root":  # advx.testing is written against the public API, like a plugin
        return importer == "testing" or imported == "advx._version"
    if target not in CORE_LAYERS:
        return False  # the core never reaches the plugins or the command line
    return CORE_LAYERS.index(target) <= CORE_LAYERS.index(importer)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_respect_the_layers(name):
    importer = layer(name)
    bad = sorted(m for m in imports(name) if not allowed(importer, m))
    assert not bad, f"{name} ({importer}) imports {bad}"


def test_the_core_has_no_import_cycle():
    core = {n for n in MODULES if layer(n) in CORE_LAYERS}
    graph = {n: {m for m in imports(n) if m in core} for n in core}
    visiting, done = set(), set()

    def visit(node, trail):
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join([*trail, node])
        visiting.add(node)
        for nxt in sorted(graph[node]):
            visit(nxt, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_the_checker_sees_violations():
    """The rules bite: a kernel module importing the run layer, a store module importing the
    package root, a plugin importing a core module, the core importing a plugin."""
    assert not allowed("kernel", "advx.run.spec")
    assert not allowed("store", "advx")
    assert not allowed("plugins:attacks", "advx.kernel.threat")
    assert not allowed("plugins:attacks", "advx.plugins.defenses")
    assert not allowed("run", "advx.plugins.protocols")
    assert allowed("plugins:attacks", "advx") and allowed("plugins:attacks", "advx.testing")
    assert allowed("run", "advx.kernel.threat") and allowed("train", "advx.store.weights")
    assert not allowed("train", "advx.run.context") and not allowed("cli", "advx.plugins.reports")
    text = ("import torch\nfrom .. import get_registry\nfrom ..run import spec\n"
            "def late():\n    from ..store.format import read_set\n")
    found = imports_in(text, "advx.kernel.threat")
    assert found == {"advx", "advx.run.spec", "advx.store.format"}
    assert [m for m in sorted(found) if not allowed("kernel", m)] == sorted(found)
    assert imports_in("from . import pgd\nimport advx\n", "advx.plugins.attacks",
                      is_package=True) == {"advx.plugins.attacks.pgd", "advx"}


def test_every_module_is_known():
    """The test sees every module of the three folders (a moved folder must be added)."""
    assert {"advx.kernel.threat", "advx.host.registry", "advx.store.format", "advx.train.loop",
            "advx.run.context", "advx.plugins.attacks.pgd", "advx.cli"} <= set(MODULES)
