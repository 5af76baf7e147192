"""``advx report RUN_DIR``: report.md and report.html rebuilt from report.json alone."""

import base64
import json
import shutil
import struct
import zlib
from html.parser import HTMLParser

import advx
import pytest
from advx.cli import cli
from advx.kernel.errors import ExitCode
from advx.plugins.reports import markdown as pages
from advx.run.report import report_sections
from click.testing import CliRunner

from .conftest import TINY_SPEC


def markdown(report):
    """report.md of ``report`` with the sections a run hands the reports plugin."""
    return pages.markdown(report, report_sections(report, advx.get_registry()))


def html(report, run_dir):
    return pages.html(report, run_dir, report_sections(report, advx.get_registry()))


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny run on synthetic data: (its folder, its cache, report.json parsed)."""
    base = tmp_path_factory.mktemp("reportrun")
    spec = base / "spec.toml"
    spec.write_text(TINY_SPEC.format(extra=""))
    out, cache = base / "out", base / "cache"
    result = invoke("run", spec, "--out", out, "--cache", cache, "--no-progress")
    assert result.exit_code == 0, result.output
    return out, cache, json.loads((out / "report.json").read_text())


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A copy of the finished run's folder that a test may change."""
    return shutil.copytree(finished_run[0], tmp_path / "run")


