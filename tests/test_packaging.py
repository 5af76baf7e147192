"""Guards on setup.cfg: every package folder is listed, every built-in plugin is an entry point."""

import configparser
import importlib.metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"core": "advx", "plugins": "advx.plugins", "cli": "advx.cli"}


def _setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def test_every_package_folder_is_listed():
    """An unlisted subpackage imports in editable mode but is missing from the wheel."""
    listed = set(_setup_cfg()["options"]["packages"].split())
    found = set()
    for folder, package in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found == listed


def test_builtin_plugins_are_exactly_the_entry_points():
    """Built-ins are found through entry points, like any third party's plugin."""
    declared = _setup_cfg()["options.entry_points"]["advx"].split("\n")
    declared = {line.split("=")[1].strip() for line in declared if "=" in line}
    with_hooks = set()
    for path in (ROOT / "plugins").rglob("*.py"):
        if "@advx.hookimpl" in path.read_text():
            module = path.relative_to(ROOT / "plugins").with_suffix("")
            parts = [p for p in module.parts if p != "__init__"]
            with_hooks.add(".".join(("advx.plugins", *parts)))
    assert with_hooks == declared
    installed = {ep.value for ep in importlib.metadata.entry_points(group="advx")
                 if ep.dist is not None and ep.dist.name == "advx"}
    assert installed == declared, "entry points changed: run pip install -e . again"
