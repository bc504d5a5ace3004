"""The results store: keys, caching, atomic writes, provenance, no pickles."""

import ast
import json
import re

import numpy as np
import pytest

from synaptic_geometry.infra import store


def test_second_call_loads_instead_of_recomputing(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(5.0), "names": np.array(["a", "bb"])}

    first = store.cached("demo", {"n": 5}, compute, root=tmp_path)
    second = store.cached("demo", {"n": 5}, compute, root=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["x"], second["x"])
    assert list(second["names"]) == ["a", "bb"]


def test_other_parameters_give_another_key(tmp_path):
    calls = []
    compute = lambda: calls.append(1) or {"x": np.zeros(1)}
    store.cached("demo", {"n": 1}, compute, root=tmp_path)
    store.cached("demo", {"n": 2}, compute, root=tmp_path)
    assert len(calls) == 2
    assert store.result_key("demo", {"a": 1, "b": 2}) == store.result_key("demo", {"b": 2, "a": 1})
    assert store.result_key("demo", {"a": 1}) != store.result_key("other", {"a": 1})


def test_provenance_is_written_beside_the_result(tmp_path):
    store.cached("demo", {"seed": 3}, lambda: {"x": np.ones(2)}, root=tmp_path)
    record = store.provenance("demo", {"seed": 3}, root=tmp_path)
    assert record["params"] == {"seed": 3}
    assert record["code_version"] == store.code_version()
    assert "numpy" in record["packages"] and "created" in record
    assert store.provenance("demo", {"seed": 4}, root=tmp_path) is None
    path = tmp_path / "demo" / f"{record['key']}.json"
    assert json.loads(path.read_text())["key"] == record["key"]


def test_interrupted_computation_leaves_nothing_that_looks_done(tmp_path):
    def failing():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.cached("demo", {"n": 1}, failing, root=tmp_path)
    assert not list(tmp_path.rglob("*.npz"))


def test_truncated_file_is_reported_not_loaded(tmp_path):
    store.cached("demo", {"n": 1}, lambda: {"x": np.ones(3)}, root=tmp_path)
    (path,) = tmp_path.rglob("*.npz")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(OSError, match="unreadable"):
        store.cached("demo", {"n": 1}, lambda: {"x": np.ones(3)}, root=tmp_path)


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        store.cached("demo", {"f": object()}, lambda: {"x": np.ones(1)}, root=tmp_path)
    with pytest.raises(TypeError, match="object"):
        store.cached("demo", {}, lambda: {"x": np.array([{}, 1], dtype=object)}, root=tmp_path)
    with pytest.raises(ValueError, match="result name"):
        store.cached("../escape", {}, lambda: {"x": np.ones(1)}, root=tmp_path)
    with pytest.raises(TypeError, match="non-empty dict"):
        store.cached("demo", {}, lambda: {}, root=tmp_path)


def test_environment_variable_sets_the_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv(store.RESULTS_ENV, str(tmp_path / "elsewhere"))
    store.cached("demo", {}, lambda: {"x": np.ones(1)}, root=None)
    assert list((tmp_path / "elsewhere" / "demo").glob("*.npz"))


def test_default_root_is_the_repository_store_without_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(store.RESULTS_ENV, raising=False)
    (tmp_path / "_config.yml").write_text("title: x\n")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "deep").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks" / "deep")  # as a notebook opened in Jupyter
    assert store.default_root() == tmp_path / "results" / "default"
    assert store.default_root("tiny") == tmp_path / "results" / "tiny"


def _package(tmp_path, monkeypatch):
    """A scratch package: a.py imports b.py; c.py is unrelated."""
    package = tmp_path / "synaptic_geometry"
    package.mkdir()
    (package / "__init__.py").write_text("from synaptic_geometry import c\n")
    (package / "a.py").write_text("from synaptic_geometry.b import helper\n")
    (package / "b.py").write_text("def helper():\n    return 1\n")
    (package / "c.py").write_text("X = 1\n")
    monkeypatch.setattr(store, "PACKAGE_DIR", package)
    store.module_dependencies.cache_clear()
    store.code_version.cache_clear()
    return package


def _edit(package, name, text):
    (package / name).write_text(text)
    store.module_dependencies.cache_clear()
    store.code_version.cache_clear()


