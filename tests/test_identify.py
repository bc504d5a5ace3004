"""Tests for synaptic_geometry.identify: the identify tool on paired measurements (Python and CLI)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import synaptic_geometry.identify as M
from synaptic_geometry import CANDIDATE_POTENTIALS, delta_cdf, domain_mask, dual_change
from synaptic_geometry.experiments.biology import simulate_measurements
from synaptic_geometry.identify import calibration, cli, counts, outputs, plotting, reading, scale, statistics, tables

CANDIDATES = ("negative_entropy", "2-norm", "3-norm")


def simulated(n=800, truth="negative_entropy", seed=0):
    return simulate_measurements(n, truth, np.random.default_rng(seed))


def write_pair(folder, before, after, column="size", ids=None, ids_after=None):
    b = pd.DataFrame({column: before})
    a = pd.DataFrame({column: after})
    if ids is not None:
        b.insert(0, "synapse", ids)
        a.insert(0, "synapse", ids if ids_after is None else ids_after)
    b.to_csv(folder / "before.csv", index=False)
    a.to_csv(folder / "after.csv", index=False)
    return str(folder / "before.csv"), str(folder / "after.csv")


# --------------------------------------------------------------------------- Python function
@pytest.mark.parametrize("truth", CANDIDATES)
def test_identifies_the_true_geometry(truth):
    before, after = simulated(1500, truth, seed=1)
    keep = domain_mask(before, after)
    result = M.identify_measurements(before[keep], after[keep], CANDIDATES, n_boot=200, seed=0)
    assert result.best == truth
    assert result.decisive
    assert result.best_fraction >= 0.95
    assert result.margin > 0 and result.margin_ci[0] > 0
    assert list(result.table.columns) == ["candidate", "delta_cdf", "ci_low", "ci_high", "best_fraction"]
    assert result.table["candidate"].iloc[0] == truth
    assert np.all(result.table["ci_low"] <= result.table["ci_high"])
    assert result.table["best_fraction"].sum() == pytest.approx(1.0)


def test_same_seed_same_result_and_seed_matters():
    before, after = simulated(300)
    a = M.identify_measurements(before, after, n_boot=150, seed=4)
    b = M.identify_measurements(before, after, n_boot=150, seed=4)
    c = M.identify_measurements(before, after, n_boot=150, seed=5)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert not a.table["ci_low"].equals(c.table["ci_low"])
    np.testing.assert_array_equal(a.table["delta_cdf"], c.table["delta_cdf"])  # the estimate is not random


def test_undecided_on_too_little_information():
    # pure noise with a single weight scale: every candidate is about equally Gaussian
    rng = np.random.default_rng(0)
    before = np.ones(40) + 0.01 * rng.standard_normal(40)
    after = before + 0.01 * rng.standard_normal(40)
    result = M.identify_measurements(before, after, CANDIDATES, n_boot=200)
    assert not result.decisive


@pytest.mark.parametrize(
    "before, after, kwargs, message",
    [
        (np.ones(30), np.ones(31), {}, "before has 30 values but after has 31"),
        (np.r_[np.nan, np.ones(29)], np.ones(30) * 2, {}, r"before values contain 1 non-finite value\(s\) \(nan or inf\) at index 0;"),
        (np.ones(10), np.ones(10) * 2, {}, "10 synapses; the test needs at least 20"),
        (np.ones(30), np.ones(30), {}, "identical for every synapse"),
        (np.ones(30), np.ones(30) * 2, {"candidates": ("entropy", "2-norm")}, "unknown potential 'entropy'"),
        (np.ones(30), np.ones(30) * 2, {"candidates": ("2-norm",)}, "at least two candidates"),
        (np.ones(30), np.ones(30) * 2, {"n_boot": 10}, "n_boot must be an integer >= 100"),
        (np.ones(30), np.ones(30) * 2, {"confidence": 1.5}, "confidence must be between 0 and 1"),
        (np.ones(30), np.ones(30) * 2, {"invalid": "ignore"}, "not a policy"),
        (np.ones((6, 5)), np.ones((6, 5)), {}, "one-dimensional"),
    ],
)
def test_function_errors(before, after, kwargs, message):
    with pytest.raises(M.MeasurementError, match=message):
        M.identify_measurements(before, after, **kwargs)


def sign_trouble():
    before, after = simulated(200, "2-norm", seed=3)
    before, after = np.abs(before), np.abs(after) + 0.01
    after[[5, 17]] *= -1   # two sign flips
    before[40] = 0.0       # one zero
    return before, after


def test_sign_flips_and_zeros_refused_with_rows():
    before, after = sign_trouble()
    with pytest.raises(M.MeasurementError) as info:
        M.identify_measurements(before, after)
    text = str(info.value)
    assert "negative_entropy keeps every synapse's sign" in text
    assert "3 synapse(s)" in text and "(1 with a zero)" in text
    assert "index 5, index 17, index 40" in text
    assert "--drop-rows" in text


def test_drop_rows_is_explicit_and_reported():
    before, after = sign_trouble()
    result = M.identify_measurements(before, after, n_boot=100, invalid="drop_rows")
    assert result.dropped_rows == ["index 5", "index 17", "index 40"]
    assert result.n_synapses == 197
    assert "negative_entropy" in set(result.table["candidate"])
    assert "dropped 3 row(s)" in " ".join(result.summary().split())


def test_drop_candidates_is_explicit_and_reported():
    before, after = sign_trouble()
    result = M.identify_measurements(before, after, n_boot=100, invalid="drop_candidates")
    assert result.dropped_candidates == ["negative_entropy"]
    assert "negative_entropy" not in set(result.table["candidate"])
    assert result.n_synapses == 200


def test_too_few_after_dropping_rows():
    before = np.r_[np.ones(15), -np.ones(10)] * np.linspace(1, 2, 25)
    after = np.abs(before) * 1.1
    with pytest.raises(M.MeasurementError, match="15 synapses after dropping rows"):
        M.identify_measurements(before, after, invalid="drop_rows")


# --------------------------------------------------------------------------- reading CSV files
def test_read_pairs_by_id_in_any_order(tmp_path):
    ids = [f"s{i}" for i in range(25)]
    before = np.arange(1, 26, dtype=float)
    after = before * 2
    b = pd.DataFrame({"synapse": ids, "size": before})
    a = pd.DataFrame({"synapse": ids[::-1], "size": after[::-1]})
    b.to_csv(tmp_path / "b.csv", index=False)
    a.to_csv(tmp_path / "a.csv", index=False)
    data = M.read_measurements(tmp_path / "b.csv", tmp_path / "a.csv", id_columns="synapse")
    np.testing.assert_array_equal(data.after, 2 * data.before)
    assert data.labels[0] == "id s0"


# --------------------------------------------------------------------------- command line
def run(args, capsys):
    code = M.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err  # the summary wraps its lines


def test_cli_writes_figure_and_tables(tmp_path, capsys):
    before, after = simulated(600)
    b, a = write_pair(tmp_path, before, after, ids=[f"syn{i}" for i in range(600)])
    fig, table = tmp_path / "out.png", tmp_path / "out.csv"
    code, out, err = run(
        [b, a, "--column", "size", "--id-column", "synapse", "--n-boot", 100, "--seed", 1,
         "--figure", fig, "--table", table],
        capsys,
    )
    assert code == 0, err
    assert "best: negative_entropy" in out
    assert fig.read_bytes()[:4] == b"\x89PNG"
    written = pd.read_csv(table)
    assert written["candidate"].iloc[0] == "negative_entropy"
    assert len(written) == len(CANDIDATE_POTENTIALS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.csv", "before.csv", "out.csv", "out.png"]

    js = tmp_path / "out.json"
    # without --column the value column is the only one besides the id column
    code, out, err = run([b, a, "--id-column", "synapse", "--n-boot", 100, "--candidates", "negative_entropy,2-norm",
                          "--figure", tmp_path / "out.svg", "--table", js], capsys)
    assert code == 0, err
    assert (tmp_path / "out.svg").read_text().lstrip().startswith("<?xml")
    summary = json.loads(js.read_text())
    assert summary["best"] == "negative_entropy" and summary["n_synapses"] == 600
    assert [row["candidate"] for row in summary["table"]] == ["negative_entropy", "2-norm"]


def test_cli_help_and_bad_option(capsys):
    assert M.main(["--help"]) == 0
    assert "BEFORE.csv" in capsys.readouterr().out
    assert M.main(["a.csv"]) == 2  # AFTER.csv missing: argparse's usage error


def bad_inputs(tmp_path):
    """(name, writer, extra args, expected message) for every kind of bad input."""
    good_b, good_a = simulated(50)

    def csv(name, text):
        (tmp_path / name).write_text(text)
        return str(tmp_path / name)

    def pair(before_text, after_text):
        return csv("before.csv", before_text), csv("after.csv", after_text)

    def column(values, name="size"):
        return name + "\n" + "\n".join(str(v) for v in values) + "\n"

    return [
        ("missing column", lambda: pair(column(good_b), column(good_a)), ["--column", "volume"],
         "has no value column 'volume'; its columns are: size"),
        ("no value column guessable", lambda: pair("a,b\n1,2\n", "a,b\n1,2\n"), [],
         "none is called 'weight'"),
        ("non-numeric", lambda: pair(column(list(good_b[:3]) + ["big"] + list(good_b[4:])), column(good_a)), [],
         "non-numeric values (line 5: 'big')"),
        ("NaN", lambda: pair(column(good_b), column(list(good_a[:7]) + ["NaN"] + list(good_a[8:]))), [],
         "missing values (empty or NaN) on lines 9"),
        ("empty cell", lambda: pair(column(good_b), column(list(good_a[:2]) + [""] + list(good_a[3:]))), [],
         "missing values (empty or NaN) on lines 4"),
        ("infinite", lambda: pair(column(good_b), column(["inf"] + list(good_a[1:]))), [],
         "contain 1 non-finite value(s) (nan or inf) at line 2;"),
        ("unequal lengths", lambda: pair(column(good_b), column(good_a[:-1])), [],
         "has 50 rows but"),
        ("unpaired ids", lambda: pair("id,size\n" + "".join(f"s{i},{v}\n" for i, v in enumerate(good_b)),
                                      "id,size\n" + "".join(f"t{i},{v}\n" for i, v in enumerate(good_a))),
         ["--id-column", "id"], "unpaired synapses; ids only in"),
        ("duplicated ids", lambda: pair("id,size\n" + "".join(f"s{i % 40},{v}\n" for i, v in enumerate(good_b)),
                                        "id,size\n" + "".join(f"s{i},{v}\n" for i, v in enumerate(good_a))),
         ["--id-column", "id"], "duplicated ids"),
        ("missing id column", lambda: pair(column(good_b), column(good_a)), ["--id-column", "id"],
         "has no id column 'id'"),
        ("sign flips", lambda: pair(column(good_b), column([-good_a[0]] + list(good_a[1:]))), [],
         "change sign (0 with a zero): line 2"),
        ("zeros", lambda: pair(column([0.0] + list(good_b[1:])), column(good_a)), [],
         "(1 with a zero): line 2"),
        ("too few synapses", lambda: pair(column(good_b[:12]), column(good_a[:12])), [],
         "12 synapses; the test needs at least 20"),
        ("empty file", lambda: pair("", column(good_a)), [], "is empty"),
        ("header only", lambda: pair("size\n", column(good_a)), [], "has a header but no rows"),
        ("no such file", lambda: (str(tmp_path / "nothere.csv"), csv("after.csv", column(good_a))), [],
         "no such file"),
        ("unknown candidate", lambda: pair(column(good_b), column(good_a)), ["--candidates", "entropy,2-norm"],
         "unknown potential 'entropy'"),
        ("bad figure type", lambda: pair(column(good_b), column(good_a)), ["--figure", str(tmp_path / "f.jpg")],
         "must end in one of .png, .pdf, .svg"),
        ("bad table type", lambda: pair(column(good_b), column(good_a)), ["--table", str(tmp_path / "t.xlsx")],
         "must end in one of .csv, .json"),
        ("missing output folder", lambda: pair(column(good_b), column(good_a)),
         ["--figure", str(tmp_path / "no" / "f.png")], "does not exist"),
    ]


@pytest.mark.parametrize("case", range(20))
def test_cli_bad_input_clear_error_and_no_output(tmp_path, capsys, case):
    cases = bad_inputs(tmp_path)
    assert len(cases) == 20
    name, make, extra, message = cases[case]
    before, after = make()
    inputs = {p.name for p in tmp_path.iterdir()}
    args = [before, after, "--n-boot", 100, "--figure", tmp_path / "fig.png", "--table", tmp_path / "t.json"]
    code, out, err = run(args + extra, capsys)
    assert code == 1, name
    assert err.startswith("error: ")
    assert message in err, (name, err)
    assert out == ""
    assert {p.name for p in tmp_path.iterdir()} == inputs, f"{name}: output written despite the error"


def test_cli_drop_rows_option(tmp_path, capsys):
    before, after = simulated(100)
    after[3] = -after[3]
    b, a = write_pair(tmp_path, before, after)
    code, out, err = run([b, a, "--drop-rows", "--n-boot", 100, "--figure", tmp_path / "f.pdf"], capsys)
    assert code == 0, err
    assert "dropped 1 row(s) unusable by sign-keeping candidates: line 5" in out
    assert (tmp_path / "f.pdf").exists()
    code, out, err = run([b, a, "--drop-rows", "--drop-candidates"], capsys)
    assert code == 2 and "not allowed with" in err


def test_module_runs_as_script(tmp_path):
    before, after = simulated(200)
    b, a = write_pair(tmp_path, before, after, column="weight")
    fig = tmp_path / "f.png"
    done = subprocess.run(
        [sys.executable, "-m", "synaptic_geometry.identify", b, a, "--n-boot", "100", "--figure", str(fig)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "best: negative_entropy" in done.stdout
    assert fig.exists()
    failed = subprocess.run(
        [sys.executable, "-m", "synaptic_geometry.identify", b, str(tmp_path / "missing.csv")],
        capture_output=True, text=True, timeout=120,
    )
    assert failed.returncode == 1
    assert "no such file" in failed.stderr


def test_calibration_counts(tmp_path):
    result = M.stored_calibration([300], reps=3, n_boot=100, seed=0, root=tmp_path)
    assert result["decisive"].shape == (3, 1)
    for key in ("best_correct", "decisive", "decisive_wrong", "best_fraction"):
        assert np.all((result[key] >= 0) & (result[key] <= 1 + 1e-12))
    assert np.all(result["decisive_wrong"] <= result["decisive"] + 1e-12)
    assert result["best_correct"][0, 0] == pytest.approx(1.0)  # negative entropy, 300 synapses
    assert not result.from_store
    again = M.stored_calibration([300], reps=3, n_boot=100, seed=0, root=tmp_path)
    assert again.from_store
    np.testing.assert_array_equal(result["decisive"], again["decisive"])


def test_figure_shares_match_the_summary():
    before, after = simulated(300)
    result = M.identify_measurements(before, after, CANDIDATES, n_boot=100, seed=2)
    labels = [t.get_text() for t in M.plot_result(result).axes[0].get_yticklabels()]
    share = f"{100 * result.best_fraction:.1f}%"
    assert f"{result.best}\n(best in {share})" in labels
    assert f"lowest Delta-CDF in {share} of resamples" in " ".join(result.summary().split())


def test_package_reexports_every_module_function():
    for module in (calibration, cli, counts, outputs, plotting, reading, scale, statistics, tables):
        for name in module.__all__:
            if name not in ("FIGURE_SUFFIXES", "TABLE_SUFFIXES", "check_output", "verdict"):
                assert getattr(M, name) is getattr(module, name), name


def test_bootstrap_in_batches_equals_one_resample_at_a_time(monkeypatch):
    """The resamples are scored in batches (several batches here); each interval is what scoring
    the same resamples one at a time with the scalar Delta-CDF gives."""
    monkeypatch.setattr(statistics, "_BOOT_VALUES", 7 * 400)  # 7 resamples per batch
    rng = np.random.default_rng(5)
    before = np.exp(rng.standard_normal(400))
    after = before * np.exp(0.2 * rng.standard_normal(400))
    result = statistics.identify_measurements(before, after, candidates=["negative_entropy", "2-norm"], n_boot=100, seed=3)
    draws = np.random.default_rng(3)
    idx = [draws.integers(0, 400, 400) for _ in range(100)]
    for name in ("negative_entropy", "2-norm"):
        change = dual_change(before, after, name)
        boot = np.array([delta_cdf(change[i]) for i in idx])
        row = result.table.set_index("candidate").loc[name]
        low, high = np.quantile(boot, [(1 - result.confidence) / 2, (1 + result.confidence) / 2])
        assert row["ci_low"] == pytest.approx(low, rel=1e-12) and row["ci_high"] == pytest.approx(high, rel=1e-12)



def test_share_upper_bound():
    assert M.share_upper_bound(0, 20) == pytest.approx(1 - 0.05 ** (1 / 20))
    assert 0.13 < M.share_upper_bound(0, 20) < 0.14
    assert M.share_upper_bound(20, 20) == 1.0
    assert M.share_upper_bound(5, 20) > 5 / 20
    assert M.share_upper_bound(0, 200) < M.share_upper_bound(0, 20)
    for args, message in (((0, 0), "trials"), ((3, 2), "successes"), ((1, 10, 1.0), "confidence")):
        with pytest.raises(ValueError, match=message):
            M.share_upper_bound(*args)


def test_result_and_calibration_tables(tmp_path):
    before, after = simulated(300)
    result = M.identify_measurements(before, after, CANDIDATES, n_boot=100, seed=0)
    table = M.result_table(result)
    assert list(table.columns) == ["candidate", "delta_cdf", "interval", "best_fraction"]
    assert table.candidate.iloc[0] == "negative entropy"
    assert table.interval.iloc[0] == f"{result.table.ci_low.iloc[0]:.3g}–{result.table.ci_high.iloc[0]:.3g}"
    calibrated = M.calibrate([100, 300], reps=3, n_boot=100, seed=0)
    rows = M.calibration_table(calibrated, reps=3)
    assert len(rows) == 3 * 2 and set(rows.n) == {100, 300}
    assert np.all(rows.wrong_bound >= rows.decisive_wrong)
    zero = rows[rows.decisive_wrong == 0].wrong_bound
    assert np.allclose(zero, 1 - 0.05 ** (1 / 3))


def test_compare_results_side_by_side():
    before, after = simulated(400)
    grown = after * 1.5  # a common growth factor: a constant in negative entropy's dual space
    plain = M.identify_measurements(before, grown, CANDIDATES, n_boot=100)
    centred = M.identify_measurements(before, grown, CANDIDATES, n_boot=100, centered=True)
    table = M.compare_results({"uncentred": plain, "centred": centred})
    assert list(table.columns) == ["candidate", "uncentred", "uncentred best", "centred", "centred best"]
    row = table.set_index("candidate").loc["negative entropy"]
    assert row["centred best"] and row["centred"] < row["uncentred"]
    assert table["centred best"].sum() == 1 and table["uncentred best"].sum() == 1
    with pytest.raises(ValueError, match="at least one"):
        M.compare_results({})


def test_summary_lines_fit_a_narrow_terminal():
    before, after = sign_trouble()
    text = M.identify_measurements(before, after, n_boot=100, invalid="drop_rows").summary()
    table_lines = 6  # header and one row per candidate, as pandas prints them
    lines = text.splitlines()
    assert all(len(line) <= 72 for line in lines[:1] + lines[1 + table_lines:]), text


def test_command_line_keeps_options_with_their_values():
    args = ["before.csv", "after.csv", "--counts", "--control", "b2.csv", "a 2.csv", "--n-boot", "200"]
    text = M.command_line(args, width=40)
    lines = text.splitlines()
    assert lines[0].startswith("synaptic-geometry identify before.csv")
    assert all(line.endswith(" \\") for line in lines[:-1]) and len(lines) > 1
    assert "--control b2.csv 'a 2.csv'" in text  # one group, quoted
    assert all(len(line) <= 40 for line in lines)
    import shlex
    assert shlex.split(text.replace("\\\n", " "))[2:] == args  # the shell reads back the same arguments