def snapshot(folder):
    """Every file and folder under ``folder``: relative path -> (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def tiny_png(width=3, height=2):
    """A valid RGB PNG, written by hand (no imaging library needed)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = b"".join(b"\x00" + bytes([200, 30, 30] * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


class Page(HTMLParser):
    """The parts of an HTML page the tests look at: tags, attributes, tables as cell text."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.attrs, self.tables, self.missing, self._in = [], [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, name, value) for name, value in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
            self._in = "cell"
        elif tag == "p" and ("class", "missing") in attrs:
            self.missing.append("")
            self._in = "missing"

    def handle_endtag(self, tag):
        if tag in ("td", "th", "p"):
            self._in = None

    def handle_data(self, data):
        if self._in == "cell":
            self.tables[-1][-1][-1] += data
        elif self._in == "missing":
            self.missing[-1] += data


def markdown_tables(text):
    """The pipe tables of a Markdown text as lists of rows of cells (separator rows dropped)."""
    tables, current = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        if current is None:
            current = []
            tables.append(current)
        if set(line) - set("|-"):
            current.append([cell.strip().replace("`", "") for cell in line.strip("|").split("|")])
    return tables


def assert_self_contained(page):
    assert not {"script", "link", "iframe", "object", "a"} & set(page.tags)
    for tag, name, value in page.attrs:
        if name in ("src", "href"):
            assert value.startswith("data:"), (tag, name)
        else:
            assert "http" not in (value or ""), (tag, name)


def test_rebuilds_the_same_report_md_and_html(finished_run, run_copy):
    """The run wrote report.html too; `advx report` rewrites both files byte for byte."""
    written = {name: (run_copy / name).read_bytes() for name in ("report.md", "report.html")}
    for name in written:
        (run_copy / name).unlink()
    result = invoke("report", run_copy)
    assert result.exit_code == 0, result.output
    assert f"Wrote {run_copy / 'report.md'} and {run_copy / 'report.html'}." in result.output
    for name, content in written.items():
        assert (run_copy / name).read_bytes() == content, name
    assert written["report.md"].decode() == markdown(finished_run[2])
    assert not list(run_copy.glob(".*.tmp"))


def test_html_holds_the_markdown_tables_and_nothing_external(finished_run, run_copy):
    text = (run_copy / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert '<meta charset="utf-8">' in text and "<title>advx report: tiny</title>" in text
    assert "border" in text  # inline CSS draws the table borders
    expected = markdown_tables((run_copy / "report.md").read_text(encoding="utf-8"))
    assert len(expected) >= 3  # clean accuracy, per attack, worst case
    assert page.tables == expected
    per_attack = next(t for t in page.tables if "attack success" in t[0])
    assert len(per_attack) == 1 + len(finished_run[2]["results"])
    assert "<h2>Robust accuracy per attack</h2>" in text
    assert "<code>advx cache info KEY</code>" in text
    assert_self_contained(page)


def test_pictures_are_embedded_and_problems_noted(finished_run, run_copy, tmp_path):
    png = tiny_png()
    (run_copy / "pictures").mkdir(exist_ok=True)  # runs draw their curves there
    (run_copy / "pictures" / "curves.png").write_bytes(png)
    (tmp_path / "outside.png").write_bytes(png)
    report = dict(finished_run[2], pictures=[
        {"kind": "curves", "path": "pictures/curves.png", "title": "Accuracy [linf] vs eps"},
        {"kind": "grid", "path": "pictures/gone.png", "title": "Grid", "model": "blog-cnn",
         "attack": "pgd"},
        {"kind": "grid", "path": "../outside.png", "title": "Elsewhere"},
    ], skipped_pictures=[{"kind": "representation", "reason": "scikit-learn is not installed"}])
    (run_copy / "report.json").write_text(json.dumps(report))
    before = markdown(dict(finished_run[2], pictures=[], skipped_pictures=[])).rstrip("\n")

    result = invoke("report", run_copy)
    assert result.exit_code == 0, result.output
    assert "pictures/gone.png is not embedded: the file is missing" in result.stderr
    assert "../outside.png is not embedded" in result.stderr
    text = (run_copy / "report.md").read_text(encoding="utf-8")
    assert text.startswith(before)  # the sections of a report without pictures are unchanged
    assert ("## Pictures\n\n### Accuracy [linf] vs eps\n\n"
            "![Accuracy \\[linf\\] vs eps](pictures/curves.png)\n") in text
    assert "Pictures not drawn:\n\n- representation: scikit-learn is not installed\n" in text

    page = Page((run_copy / "report.html").read_text(encoding="utf-8"))
    images = [(n, v) for t, n, v in page.attrs if t == "img"]
    assert images == [("src", "data:image/png;base64," + base64.b64encode(png).decode()),
                      ("alt", "Accuracy [linf] vs eps")]
    assert len(page.missing) == 2
    assert "pictures/gone.png (Grid) is not embedded: the file is missing" in page.missing[0]
    assert "outside the run folder" in page.missing[1]
    assert_self_contained(page)


CURVES = [
    {"model": "m", "attack": "fgsm", "norm": "linf", "eps": [0.1, 0.3],
     "robust_accuracy": [0.5, 0.25]},
    {"model": "m", "attack": "worst case", "norm": "linf", "eps": [0.1, 0.3],
     "robust_accuracy": [0.4, 0.125]},
    {"model": "m", "attack": "pgd", "norm": "linf", "eps": [0.3, 0],
     "robust_accuracy": [0.1, 0.9]},
    {"model": "m", "attack": "ddn", "norm": "l2", "eps": [None, 1.5],
     "robust_accuracy": [0.0, 0.333]},
]


def test_curves_become_one_table_per_model_and_norm(finished_run, tmp_path):
    base = dict(finished_run[2], pictures=[], skipped_pictures=[])
    report = dict(base, curves=CURVES)
    text = markdown(report)
    assert text.startswith(markdown(base).rstrip("\n") + "\n\n## Robust accuracy "
                           "against epsilon\n")
    assert ("### m, linf\n\n| eps | fgsm | pgd | worst case |\n|---|---|---|---|\n"
            "| 0 | n/a | 90.0% | n/a |\n| 0.1 | 50.0% | n/a | 40.0% |\n"
            "| 0.3 | 25.0% | 10.0% | 12.5% |\n") in text
    assert "### m, l2\n\n| eps | ddn |\n|---|---|\n| 1.5 | 33.3% |\n| min | 0.0% |\n" in text
    page = Page(html(report, tmp_path))
    assert page.tables[-2][0] == ["eps", "fgsm", "pgd", "worst case"]
    assert page.tables[-1][-1] == ["min", "0.0%"]


def test_html_escapes_the_report_text(finished_run, tmp_path):
    text = html(dict(finished_run[2], title="<b>tiny</b> & co"), tmp_path)
    assert "<title>advx report: &lt;b&gt;tiny&lt;/b&gt; &amp; co</title>" in text
    assert "<b>" not in text


def _without(key):
    def edit(report):
        return json.dumps({k: v for k, v in report.items() if k != key})
    return edit


def _bad_result(report):
    results = [dict(report["results"][0]), *report["results"][1:]]
    del results[0]["robust_accuracy"]
    return json.dumps(dict(report, results=results))


BAD = [
    (None, "report.json: no such file"),
    (lambda report: "{not json", "report.json: not valid JSON (Expecting property name"),
    (lambda report: "[1, 2]", "its top level is a JSON list, not an object"),
    (lambda report: b"\xff\xfe{}", "not UTF-8 text"),
    (_without("models"), "not an advx report: it lacks 'models'"),
    (_bad_result, "not an advx report: results[0] lacks 'robust_accuracy'"),
    (lambda report: json.dumps(dict(report, curves=[dict(CURVES[0], eps=[0.1])])),
     "curves[0]: 'eps' and 'robust_accuracy' are not lists of one length"),
    (lambda report: json.dumps(dict(report, seconds="slow")), "a value has the wrong type"),
]


@pytest.mark.parametrize("content, message", BAD)
def test_bad_run_dir_exits_2_with_one_line(finished_run, tmp_path, content, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if content is not None:
        data = content(finished_run[2])
        (run_dir / "report.json").write_bytes(data if isinstance(data, bytes) else data.encode())
    result = invoke("report", run_dir)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert str(run_dir / "report.json") in result.output and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert sorted(p.name for p in run_dir.iterdir()) == (["report.json"] if content else [])


def test_missing_run_dir_exits_2(tmp_path):
    result = invoke("report", tmp_path / "nope")
    assert result.exit_code == ExitCode.USAGE
    assert str(tmp_path / "nope" / "report.json") in result.output
    assert not (tmp_path / "nope").exists()


def test_touches_only_its_two_files(finished_run, run_copy, tmp_path, monkeypatch):
    """Nothing in the cache (named by $ADVX_CACHE) or the working folder is created or changed;
    in the run folder only report.md and report.html are rewritten."""
    cache = finished_run[1]
    monkeypatch.setenv("ADVX_CACHE", str(cache))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    cache_before, run_before = snapshot(cache), snapshot(run_copy)
    assert cache_before
    result = invoke("report", run_copy)
    assert result.exit_code == 0, result.output
    assert snapshot(cache) == cache_before
    run_after = snapshot(run_copy)
    assert set(run_after) == set(run_before)
    changed = {name for name in run_after if run_after[name] != run_before[name]}
    assert changed <= {"report.md", "report.html"}
    assert not list(workdir.iterdir())