def test_dependencies_follow_imports_transitively(tmp_path, monkeypatch):
    _package(tmp_path, monkeypatch)
    assert store.module_dependencies("synaptic_geometry.a") == ("synaptic_geometry.a", "synaptic_geometry.b")
    with pytest.raises(ValueError, match="not a module"):
        store.module_dependencies("numpy")


def test_experiment_recomputes_only_when_its_own_code_changes(tmp_path, monkeypatch):
    package = _package(tmp_path, monkeypatch)
    calls = []

    def compute(n: int, scale: float = 2.0):
        calls.append(n)
        return {"x": np.arange(n) * scale}

    compute.__module__ = "synaptic_geometry.a"
    run = store.experiment("demo_exp")(compute)
    results = tmp_path / "results"
    first = run(n=3, root=results)
    assert not first.from_store and calls == [3]
    again = run(3, root=results)  # positional and keyword bind to the same parameters
    assert again.from_store and calls == [3]
    assert again.provenance["params"] == {"n": 3, "scale": 2.0}
    _edit(package, "c.py", "X = 2\n")  # unrelated module: still cached
    assert run(n=3, root=results).from_store and calls == [3]
    _edit(package, "b.py", "def helper():\n    return 2\n")  # a dependency: recomputed
    assert not run(n=3, root=results).from_store and calls == [3, 3]
    assert not run(n=3, root=results, recompute=True).from_store and calls == [3, 3, 3]
    with pytest.raises(TypeError, match="demo_exp"):
        run(m=3, root=results)
    np.testing.assert_array_equal(run.compute(n=2)["x"], [0.0, 2.0])


def test_an_experiment_called_inside_another_uses_its_store(tmp_path, monkeypatch):
    monkeypatch.setenv(store.RESULTS_ENV, str(tmp_path / "elsewhere"))

    @store.experiment("inner_demo")
    def inner(n: int):
        return {"x": np.arange(n)}

    @store.experiment("outer_demo")
    def outer(n: int):
        return {"y": inner(n=n)["x"] * 2}

    outer(n=2, root=tmp_path / "chosen")
    assert list((tmp_path / "chosen" / "inner_demo").glob("*.npz"))
    assert not (tmp_path / "elsewhere").exists()


def test_machine_arguments_reach_the_function_but_not_the_key(tmp_path):
    seen = []

    @store.experiment("machine_demo", machine=("device",))
    def demo(n: int, device: str = "cpu"):
        seen.append(device)
        return {"x": np.arange(float(n))}

    first = demo(n=3, device="cpu", root=tmp_path)
    second = demo(n=3, device="cuda", root=tmp_path)  # same key: loaded, not recomputed
    assert seen == ["cpu"] and second.from_store and not first.from_store
    assert demo.key(n=3, device="cpu") == demo.key(n=3, device="cuda") == demo.key(n=3)
    assert demo.path(n=3, device="cuda", root=tmp_path).exists()
    assert "device" not in second.provenance["params"]
    with pytest.raises(TypeError, match="machine argument"):
        store.experiment("bad_machine", machine=("gpu",))(lambda n: {"x": np.zeros(1)})


def _calls_of_cached(source: str) -> list[int]:
    """Lines of ``source`` (Python) that call a function named ``cached`` (``cached(...)``, ``store.cached(...)``)."""
    return [node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "cached"]


def test_experiments_are_declared_with_the_decorator_only():
    """Outside the store, no module or chapter calls the low-level ``cached`` (whose key covers
    the whole package): every stored result is an ``@experiment``."""
    assert _calls_of_cached("x = store.cached('a', {}, f)\ny = cached('b', {}, g)\nz = cached_power(1)") == [1, 2]
    offenders = []
    for path in sorted(store.PACKAGE_DIR.rglob("*.py")):
        if path.name != "store.py":
            offenders += [f"{path.relative_to(store.PACKAGE_DIR)}:{line}" for line in _calls_of_cached(path.read_text())]
    notebooks = store.PACKAGE_DIR.parents[1] / "notebooks"
    for path in sorted(notebooks.glob("*.md")):
        offenders += [f"{path.name}: {line.strip()}" for line in path.read_text().splitlines()
                      if re.search(r"(?<![\w.])(store\.)?cached\(", line)]
    assert offenders == []
