"""A content-addressed results store: compute once, load on every rebuild.

A result is a dict of numpy arrays saved as ``<root>/<name>/<key>.npz`` with its provenance in
``<key>.json`` beside it. The key hashes the experiment name, its parameters and the package's
source code, so a changed parameter or a changed line of code gives a new key and a fresh
computation, while an unchanged rebuild loads. Files are written under a temporary name and
renamed, so an interrupted run never leaves a half-written result that looks finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parent
RESULTS_ENV = "SYNAPTIC_GEOMETRY_RESULTS"
_RECORDED_PACKAGES = ("numpy", "scipy", "torch", "pandas", "matplotlib")


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of every Python source file of the package (changes when the code does)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.suffix == ".py" and "__pycache__" not in path.parts:
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


def default_root() -> Path:
    """The store's root: ``$SYNAPTIC_GEOMETRY_RESULTS`` if set, else ``./results``."""
    return Path(os.environ.get(RESULTS_ENV, "results"))


def result_key(name: str, params: Mapping) -> str:
    """The key of a result: a hash of its name, parameters and the code version."""
    try:
        text = json.dumps({"name": name, "params": params}, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"parameters of {name!r} must be JSON-serialisable: {error}") from None
    return hashlib.sha256((text + code_version()).encode()).hexdigest()[:20]


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


def cached(
    name: str,
    params: Mapping,
    compute: Callable[[], Mapping[str, np.ndarray]],
    root: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Return the stored result for ``(name, params, code)``, computing and saving it if absent."""
    _check_name(name)
    key = result_key(name, params)
    folder = Path(root) if root is not None else default_root()
    path = folder / name / f"{key}.npz"
    if path.exists():
        return load_arrays(path)
    start = time.time()
    arrays = compute()
    if not isinstance(arrays, Mapping) or not arrays:
        raise TypeError(f"compute() for {name!r} must return a non-empty dict of arrays")
    elapsed = time.time() - start
    provenance = {
        "name": name,
        "key": key,
        "params": params,
        "code_version": code_version(),
        "packages": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_seconds": round(elapsed, 3),
        "host": platform.node(),
    }
    save_arrays(path, arrays)
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(provenance, indent=2, sort_keys=True).encode())
    return {k: np.asarray(v) for k, v in arrays.items()}


def provenance(name: str, params: Mapping, root: str | Path | None = None) -> dict | None:
    """The provenance record of a stored result, or None if it has not been computed."""
    folder = Path(root) if root is not None else default_root()
    path = folder / name / f"{result_key(name, params)}.json"
    return json.loads(path.read_text()) if path.exists() else None
