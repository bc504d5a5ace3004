"""Every chapter executes at the tiny profile, the book builds with zero warnings, and math renders."""

import functools
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path

import nbformat
import pytest

from synaptic_geometry.book import build as pipeline

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = pipeline.chapters(REPO)


def _execute(book_copy: Path, chapter: str) -> Path:
    target = book_copy / "book" / f"{chapter}.ipynb"
    if not target.exists():
        pipeline.execute(chapter, "tiny", results_root=book_copy / "results", root=book_copy)
    return target


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes_at_tiny_with_figures(book_copy, chapter):
    notebook = nbformat.read(_execute(book_copy, chapter), as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(key.endswith("image/png") for o in outputs for key in o.get("data", {})), f"{chapter} drew no figure"
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'profile = "tiny"' in injected[0].source
    assert "remove-cell" in injected[0].metadata["tags"]


@pytest.fixture(scope="module")
def built_book(book_copy) -> Path:
    for chapter in CHAPTERS:
        _execute(book_copy, chapter)
    return pipeline.build_html(book_copy)  # raises on any warning


def test_book_builds_without_warnings(built_book):
    html = built_book.parent
    for chapter in CHAPTERS:
        page = (html / "book" / f"{chapter}.html").read_text()
        assert "<img" in page, f"{chapter} page shows no figure"
    assert (html / "mathjax" / "tex-chtml.js").exists()
    assert "cdn.jsdelivr.net" not in (html / "book" / f"{CHAPTERS[0]}.html").read_text()


def _serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000", "--window-size=1280,2000"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (the Makefile installs it)")
def test_math_renders_in_a_headless_browser(built_book, tmp_path):
    html = built_book.parent
    server = _serve(html)
    url = f"http://127.0.0.1:{server.server_address[1]}/book/{CHAPTERS[0]}.html"
    try:
        profile = ["--user-data-dir=" + str(tmp_path / "profile")]
        dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--dump-dom", url], capture_output=True,
                             text=True, timeout=120).stdout
        shot = REPO / "_build" / "screenshots" / f"{CHAPTERS[0]}.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([CHROMIUM, *FLAGS, *profile, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    finally:
        server.shutdown()
    assert dom.count("<mjx-container") > 10, "MathJax produced no rendered math"
    main = re.search(r"<main.*?</main>", dom, re.S).group(0)
    visible = re.sub(r"<mjx-assistive-mml.*?</mjx-assistive-mml>", "", main, flags=re.S)
    visible = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", visible, flags=re.S)
    visible = re.sub(r"<[^>]+>", "", visible)
    for delimiter in ("$$", "\\(", "\\[", "\\begin{"):
        assert delimiter not in visible, f"raw TeX {delimiter!r} left in the visible text"
    assert shot.exists() and shot.stat().st_size > 10_000


# Chapters still being brought to the book's presentation rules (numbered, captioned figures;
# formatted, captioned tables; numbers in prose from glue). Strict: a chapter that passes must
# leave this set.
UNCONVERTED: set[str] = set()


def _main_html(built_book: Path, chapter: str) -> str:
    page = (built_book.parent / "book" / f"{chapter}.html").read_text()
    return re.search(r"<main.*?</main>", page, re.S).group(0)


def _convert_mark(chapter):
    return pytest.param(chapter, marks=pytest.mark.xfail(strict=True, reason="chapter not converted yet")) \
        if chapter in UNCONVERTED else chapter


@pytest.mark.parametrize("chapter", [_convert_mark(c) for c in CHAPTERS])
def test_every_figure_is_numbered_captioned_and_described(built_book, chapter):
    main = _main_html(built_book, chapter)
    images = re.findall(r"<img[^>]*>", main)
    assert images, f"{chapter} shows no image"
    figures = re.findall(r"<figure.*?</figure>", main, re.S)
    in_figures = sum(len(re.findall(r"<img", figure)) for figure in figures)
    assert in_figures == len(images), f"{chapter}: {len(images) - in_figures} image(s) outside a numbered figure"
    for figure in figures:
        assert re.search(r'<span class="caption-number">Fig\. \d+', figure), "figure without a number"
        caption = re.sub(r"<[^>]+>", "", re.search(r"<figcaption.*?</figcaption>", figure, re.S).group(0))
        assert len(caption.split()) >= 8, f"caption too short: {caption!r}"
        for alt in re.findall(r'alt="([^"]*)"', figure):
            assert len(alt.split()) >= 8 and not re.search(r"\.(png|svg|jpg)$", alt), f"alt text is not a description: {alt!r}"


@pytest.mark.parametrize("chapter", [_convert_mark(c) for c in CHAPTERS])
def test_every_table_is_numbered_and_no_raw_dataframe_is_shown(built_book, chapter):
    main = _main_html(built_book, chapter)
    assert 'class="dataframe' not in main, f"{chapter} shows a raw DataFrame"
    for table in re.findall(r"<table.*?</table>", main, re.S):
        assert re.search(r'<span class="caption-number">Table \d+', table), f"{chapter}: a table without a numbered caption"
    assert not re.search(r"<pre>\s*\{", main), f"{chapter} prints a dict"


def _prose_of(chapter: str) -> list[str]:
    import jupytext

    notebook = jupytext.read(REPO / "notebooks" / f"{chapter}.md")
    prose = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        text = re.sub(r"\$\$.*?\$\$", " ", cell.source, flags=re.S)  # display math
        text = re.sub(r"```.*?```", " ", text, flags=re.S)  # nested directives (glue:md)
        text = re.sub(r"^:::?\{[^}]*\}.*$|^:\w+:.*$", " ", text, flags=re.M)  # directive heads, options
        text = re.sub(r"\$[^$]*\$", " ", text)  # inline math
        text = re.sub(r"\{[\w:-]+\}`[^`]*`", " ", text)  # roles: glue, cite, numref, doc
        text = re.sub(r"`[^`]*`", " ", text)  # code
        text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
        prose.append(text)
    return prose


@pytest.mark.parametrize("chapter", [_convert_mark(c) for c in CHAPTERS])
def test_numbers_in_the_prose_come_from_glue(chapter):
    typed = [match for text in _prose_of(chapter)
             for match in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])|\d+(?:\.\d+)?\s?%", text)]
    assert not typed, f"{chapter}: numbers typed into the prose instead of glued: {typed}"
