"""Rewriting one marked section of bench/README.md (shared by every bench script)."""

import pathlib


def update_section(section, start, end, path):
    """Replace the part of ``path`` between ``start`` and ``end`` (or append it)."""
    path = pathlib.Path(path)
    block = f"{start}\n{section}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
