"""Shared fixtures: a scratch copy of the book that the tests execute and build; killing a run."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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


def kill_when(script: str, condition: Callable[[], bool], timeout: float, env: dict | None = None) -> None:
    """Run ``script`` in a Python subprocess and SIGKILL its process group once ``condition()`` holds.

    Fails if the subprocess ends by itself first or the condition does not hold within ``timeout`` s.
    """
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while not condition():
            assert proc.poll() is None, "subprocess ended before it could be killed"
            assert time.time() < deadline, "the condition did not hold in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
