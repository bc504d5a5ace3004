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

from synaptic_geometry import pipeline

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = pipeline.chapters(REPO)


def _execute(book_copy: Path, chapter: str) -> Path:
    target = book_copy / "book" / "executed" / f"{chapter}.ipynb"
    if not target.exists():
        pipeline.execute(chapter, "tiny", results_root=book_copy / "results", root=book_copy)
    return target


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes_at_tiny_with_figures(book_copy, chapter):
    notebook = nbformat.read(_execute(book_copy, chapter), as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{chapter} drew no figure"
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'profile = "tiny"' in injected[0].source


@pytest.fixture(scope="module")
def built_book(book_copy) -> Path:
    for chapter in CHAPTERS:
        _execute(book_copy, chapter)
    return pipeline.build_html(book_copy)  # raises on any warning


def test_book_builds_without_warnings(built_book):
    html = built_book.parent
    for chapter in CHAPTERS:
        page = (html / "book" / "executed" / f"{chapter}.html").read_text()
        assert "<img" in page, f"{chapter} page shows no figure"
    assert (html / "mathjax" / "tex-chtml.js").exists()
    assert "cdn.jsdelivr.net" not in (html / "book" / "executed" / f"{CHAPTERS[0]}.html").read_text()


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
    url = f"http://127.0.0.1:{server.server_address[1]}/book/executed/{CHAPTERS[0]}.html"
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
