"""report.html: the Markdown of :func:`.markdown.markdown` as one self-contained HTML page.

A converter for exactly the Markdown that report.md uses, nothing more: ``#``/``##``/``###``
headings, paragraphs, pipe tables (a header row, a ``|---|`` row, body rows), ``- `` lists,
```code``` spans, and images alone on a line (``![alt](path)``, the path percent-encoded and
relative to the run folder).  Every image is read from the run folder and embedded as a base64
``data:`` URI, so the page loads no external resource; an image that is missing, unreadable or
outside the run folder becomes a visible note instead.  All text is HTML-escaped.
"""

import base64
import html
import re
from pathlib import Path
from urllib.parse import unquote

IMAGE = re.compile(r"!\[((?:\\.|[^\\\]])*)\]\(([^()\s]+)\)")
CODE = re.compile(r"`([^`]+)`")
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
        ".svg": "image/svg+xml", ".webp": "image/webp"}
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #999; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
tbody tr:nth-child(even) { background: #f7f7f7; }
code { background: #f0f0f0; padding: 0 0.2em; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; }
.missing { color: #a00; border-left: 4px solid #a00; padding-left: 0.6em; }
"""


def to_html(text, run_dir):
    """``text`` (report.md) as a standalone HTML page; images embedded from ``run_dir``."""
    body = []
    for block in _blocks(text.splitlines()):
        body += _render(block, Path(run_dir))
    heading = next((line[2:] for line in text.splitlines() if line.startswith("# ")), "")
    title = html.escape(heading.strip() or "advx report")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _blocks(lines):
    """Runs of non-blank lines."""
    block = []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line)
        elif block:
            yield block
            block = []


def _render(block, run_dir):
    first = block[0]
    if first.startswith("#"):
        level = min(len(first) - len(first.lstrip("#")), 6)
        tag = f"h{level}"
        out = [f"<{tag}>{_inline(first.lstrip('#').strip())}</{tag}>"]
        return out + (_render(block[1:], run_dir) if len(block) > 1 else [])
    if first.startswith("|"):
        return _table(block)
    if first.startswith("- "):
        return ["<ul>", *(f"<li>{_inline(line[2:])}</li>" for line in block), "</ul>"]
    image = IMAGE.fullmatch(first.strip())
    if image and len(block) == 1:
        return [_figure(re.sub(r"\\(.)", r"\1", image[1]), unquote(image[2]), run_dir)]
    return [f"<p>{_inline(' '.join(line.strip() for line in block))}</p>"]


def _table(block):
    """A pipe table: the first row is the header; a ``|---|`` row is skipped."""
    if len(block) > 1 and re.fullmatch(r"[\s|:-]+", block[1]):
        block = [block[0], *block[2:]]
    rows = [_cells(line) for line in block]
    head = "".join(f"<th>{_inline(cell)}</th>" for cell in rows[0])
    body = ["<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>"
            for row in rows[1:]]
    return ["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody>",
            "</table>"]


def _cells(line):
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") else line
    return [cell.strip() for cell in line.split("|")]


def _inline(text):
    """Escaped text, with ```code``` spans as <code>."""
    return CODE.sub(r"<code>\1</code>", html.escape(text, quote=False))


def _figure(alt, relative, run_dir):
    source, problem = data_uri(run_dir, relative)
    if problem:
        return (f'<p class="missing">Picture {html.escape(relative)} ({html.escape(alt)}) '
                f"is not embedded: {html.escape(problem)}.</p>")
    return f'<figure><img src="{source}" alt="{html.escape(alt)}"></figure>'


def data_uri(run_dir, relative):
    """``(data: URI, None)`` for the file ``relative`` inside ``run_dir``, else ``(None, why)``."""
    root = Path(run_dir).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        return None, "its path leads outside the run folder"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "the file is missing"
    except OSError as exc:
        return None, f"the file cannot be read ({exc.strerror or exc})"
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", None
