"""A small Sphinx extension of the book: each chapter's download menu also offers the chapter's
MyST notebook source (``notebooks/<chapter>.md``, copied into the site as ``sources/<chapter>.md`` by the build), beside the
executed ``.ipynb`` and the print-to-PDF button of the book theme; and the book's table style
(``static/tables.css``) is added to every page."""

from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx

from synaptic_geometry.book.build import EXECUTED_DIR

STATIC_DIR = Path(__file__).parent / "static"


def add_notebook_source_button(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Append a ``.md`` link to the theme's download group on executed chapter pages."""
    prefix = EXECUTED_DIR + "/"
    chapter = pagename[len(prefix):] if pagename.startswith(prefix) else None
    if chapter is None or not (Path(app.srcdir) / "notebooks" / f"{chapter}.md").exists():
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            group["buttons"].insert(1, {
                "type": "link",
                "url": context["pathto"](f"sources/{chapter}.md", 1),
                "text": ".md",
                "tooltip": "Download the chapter's notebook source (MyST markdown, runs with jupytext)",
                "icon": "fas fa-file-code",
                "label": "download-notebook-source-button",
            })


def add_static_dir(app: Sphinx) -> None:
    """Serve the book's own stylesheets (``STATIC_DIR``) beside the theme's."""
    app.config.html_static_path.append(str(STATIC_DIR))


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", add_notebook_source_button, priority=900)
    app.connect("builder-inited", add_static_dir)
    app.add_css_file("tables.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
