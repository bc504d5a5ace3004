"""A content-addressed results store: compute once, load on every rebuild.

A result is a dict of numpy arrays saved as ``<root>/<name>/<key>.npz`` with its provenance in
``<key>.json`` beside it. The key hashes the experiment name, its parameters and the source of
the code it depends on (the experiment's module and the package modules it imports, followed
transitively), so a changed parameter or a changed line of that code gives a new key and a fresh
computation, while an unchanged rebuild, or an edit to an unrelated module, loads. Files are
written under a temporary name and renamed, so an interrupted run never leaves a half-written
result that looks finished.

The one way to declare a cached experiment is the :func:`experiment` decorator::

    @experiment("linreg_robustness")
    def robustness(n_seeds: int, seed: int = 0) -> dict[str, np.ndarray]: ...

    result = robustness(n_seeds=30)      # computed once, loaded afterwards
    result.from_store, result.provenance  # how it was obtained

Underneath, :func:`cached` stores one result given its name, parameters and a function that
computes it; it is the primitive, not a second way to declare an experiment.

The store's root is resolved in one place, :func:`default_root`, the same whether a notebook runs
under the book build or is opened directly in Jupyter.
"""

from __future__ import annotations

import ast
import contextvars
import functools
import hashlib
import inspect
import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parents[1]
RESULTS_ENV = "SYNAPTIC_GEOMETRY_RESULTS"
_RECORDED_PACKAGES = ("numpy", "scipy", "torch", "pandas", "matplotlib")
# The root of the experiment being computed, so that experiments it calls use the same store.
_ACTIVE_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("active_root", default=None)


PACKAGE = "synaptic_geometry"


def _module_file(module: str) -> Path | None:
    """The source file of a package module (``synaptic_geometry.a.b``), or None if it is not one."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    relative = Path(*module.split(".")[1:])
    for candidate in (PACKAGE_DIR / relative.with_suffix(".py"), PACKAGE_DIR / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_package_module(module: str) -> bool:
    """True for a module of the package other than its top-level ``__init__``."""
    return module != PACKAGE and _module_file(module) is not None


def public_api_modules() -> set[str]:
    """The modules whose names the package's top-level ``__init__`` re-exports."""
    return _imported_modules(PACKAGE_DIR / "__init__.py", PACKAGE)


