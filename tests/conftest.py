"""Shared fixtures: a scratch copy of the book that the tests execute and build."""

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def book_copy(tmp_path_factory) -> Path:
    """A copy of the book's sources (no executed notebooks, no results) in a scratch folder."""
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("*.ipynb"))
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    (root / "node_modules").symlink_to(REPO / "node_modules")
    return root
