"""Rebuild the book: execute every chapter notebook at a profile with papermill, then build HTML.

Chapters are jupytext MyST notebooks in ``notebooks/``; each has a ``parameters`` cell and a
profile file ``src/synaptic_geometry/profiles/<chapter>.yml`` with the keys ``tiny``, ``default``
and ``paper``. Executed notebooks go to ``book/executed/`` (never committed), results to the
store under ``results/<profile>/``, and the HTML book to ``_build/html``. A notebook that fails
stops the build with the notebook and cell named; its output is kept under ``_build/failed/``
for inspection and never reaches the book.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

PROFILES = ("tiny", "default", "paper")
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


class PipelineError(RuntimeError):
    """A notebook, profile or build step failed; the message says which and why."""


def project_root() -> Path:
    """The repository root (the folder holding ``_config.yml``), searched from the working directory."""
    for folder in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]):
        if (folder / "_config.yml").exists() and (folder / "notebooks").is_dir():
            return folder
    raise PipelineError("cannot find the project root (a folder with _config.yml and notebooks/); run from the repository")


def chapters(root: Path | None = None) -> list[str]:
    """Names of the executable chapters, in the order of the table of contents (``_toc.yml``)."""
    root = root or project_root()
    prefix = "book/executed/"
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [entry["file"] for entry in toc.get("chapters", []) if "file" in entry]
    return [name[len(prefix):] for name in files if name.startswith(prefix)]


def load_profile(chapter: str, profile: str) -> dict:
    """The parameters of ``chapter`` at ``profile`` (with ``profile`` itself added)."""
    if profile not in PROFILES:
        raise PipelineError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    path = PROFILE_DIR / f"{chapter}.yml"
    if not path.exists():
        raise PipelineError(f"chapter {chapter!r} has no profile file {path}")
    table = yaml.safe_load(path.read_text()) or {}
    missing = [name for name in PROFILES if name not in table]
    if missing:
        raise PipelineError(f"{path} lacks profile(s) {', '.join(missing)}; it must define {', '.join(PROFILES)}")
    return {**(table[profile] or {}), "profile": profile}


def notebook_parameters(chapter: str, root: Path | None = None) -> dict:
    """The names and default values in the chapter's ``parameters`` cell."""
    import jupytext

    root = root or project_root()
    notebook = jupytext.read(root / "notebooks" / f"{chapter}.md")
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise PipelineError(f"notebooks/{chapter}.md must have exactly one cell tagged 'parameters' (found {len(cells)})")
    names: dict = {}
    exec(compile(cells[0].source, f"{chapter}:parameters", "exec"), {}, names)  # noqa: S102 - our own file
    return names


def check_parameters(chapter: str, params: dict, root: Path | None = None) -> None:
    """Refuse parameters the notebook does not declare, listing the ones it does."""
    declared = notebook_parameters(chapter, root)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise PipelineError(
            f"unknown parameter(s) {', '.join(unknown)} for chapter {chapter!r}; valid: {', '.join(sorted(declared))}"
        )


@dataclass
class Executed:
    chapter: str
    path: Path
    seconds: float


@contextmanager
def _kernel_env(results_root: Path):
    """Environment of the notebook kernel: this interpreter first on PATH (the ``python3``
    kernelspec runs plain ``python``), the store's root, and no interactive plot backend."""
    saved = dict(os.environ)
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    os.environ["SYNAPTIC_GEOMETRY_RESULTS"] = str(results_root.resolve())
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def execute(
    chapter: str,
    profile: str,
    out_dir: Path | None = None,
    results_root: Path | None = None,
    overrides: dict | None = None,
    root: Path | None = None,
) -> Executed:
    """Execute one chapter at a profile; return where the executed notebook was written."""
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    root = Path(root) if root is not None else project_root()
    source = root / "notebooks" / f"{chapter}.md"
    if not source.exists():
        raise PipelineError(f"unknown chapter {chapter!r}; chapters: {', '.join(chapters(root))}")
    params = {**load_profile(chapter, profile), **(overrides or {})}
    check_parameters(chapter, params, root)
    out_dir = Path(out_dir) if out_dir is not None else root / "book" / "executed"
    results_root = Path(results_root) if results_root is not None else root / "results" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with _kernel_env(results_root), tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / f"{chapter}.ipynb"
        done = Path(tmp) / f"{chapter}.executed.ipynb"
        jupytext.write(jupytext.read(source), raw)
        try:
            papermill.execute_notebook(
                str(raw), str(done), parameters=params, kernel_name="python3", language="python", cwd=str(root / "notebooks"),
                progress_bar=False, log_output=False,
            )
        except PapermillExecutionError as error:
            failed = root / "_build" / "failed" / f"{chapter}.ipynb"
            failed.parent.mkdir(parents=True, exist_ok=True)
            if done.exists():
                shutil.copyfile(done, failed)
            raise PipelineError(
                f"notebook {chapter!r} failed at profile {profile!r} in code cell {error.exec_count} "
                f"({error.ename}: {error.evalue}); the failing notebook is kept at {failed}"
            ) from None
        _hide_default_parameters(done)
        target = out_dir / f"{chapter}.ipynb"
        partial = out_dir / f".{chapter}.ipynb.partial"
        shutil.copyfile(done, partial)
        os.replace(partial, target)
    return Executed(chapter, target, time.time() - start)


