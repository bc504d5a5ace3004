"""Build the book: execute every chapter notebook at a profile with papermill, then build HTML.

Chapters are jupytext MyST notebooks in ``notebooks/``; each has a ``parameters`` cell and a
profile file ``src/synaptic_geometry/book/profiles/<chapter>.yml`` with the science parameters
of the profiles ``tiny``, ``default`` and ``paper`` and a ``meanings`` mapping (one line per
parameter, shown to the reader). Machine settings (how the computation runs: executor, workers,
threads, device, cluster) are not science parameters: they come from ``profiles/machine.yml``,
can be overridden on the command line, reach every notebook as the one parameter ``machine``,
and never enter a result's key.

Executed notebooks go to ``book/<chapter>.ipynb`` (never committed), results to the store under
``results/<profile>/``, and the HTML book to ``_build/html``. An executed notebook carries a
stamp (a hash of its source, its science parameters and the source of the package modules it
imports); a rebuild skips a chapter whose stamp is unchanged. A notebook that fails stops the
build with the notebook and cell named; its output is kept under ``_build/failed/`` for
inspection and never reaches the book.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml
from jupyter_client.manager import AsyncKernelManager
from papermill.exceptions import PapermillExecutionError

from synaptic_geometry.infra import store

PROFILES = ("tiny", "default", "paper")
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
MACHINE_KEYS = ("executor", "workers", "threads", "device", "cluster")
EXECUTED_DIR = "book"  # executed chapters sit beside the prose pages: URLs book/<chapter>.html
# Chapters that take longest at the default profile (measured in whole builds on 2 cores: deep
# networks about 8 minutes, the paper's architectures about 6, the spiking neuron a few).
# The build starts them first, so that the short chapters fill the gaps at the end rather than a
# long one running alone; the order changes only the wall time, never a result.
LONGEST_FIRST = ("deep_networks", "paper_architectures", "spiking")
STAMP_KEY = "synaptic_geometry_stamp"


class PipelineError(RuntimeError):
    """A notebook, profile or build step failed; the message says which and why."""


def project_root() -> Path:
    """The repository root (the folder holding ``_config.yml`` and ``notebooks/``)."""
    root = store.project_root()
    if root is None:
        raise PipelineError("cannot find the project root (a folder with _config.yml and notebooks/); run from the repository")
    return root


def chapters(root: Path | None = None) -> list[str]:
    """Names of the executable chapters (notebooks in ``notebooks/``), in the order of ``_toc.yml``."""
    root = root or project_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    entries = [entry for part in toc.get("parts", [toc]) for entry in part.get("chapters", [])]
    prefix = EXECUTED_DIR + "/"
    names = [entry["file"][len(prefix):] for entry in entries if entry.get("file", "").startswith(prefix)]
    return [name for name in names if (root / "notebooks" / f"{name}.md").exists()]


def _profile_file(chapter: str) -> dict:
    path = PROFILE_DIR / f"{chapter}.yml"
    if not path.exists():
        raise PipelineError(f"chapter {chapter!r} has no profile file {path}")
    table = yaml.safe_load(path.read_text()) or {}
    missing = [name for name in PROFILES if name not in table]
    if missing:
        raise PipelineError(f"{path} lacks profile(s) {', '.join(missing)}; it must define {', '.join(PROFILES)}")
    unknown = sorted(set(table) - {*PROFILES, "meanings"})
    if unknown:
        raise PipelineError(f"{path} has unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(PROFILES)}, meanings")
    return table


def load_profile(chapter: str, profile: str) -> dict:
    """The science parameters of ``chapter`` at ``profile`` (with ``profile`` itself added)."""
    if profile not in PROFILES:
        raise PipelineError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    return {**(_profile_file(chapter)[profile] or {}), "profile": profile}


def load_meanings(chapter: str) -> dict[str, str]:
    """The one-line meaning of each parameter of ``chapter`` (its profile file's ``meanings``)."""
    meanings = _profile_file(chapter).get("meanings") or {}
    if not all(isinstance(text, str) and text.strip() for text in meanings.values()):
        raise PipelineError(f"profile file of {chapter!r}: every meaning must be a non-empty line of text")
    return dict(meanings)


def load_machine(profile: str, overrides: dict | None = None) -> dict:
    """Machine settings of ``profile`` (``profiles/machine.yml``), with non-None ``overrides``."""
    if profile not in PROFILES:
        raise PipelineError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    table = yaml.safe_load((PROFILE_DIR / "machine.yml").read_text())
    machine = {**table[profile], **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = sorted(set(machine) - set(MACHINE_KEYS))
    if unknown:
        raise PipelineError(f"unknown machine setting(s) {', '.join(unknown)}; known: {', '.join(MACHINE_KEYS)}")
    if machine["executor"] not in ("serial", "local", "submitit"):
        raise PipelineError(f"unknown executor {machine['executor']!r}; known: serial, local, submitit")
    if machine["device"] not in ("auto", "cpu", "cuda"):
        raise PipelineError(f"unknown device {machine['device']!r}; known: auto, cpu, cuda")
    for key in ("workers", "threads"):
        if isinstance(machine[key], bool) or not isinstance(machine[key], int) or machine[key] < 1:
            raise PipelineError(f"machine setting {key} must be a positive integer, got {machine[key]!r}")
    return machine


def notebook_parameters(chapter: str, root: Path | None = None) -> dict:
    """The names and default values in the chapter's ``parameters`` cell."""
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
    """An executed chapter: where it was written, how long it took, and whether it was reused."""

    chapter: str
    path: Path
    seconds: float
    reused: bool = False


class QuietKernelManager(AsyncKernelManager):
    """Kernels on local IPC sockets: no network port, and no warning about unencrypted TCP.

    Each kernel gets its own socket path prefix, so chapters executing at once never share a socket
    (jupyter's default prefix, ``127.0.0.1`` in the working directory, is the same for every kernel).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("ip", os.path.join(tempfile.gettempdir(), f"synaptic-geometry-kernel-{uuid.uuid4().hex[:12]}"))
        super().__init__(**kwargs)


def imported_modules(source: str) -> tuple[str, ...]:
    """Package modules imported by the code cells of a jupytext MyST notebook's text."""
    found: set[str] = set()
    for cell in jupytext.reads(source, fmt="md:myst").cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    if store.PACKAGE in found:  # the public API: the modules the package's __init__ re-exports from
        found |= store.public_api_modules()
    return tuple(sorted(name for name in found if store.is_package_module(name)))


def stamp(chapter: str, params: dict, root: Path) -> str:
    """Hash of a chapter's notebook source, its science parameters and the package code it imports."""
    source = (root / "notebooks" / f"{chapter}.md").read_text()
    modules = imported_modules(source)
    text = json.dumps({"source": source, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256((text + store.code_version(modules or None)).encode()).hexdigest()[:20]


def _stored_stamp(path: Path) -> str | None:
    try:
        return nbformat.read(path, as_version=4).metadata.get(STAMP_KEY)
    except Exception:  # a missing or unreadable notebook is simply re-executed
        return None


@contextmanager
def _kernel_env(results_root: Path):
    """Environment of the notebook kernel: this interpreter first on PATH (the ``python3``
    kernelspec runs plain ``python``), the store's root, and no interactive plot backend."""
    saved = dict(os.environ)
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    os.environ[store.RESULTS_ENV] = str(results_root.resolve())
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
    machine: dict | None = None,
    force: bool = False,
) -> Executed:
    """Execute one chapter at a profile, unless its executed notebook is up to date.

    ``overrides`` replace science parameters; ``machine`` overrides machine settings. The chapter
    is reused (not re-executed) when ``out_dir`` already holds it with the same :func:`stamp`
    and ``force`` is false.
    """
    root = Path(root) if root is not None else project_root()
    source = root / "notebooks" / f"{chapter}.md"
    if not source.exists():
        raise PipelineError(f"unknown chapter {chapter!r}; chapters: {', '.join(chapters(root))}")
    science = {**load_profile(chapter, profile), **(overrides or {})}
    check_parameters(chapter, {**science, "machine": None}, root)
    params = {**science, "machine": load_machine(profile, machine)}
    out_dir = Path(out_dir) if out_dir is not None else root / EXECUTED_DIR
    results_root = Path(results_root) if results_root is not None else root / "results" / profile
    target = out_dir / f"{chapter}.ipynb"
    fingerprint = stamp(chapter, science, root)
    if not force and target.exists() and _stored_stamp(target) == fingerprint:
        return Executed(chapter, target, 0.0, reused=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with _kernel_env(results_root), tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / f"{chapter}.ipynb"
        done = Path(tmp) / f"{chapter}.executed.ipynb"
        jupytext.write(jupytext.read(source), raw)
        try:
            papermill.execute_notebook(
                str(raw), str(done), parameters=params, kernel_name="python3", language="python",
                cwd=str(root / "notebooks"), progress_bar=False, log_output=False,
                kernel_manager_class=f"{__name__}.QuietKernelManager",
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
        notebook = nbformat.read(done, as_version=4)
        _hide_parameter_cells(notebook)
        notebook.metadata[STAMP_KEY] = fingerprint
        store.atomic_write_bytes(target, nbformat.writes(notebook).encode())
    return Executed(chapter, target, time.time() - start)


def _hide_parameter_cells(notebook: nbformat.NotebookNode) -> None:
    """Keep the raw parameter cells out of the book: each chapter shows the parameters that ran
    as a table with their meanings (``report.glue_parameters``)."""
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")


def copy_assets(root: Path) -> None:
    """Serve MathJax from the book itself (npm package ``mathjax@3``), so math renders offline,
    and the chapters' MyST sources, so each page can offer its notebook's source for download."""
    source = root / "node_modules" / "mathjax" / "es5"
    if not (source / "tex-chtml.js").exists():
        raise PipelineError(f"MathJax is missing ({source}); run `npm ci` in {root} (the Makefile does)")
    target = root / "_build" / "_extra" / "mathjax"
    if not (target / "tex-chtml.js").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    sources = root / "_build" / "_extra" / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    for notebook in (root / "notebooks").glob("*.md"):
        shutil.copyfile(notebook, sources / notebook.name)


def build_html(root: Path | None = None) -> Path:
    """Build the HTML book from the executed notebooks (no execution; warnings are errors)."""
    root = root or project_root()
    missing = [c for c in chapters(root) if not (root / EXECUTED_DIR / f"{c}.ipynb").exists()]
    if missing:
        raise PipelineError(f"chapters not executed yet: {', '.join(missing)}; run the `execute` step first")
    copy_assets(root)
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


def start_order(names: list[str]) -> list[str]:
    """``names`` with the chapters of :data:`LONGEST_FIRST` moved to the front, in that order;
    the others keep their order."""
    first = [name for name in LONGEST_FIRST if name in names]
    return first + [name for name in names if name not in first]


def build(profile: str = "default", only: list[str] | None = None, machine: dict | None = None,
          force: bool = False, jobs: int = 2) -> Path:
    """Execute every chapter at ``profile`` (reusing up-to-date ones) and build the book.

    ``jobs`` chapters execute at once, each in its own process (a chapter's own worker processes
    come on top); the longest start first (:func:`start_order`), and a failed chapter stops the build.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise PipelineError(f"jobs must be a positive integer, got {jobs!r}")
    root = project_root()
    names = only or chapters(root)
    total = time.time()
    for done in execute_chapters(start_order(names), profile, jobs, machine=machine, force=force):
        status = "unchanged, not re-executed" if done.reused else f"executed in {done.seconds:.1f} s"
        print(f"[{names.index(done.chapter) + 1}/{len(names)}] {done.chapter}: {status}", flush=True)
    print("building HTML ...", flush=True)
    index_html = build_html(root)
    print(f"book built in {time.time() - total:.1f} s: {index_html}", flush=True)
    return index_html


def execute_chapters(names: list[str], profile: str, jobs: int, run: Callable[..., Executed] | None = None,
                     **options) -> Iterator[Executed]:
    """Yield the :class:`Executed` of each chapter as it finishes, ``jobs`` chapters at a time.

    ``run`` (default :func:`execute`, called as ``run(chapter, profile, **options)``) must be a
    module-level function when ``jobs > 1``: each chapter runs in a fresh interpreter.
    """
    run = run or execute
    if jobs == 1:
        for index, chapter in enumerate(names, 1):
            print(f"[{index}/{len(names)}] {chapter} at profile {profile} ...", flush=True)
            yield run(chapter, profile, **options)
        return
    print(f"executing {len(names)} chapters at profile {profile}, {jobs} at a time ...", flush=True)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per chapter: its own environment
    with ProcessPoolExecutor(max_workers=min(jobs, len(names)), mp_context=context) as pool:
        futures = [pool.submit(run, chapter, profile, **options) for chapter in names]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:  # a failed chapter: start no more (the running ones finish and keep their results)
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _add_machine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("machine settings (override profiles/machine.yml; never part of a result's key)")
    group.add_argument("--executor", choices=("serial", "local", "submitit"))
    group.add_argument("--workers", type=int, help="worker processes (or SLURM array tasks)")
    group.add_argument("--threads", type=int, help="threads per worker")
    group.add_argument("--device", choices=("auto", "cpu", "cuda"))
    group.add_argument("--cluster", help="submitit cluster (slurm, local, ...)")
    parser.add_argument("--force", action="store_true", help="re-execute chapters even when up to date")


def _machine(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in MACHINE_KEYS}


def main(argv: list[str] | None = None) -> int:
    """The ``synaptic-geometry book`` command."""
    parser = argparse.ArgumentParser(prog="synaptic-geometry book", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="execute all chapters at a profile, then build the HTML book")
    build_cmd.add_argument("--profile", default="default", choices=PROFILES)
    build_cmd.add_argument("--chapter", action="append", help="execute only these chapters (repeatable)")
    build_cmd.add_argument("--jobs", type=int, default=2,
                           help="chapters executed at once, each in its own process (default 2)")
    _add_machine_options(build_cmd)
    execute_cmd = sub.add_parser("execute", help="execute chapters at a profile (no HTML build)")
    execute_cmd.add_argument("--profile", default="default", choices=PROFILES)
    execute_cmd.add_argument("--chapter", "--notebook", dest="chapter", action="append",
                             help="chapter name, e.g. mirror_descent (repeatable)")
    execute_cmd.add_argument("--out", type=Path, help=f"folder for executed notebooks (default {EXECUTED_DIR}/)")
    _add_machine_options(execute_cmd)
    sub.add_parser("html", help="build the HTML book from already executed chapters")
    sub.add_parser("list", help="list the chapters")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args.profile, args.chapter, machine=_machine(args), force=args.force, jobs=args.jobs)
        elif args.command == "execute":
            for chapter in args.chapter or chapters():
                done = execute(chapter, args.profile, out_dir=args.out, machine=_machine(args), force=args.force)
                status = "unchanged, not re-executed" if done.reused else f"{done.seconds:.1f} s"
                print(f"{chapter}: {status} -> {done.path}", flush=True)
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
