"""The results store: keys, caching, atomic writes, provenance, no pickles."""

import json

import numpy as np
import pytest

from synaptic_geometry import store


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