def _hide_default_parameters(path: Path) -> None:
    """Keep the notebook's own default parameters out of the book: the injected cell shows the
    parameters that actually ran."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(notebook, path)


def copy_mathjax(root: Path) -> None:
    """Serve MathJax from the book itself (npm package ``mathjax@3``), so math renders offline."""
    source = root / "node_modules" / "mathjax" / "es5"
    if not (source / "tex-chtml.js").exists():
        raise PipelineError(f"MathJax is missing ({source}); run `npm ci` in {root} (the Makefile does)")
    target = root / "_build" / "_extra" / "mathjax"
    if not (target / "tex-chtml.js").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def build_html(root: Path | None = None) -> Path:
    """Build the HTML book from the executed notebooks (no execution; warnings are errors)."""
    root = root or project_root()
    missing = [c for c in chapters(root) if not (root / "book" / "executed" / f"{c}.ipynb").exists()]
    if missing:
        raise PipelineError(f"chapters not executed yet: {', '.join(missing)}; run the `execute` step first")
    copy_mathjax(root)
    command = [
        str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--builder", "html",
        "-W", "-n", "--keep-going",
    ]
    result = subprocess.run(command, cwd=root, text=True, capture_output=True)
    log = root / "_build" / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    if result.returncode != 0 or warnings:
        shown = "\n".join(warnings[:30]) or (result.stdout + result.stderr)[-3000:]
        raise PipelineError(f"jupyter-book build failed ({len(warnings)} warnings; full log {log}):\n{shown}")
    return root / "_build" / "html" / "index.html"


def build(profile: str = "default", only: list[str] | None = None) -> Path:
    """Execute every chapter at ``profile`` and build the book; print progress and timings."""
    root = project_root()
    names = only or chapters(root)
    total = time.time()
    for index, chapter in enumerate(names, 1):
        print(f"[{index}/{len(names)}] executing {chapter} at profile {profile} ...", flush=True)
        done = execute(chapter, profile)
        print(f"[{index}/{len(names)}] {chapter}: {done.seconds:.1f} s", flush=True)
    print("building HTML ...", flush=True)
    index_html = build_html(root)
    print(f"book built in {time.time() - total:.1f} s: {index_html}", flush=True)
    return index_html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synaptic-geometry book", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="execute all chapters at a profile, then build the HTML book")
    build_cmd.add_argument("--profile", default="default", choices=PROFILES)
    build_cmd.add_argument("--chapter", action="append", help="execute only these chapters (repeatable)")
    execute_cmd = sub.add_parser("execute", help="execute chapters at a profile (no HTML build)")
    execute_cmd.add_argument("--profile", default="default", choices=PROFILES)
    execute_cmd.add_argument("--chapter", "--notebook", dest="chapter", action="append", help="chapter name, e.g. mirror_descent (repeatable)")
    execute_cmd.add_argument("--out", type=Path, help="folder for executed notebooks (default book/executed)")
    sub.add_parser("html", help="build the HTML book from already executed chapters")
    sub.add_parser("list", help="list the chapters")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args.profile, args.chapter)
        elif args.command == "execute":
            for chapter in args.chapter or chapters():
                done = execute(chapter, args.profile, out_dir=args.out)
                print(f"{chapter}: {done.seconds:.1f} s -> {done.path}", flush=True)
        elif args.command == "html":
            print(build_html())
        else:
            print("\n".join(chapters()))
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
