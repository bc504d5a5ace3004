"""The ``synaptic-geometry finetune`` command: one run of the deep-network chapter, scored."""

from __future__ import annotations

import json

import pytest

from synaptic_geometry.cli import main


@pytest.mark.parametrize("argv, message", [
    (["vgg", "--potential", "2-norm", "--seed", "0"], "unknown architecture"),
    (["mlp-tiny", "--potential", "entropy", "--seed", "0"], "potential"),
    (["mlp-tiny", "--potential", "2-norm", "--seed", "-1"], "non-negative"),
    (["mlp-tiny", "--potential", "2-norm", "--seed", "0", "--profile", "huge"], "profile"),
    (["mlp-tiny", "--potential", "2-norm", "--seed", "0", "--profile", "tiny", "--protocol", "adam"], "protocol"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, message):
    store = tmp_path / "store"
    assert main(["finetune", *argv, "--results", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
    assert not store.exists()


def test_non_integer_seed_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["finetune", "mlp-tiny", "--potential", "2-norm", "--seed", "one", "--results", str(tmp_path)])
    assert stop.value.code == 2 and not any(tmp_path.iterdir())


def test_runs_then_loads_one_run_and_prints_every_candidate(tmp_path, capsys):
    argv = ["finetune", "mlp-tiny", "--potential", "negative_entropy", "--seed", "0", "--profile", "tiny",
            "--results", str(tmp_path), "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert not first["from_store"] and first["protocol"] == "small-change"
    assert first["record"]["lr_rule"] == "smallest_reaching_100"
    for stat in ("raw", "corrected"):
        scores = first["statistics"][stat]["delta_cdf"]
        assert len(scores) == 5 and "negative_entropy" in scores and all(v >= 0 for v in scores.values())
        assert first["statistics"][stat]["floor_median"] > 0
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["from_store"] and second["statistics"] == first["statistics"]
    assert main(argv[:-1]) == 0  # text output
    text = capsys.readouterr().out
    assert "<- trained" in text and "Gaussian floor" in text and "inferred" in text