def _imported_modules(path: Path, module: str) -> set[str]:
    """Package modules that the source file of ``module`` imports (absolute or relative)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if _module_file(name) is not None}


@lru_cache(maxsize=None)
def module_dependencies(module: str) -> tuple[str, ...]:
    """``module`` and every package module it imports, transitively, sorted.

    The top-level ``synaptic_geometry/__init__.py`` only re-exports the public API, so it is
    neither hashed nor followed (otherwise every module would depend on every other). Raises
    ``ValueError`` for a module outside the package.
    """
    if _module_file(module) is None:
        raise ValueError(f"{module!r} is not a module of the {PACKAGE} package")
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name == PACKAGE:
            continue
        seen.add(name)
        todo.extend(_imported_modules(_module_file(name), name) - seen)
    return tuple(sorted(seen))


@lru_cache(maxsize=None)
def code_version(modules: tuple[str, ...] | None = None) -> str:
    """Hash of the source of ``modules`` and everything they import from the package.

    ``None`` hashes every source file of the package (the coarsest, safest version).
    """
    if modules is None:
        files = sorted(path for path in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in path.parts)
    else:
        names = sorted({dep for module in modules for dep in module_dependencies(module)})
        files = [_module_file(name) for name in names]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape numerical results."""
    versions = {"python": platform.python_version()}
    for name in _RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def project_root() -> Path | None:
    """The repository root (a folder with ``_config.yml`` and ``notebooks/``) above the working
    directory or the package's source, or None when the package is installed elsewhere."""
    for folder in (Path.cwd(), *Path.cwd().parents, *PACKAGE_DIR.parents):
        if (folder / "_config.yml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return None


def default_root(profile: str = "default") -> Path:
    """The store's root: ``$SYNAPTIC_GEOMETRY_RESULTS`` if set (the book build sets it), else
    ``<repository>/results/<profile>`` (what the build would use), else ``./results/<profile>``.

    A notebook opened directly in Jupyter therefore shares the build's store for its profile.
    While an :func:`experiment` computes, the experiments it calls use its root.
    """
    if _ACTIVE_ROOT.get() is not None:
        return _ACTIVE_ROOT.get()
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    root = project_root()
    return (root if root is not None else Path.cwd()) / "results" / profile


def result_key(name: str, params: Mapping, version: str | None = None) -> str:
    """The key of a result: a hash of its name, parameters and code version (default: the
    whole package's)."""
    try:
        text = json.dumps({"name": name, "params": params}, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"parameters of {name!r} must be JSON-serialisable: {error}") from None
    return hashlib.sha256((text + (version or code_version())).encode()).hexdigest()[:20]


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-." for c in name) or name.startswith("."):
        raise ValueError(f"result name {name!r} must be non-empty and use only letters, digits, '_', '-', '.'")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates files readable by the owner only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Save numeric or string arrays to an ``.npz`` file atomically (object arrays refused)."""
    checked = {}
    for key, value in arrays.items():
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(f"array {key!r} has dtype object; store numbers or strings only")
        checked[key] = array
    buffer = io.BytesIO()
    np.savez(buffer, **checked)
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Load an ``.npz`` file written by :func:`save_arrays` (never unpickles)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as error:  # a truncated or foreign file
        raise OSError(f"stored result {path} is unreadable ({error}); delete it to recompute") from error


class StoredResult(dict):
    """A result's arrays (a dict) with how they were obtained: ``from_store`` is True when they
    were loaded rather than computed in this call; ``provenance`` is the JSON record."""

    def __init__(self, arrays: Mapping[str, np.ndarray], provenance: dict, from_store: bool):
        super().__init__(arrays)
        self.provenance = provenance
        self.from_store = from_store


def cached(
    name: str,
    params: Mapping,
    compute: Callable[[], Mapping[str, np.ndarray]],
    root: str | Path | None = None,
    version: str | None = None,
) -> StoredResult:
    """Return the stored result for ``(name, params, code)``, computing and saving it if absent.

    The low-level primitive under :func:`experiment`, kept for the store's own tests and for
    tools; chapters and experiment modules declare their results with :func:`experiment` instead
    (whose key covers only the code the experiment depends on). ``version`` is the code version in
    the key (default: the whole package's source, so any edit anywhere recomputes); experiments
    pass the version of the modules they depend on.
    """
    _check_name(name)
    version = version or code_version()
    key = result_key(name, params, version)
    folder = Path(root) if root is not None else default_root()
    path = folder / name / f"{key}.npz"
    if path.exists():
        record_path = path.with_suffix(".json")
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        return StoredResult(load_arrays(path), record, from_store=True)
    start = time.time()
    arrays = compute()
    if not isinstance(arrays, Mapping) or not arrays:
        raise TypeError(f"compute() for {name!r} must return a non-empty dict of arrays")
    elapsed = time.time() - start
    record = {
        "name": name,
        "key": key,
        "params": params,
        "code_version": version,
        "packages": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_seconds": round(elapsed, 3),
        "host": platform.node(),
    }
    save_arrays(path, arrays)
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True).encode())
    return StoredResult({k: np.asarray(v) for k, v in arrays.items()}, record, from_store=False)


def provenance(name: str, params: Mapping, root: str | Path | None = None, version: str | None = None) -> dict | None:
    """The provenance record of a stored result, or None if it has not been computed."""
    folder = Path(root) if root is not None else default_root()
    path = folder / name / f"{result_key(name, params, version)}.json"
    return json.loads(path.read_text()) if path.exists() else None


def experiment(name: str, depends_on: Iterable[str] = (),
               machine: Iterable[str] = ()) -> Callable[[Callable[..., Mapping]], Callable[..., StoredResult]]:
    """Declare a cached experiment: a function of keyword parameters returning a dict of arrays.

    Calling the decorated function binds its arguments (defaults included) into the parameters
    of the key, and returns the stored result when one exists for those parameters and for the
    current source of the function's module and the package modules it imports (plus the modules
    named in ``depends_on``); otherwise it computes, saves and returns it. Two keyword arguments
    are the store's, not the experiment's: ``root`` (the store's folder; default
    :func:`default_root`) and ``recompute`` (ignore a stored result). The undecorated function
    is ``.compute``; ``.key(**params)``, ``.path(**params)`` and ``.provenance(**params)`` look a
    result up, and ``.version()`` is the code version in its key.

    ``machine`` names arguments that say how to compute, not what (e.g. ``device``): they reach
    the function but stay out of the key, so a result computed on one machine is found on another.
    The function should record in its arrays whatever of them affects the numbers.
    """
    _check_name(name)
    extra = tuple(depends_on)
    machine_args = frozenset(machine)

    def decorate(function: Callable[..., Mapping]) -> Callable[..., StoredResult]:
        signature = inspect.signature(function)
        modules = (function.__module__, *extra)
        unknown = machine_args - set(signature.parameters)
        if unknown:
            raise TypeError(f"experiment {name!r}: machine argument(s) {sorted(unknown)} are not parameters of "
                            f"{function.__name__}")

        def bind(args: tuple, kwargs: dict) -> dict:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"experiment {name!r}: {error}") from None
            bound.apply_defaults()
            return dict(bound.arguments)

        def key_params(arguments: dict) -> dict:
            return {k: v for k, v in arguments.items() if k not in machine_args}

        def version() -> str:
            known = tuple(m for m in modules if _module_file(m) is not None)
            return code_version(known) if known else code_version()

        @functools.wraps(function)
        def run(*args, root: str | Path | None = None, recompute: bool = False, **kwargs) -> StoredResult:
            arguments = bind(args, kwargs)
            params = key_params(arguments)
            folder = Path(root) if root is not None else default_root()
            if recompute:
                (folder / name / f"{result_key(name, params, version())}.npz").unlink(missing_ok=True)

            def compute() -> Mapping[str, np.ndarray]:
                token = _ACTIVE_ROOT.set(folder)
                try:
                    return function(**arguments)
                finally:
                    _ACTIVE_ROOT.reset(token)

            return cached(name, params, compute, root=folder, version=version())

        run.compute = function
        run.experiment_name = name
        run.version = version
        run.path = lambda *args, root=None, **kwargs: (
            (Path(root) if root is not None else default_root()) / name
            / f"{result_key(name, key_params(bind(args, kwargs)), version())}.npz")
        run.key = lambda *args, **kwargs: result_key(name, key_params(bind(args, kwargs)), version())
        run.provenance = lambda *args, root=None, **kwargs: provenance(name, key_params(bind(args, kwargs)), root,
                                                                       version())
        return run

    return decorate
