"""The identify tool's scale-structure-aware statistic (--scale-correction) on measured synapses."""

import json

import numpy as np
import pandas as pd
import pytest

import synaptic_geometry.identify as M
from synaptic_geometry import identify_corrected

CANDIDATES = "negative_entropy,2-norm,3-norm"


def neuron_experiment(truth="negative_entropy", seed=0):
    """30 postsynaptic x 40 presynaptic neurons, 60% of pairs connected, log-normal neuron scales of log-sd 0.6."""
    return M.simulate_neuron_synapses(truth, np.random.default_rng(seed), n_post=30, n_pre=40, density=0.6,
                                      spread=0.6)


def write(tmp_path, frame):
    b, a = tmp_path / "before.csv", tmp_path / "after.csv"
    frame[["pre", "post", "before"]].rename(columns={"before": "size"}).to_csv(b, index=False)
    frame[["pre", "post", "after"]].rename(columns={"after": "size"}).to_csv(a, index=False)
    return str(b), str(a)


def run(args, capsys):
    code = M.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def experiment():
    return neuron_experiment()


@pytest.fixture(scope="module")
def result(experiment):
    return M.identify_measurements(experiment.before, experiment.after, CANDIDATES.split(","), n_boot=100, seed=0,
                                   neurons=(experiment.pre, experiment.post))


def test_mixture_named_after_correction_and_above_the_floor_without(result):
    truth = "negative_entropy"
    raw = result.table.set_index("candidate")["delta_cdf"]
    assert raw[truth] > 3 * result.floor[1]             # raw: the scale mixture is far from Gaussian
    corrected = result.corrected
    assert corrected.best == truth and corrected.margin > 0
    assert corrected.table["delta_cdf"].iloc[0] <= corrected.floor[1]  # corrected: as Gaussian as the floor
    assert corrected.table["delta_cdf"].iloc[1] > corrected.floor[1]   # the runner-up is not
    assert corrected.floor[0] <= corrected.floor[1] and corrected.n_floor == M.N_CORRECTED_FLOOR
    assert (corrected.n_post, corrected.n_pre) == (30, 40)
    # the table carries the corrected score beside the raw one, for the same candidate
    column = result.table.set_index("candidate")["corrected_delta_cdf"]
    assert column.to_dict() == pytest.approx(corrected.table.set_index("candidate")["delta_cdf"].to_dict())
    assert "corrected_delta_cdf" in M.result_table(result).columns


def test_reuses_the_core_on_the_neuron_matrix(experiment, result):
    # the same matrix built by hand, scored by the core function, gives the same numbers
    rows, cols, shape = M.neuron_matrix(experiment.pre, experiment.post)
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    before, after = np.ones(shape), np.ones(shape)
    before[rows, cols], after[rows, cols] = experiment.before, experiment.after
    core = identify_corrected(before, after, CANDIDATES.split(","), masks=[mask], seed=0)
    mine = result.corrected.table
    assert list(core["candidate"]) == list(mine["candidate"])
    np.testing.assert_allclose(core["delta_cdf"], mine["delta_cdf"])
    # the order of the rows (synapses) changes nothing: neurons are numbered by their sorted ids
    shuffled = experiment.sample(frac=1.0, random_state=3)
    again = M.identify_measurements(shuffled.before, shuffled.after, CANDIDATES.split(","), n_boot=100, seed=0,
                                    neurons=(shuffled.pre, shuffled.post))
    np.testing.assert_allclose(again.corrected.table["delta_cdf"], mine["delta_cdf"], rtol=1e-9)


def test_cli_option_prints_and_writes_the_corrected_floor(tmp_path, capsys, experiment):
    b, a = write(tmp_path, experiment)
    table = tmp_path / "out.json"
    code, out, err = run([b, a, "--id-columns", "pre,post", "--column", "size", "--candidates", CANDIDATES,
                          "--n-boot", 100, "--scale-correction", "--figure", tmp_path / "f.png", "--table", table],
                         capsys)
    assert code == 0, err
    text = " ".join(out.split())
    assert "corrected Gaussian floor" in text and "corrected best: negative_entropy" in text
    written = json.loads(table.read_text())["scale_correction"]
    assert written["best"] == "negative_entropy"
    assert 0 < written["floor_median"] <= written["floor_high"]
    assert (written["n_post"], written["n_pre"]) == (30, 40)
    assert all("corrected_delta_cdf" in row for row in json.loads(table.read_text())["table"])
    # without the option nothing corrected is reported
    code, out, _ = run([b, a, "--id-columns", "pre,post", "--candidates", CANDIDATES, "--n-boot", 100,
                        "--figure", tmp_path / "f.png"], capsys)
    assert code == 0 and "corrected" not in out


@pytest.mark.parametrize("extra, message", [
    ([], "needs the neuron of each synapse"),
    (["--id-columns", "pre"], "exactly two id columns"),
    (["--id-columns", "pre,post,size"], "exactly two id columns"),
    (["--id-columns", "pre,pre"], "two different id columns"),
    (["--id-columns", "pre,post", "--counts"], "does not apply with --counts"),
])
def test_bad_options_exit_2_and_write_nothing(tmp_path, capsys, experiment, extra, message):
    b, a = write(tmp_path, experiment.iloc[:200])
    code, out, err = run([b, a, "--scale-correction", "--figure", tmp_path / "f.png", *extra], capsys)
    assert code == 2
    assert message in " ".join(err.split())
    assert not (tmp_path / "f.png").exists()


def test_unusable_neuron_structure_is_refused(tmp_path, capsys):
    # every presynaptic neuron has one synapse: the correction would keep only signs
    rng = np.random.default_rng(1)
    before = np.exp(rng.normal(0, 0.5, 60))
    frame = pd.DataFrame({"pre": [f"n{k}" for k in range(60)], "post": [f"m{k % 5}" for k in range(60)],
                          "before": before, "after": before * np.exp(0.2 * rng.standard_normal(60))})
    b, a = write(tmp_path, frame)
    code, _, err = run([b, a, "--id-columns", "pre,post", "--scale-correction", "--figure", tmp_path / "f.png"],
                       capsys)
    assert code == 1 and "every presynaptic neuron has a single synapse" in err
    assert not (tmp_path / "f.png").exists()
    # an id column missing from the files is input the tool cannot use (status 1, naming the column)
    code, _, err = run([b, a, "--id-columns", "pre,cell", "--column", "size", "--scale-correction",
                        "--figure", tmp_path / "f.png"],
                       capsys)
    assert code == 1 and "no id column 'cell'" in err


def test_dropped_rows_leave_the_matrix_too(experiment):
    frame = experiment.copy()
    frame.loc[:4, "after"] = -frame.loc[:4, "after"]  # five synapses change sign
    result = M.identify_measurements(frame.before, frame.after, CANDIDATES.split(","), n_boot=100, seed=0,
                                     invalid="drop_rows", neurons=(frame.pre, frame.post))
    assert len(result.dropped_rows) == 5 and result.n_synapses == len(frame) - 5
    kept = frame.iloc[5:]
    alone = M.identify_measurements(kept.before, kept.after, CANDIDATES.split(","), n_boot=100, seed=0,
                                    neurons=(kept.pre, kept.post))
    np.testing.assert_allclose(result.corrected.table["delta_cdf"], alone.corrected.table["delta_cdf"])
    with pytest.raises(M.MeasurementError, match="one id per synapse"):
        M.identify_measurements(frame.before, frame.after, neurons=(frame.pre[:10], frame.post))


def test_help_states_the_limits(capsys):
    assert M.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for limit in ("--scale-correction", "spread factorises", "few synapses per neuron", "needs neuron ids",
                  "Not with --counts"):
        assert limit in text, limit


def test_simulation_refuses_bad_settings():
    with pytest.raises(ValueError, match="density"):
        M.simulate_neuron_synapses("2-norm", np.random.default_rng(0), density=0.0)
    frame = M.simulate_neuron_synapses("3-norm", np.random.default_rng(0), n_post=5, n_pre=6, density=1.0)
    assert len(frame) == 30 and not frame.duplicated(["pre", "post"]).any()
