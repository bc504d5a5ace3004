"""Tests for the identify tool on count data: --counts, --dequantise, --n-draws, --id-columns,
--where, centring (--drift, --uncentred), --control and --calibrate, with their errors."""

import json

import numpy as np
import pandas as pd
import pytest

import synaptic_geometry.identify as M
from synaptic_geometry.experiments import connectome_data

DATA = connectome_data.DATA_DIR


def count_files(folder, n=400, seed=0, growth="multiplicative", extra_before=3, extra_after=5, name="pair"):
    """Counts of ``n`` connections in both files, plus connections listed in one file only."""
    rng = np.random.default_rng(seed)
    strength = np.exp(rng.normal(3.0, 0.6, n))
    grown = strength * np.exp(rng.normal(0.7, 0.25, n)) if growth == "multiplicative" else strength + 40
    before, after = rng.poisson(strength) + 1, rng.poisson(grown) + 1
    pre = [f"A{i}" for i in range(n)]
    post = [f"B{i % 7}" for i in range(n)]
    b = pd.DataFrame({"pre": pre + [f"V{i}" for i in range(extra_before)], "post": post + ["X"] * extra_before,
                      "type": "chemical", "synapses": np.r_[before, np.ones(extra_before, dtype=int)]})
    a = pd.DataFrame({"pre": pre[::-1] + [f"N{i}" for i in range(extra_after)], "post": post[::-1] + ["Y"] * extra_after,
                      "type": "chemical", "synapses": np.r_[after[::-1], 2 * np.ones(extra_after, dtype=int)]})
    electrical = pd.DataFrame({"pre": ["A0"], "post": ["B0"], "type": ["electrical"], "synapses": [99]})
    paths = folder / f"{name}_before.csv", folder / f"{name}_after.csv"
    pd.concat([b, electrical]).to_csv(paths[0], index=False)
    a.to_csv(paths[1], index=False)
    return str(paths[0]), str(paths[1])


COUNT_ARGS = ["--counts", "--id-columns", "pre,post", "--where", "type=chemical", "--column", "synapses"]


def run(args, capsys):
    code = M.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err  # the summary wraps its lines


# --------------------------------------------------------------------------- reading and matching
def test_read_counts_matches_by_pairs_of_ids_and_keeps_zeros(tmp_path):
    b, a = count_files(tmp_path, n=50)
    matched = M.read_counts(b, a, "synapses", ["pre", "post"], {"type": "chemical"})
    assert list(matched.ids.columns) == ["pre", "post"]
    assert matched.both.sum() == 50
    assert matched.vanished.sum() == 3 and matched.appeared.sum() == 5
    assert set(matched.ids[matched.appeared].pre) == {f"N{i}" for i in range(5)}
    assert 99 not in matched.before  # the electrical row was not selected
    row = matched.ids.index[(matched.ids.pre == "A3") & (matched.ids.post == "B3")][0]
    original = pd.read_csv(a)
    assert matched.after[row] == original.loc[(original.pre == "A3"), "synapses"].item()


def test_read_counts_without_ids_pairs_rows(tmp_path):
    (tmp_path / "b.csv").write_text("k\n1\n0\n3\n")
    (tmp_path / "a.csv").write_text("k\n2\n4\n0\n")
    matched = M.read_counts(tmp_path / "b.csv", tmp_path / "a.csv")
    assert matched.appeared.tolist() == [False, True, False]
    assert matched.vanished.tolist() == [False, False, True]


@pytest.mark.parametrize("text, where, message", [
    ("pre,post,synapses\na,b,1.5\nc,d,2\n", {}, "not counts (whole numbers >= 0): line 2: 1.5"),
    ("pre,post,synapses\na,b,2\nc,d,-1\n", {}, "not counts (whole numbers >= 0): line 3: -1"),
    ("pre,post,synapses\na,b,2\nc,d,2\n", {"kind": "x"}, "has no selection column 'kind'"),
    ("pre,post,synapses\na,b,2\nc,d,2\n", {"pre": "zz"}, "has no rows where pre is 'zz'"),
    ("pre,post,synapses\na,b,2\na,b,3\n", {}, "duplicated ids in column(s) pre, post: a b"),
])
def test_read_counts_errors_name_the_problem(tmp_path, text, where, message):
    (tmp_path / "b.csv").write_text(text)
    (tmp_path / "a.csv").write_text("pre,post,synapses\na,b,2\nc,d,2\n")
    with pytest.raises(M.MeasurementError) as info:
        M.read_counts(tmp_path / "b.csv", tmp_path / "a.csv", "synapses", ["pre", "post"], where)
    assert message in str(info.value)


def test_parse_where():
    assert M.parse_where(["type=chemical", " a = b "]) == {"type": "chemical", "a": "b"}
    with pytest.raises(M.MeasurementError, match="COLUMN=VALUE"):
        M.parse_where(["type"])


# --------------------------------------------------------------------------- the count test
def test_identify_counts_finds_multiplicative_growth_and_reports_zeros(tmp_path):
    b, a = count_files(tmp_path, n=600, seed=1)
    matched = M.read_counts(b, a, "synapses", ["pre", "post"], {"type": "chemical"})
    result = M.identify_counts(matched, n_boot=100, n_draws=4, seed=0)
    assert result.best == "negative_entropy"
    assert result.centered and result.unit == "connections" and result.n_synapses == 600
    assert list(result.table.columns) == ["candidate", "delta_cdf", "draw_sd", "ci_low", "ci_high", "best_fraction"]
    assert np.all(result.table.draw_sd > 0)
    assert sorted(result.appeared) == [f"N{i} Y" for i in range(5)]
    assert sorted(result.vanished) == [f"V{i} X" for i in range(3)]
    assert 0 < result.floor[0] < result.floor[1] < result.table.delta_cdf.max()
    assert result.growth == pytest.approx(matched.after[matched.both].sum() / matched.before[matched.both].sum())
    text = " ".join(result.summary().split())
    assert "5 appeared, 3 vanished" in text and "centred Delta-CDF" in text and "Gaussian floor" in text
    same = M.identify_counts(matched, n_boot=100, n_draws=4, seed=0)
    pd.testing.assert_frame_equal(result.table, same.table)


def test_without_dequantisation_one_draw_and_no_spread(tmp_path):
    b, a = count_files(tmp_path, n=200)
    matched = M.read_counts(b, a, "synapses", ["pre", "post"], {"type": "chemical"})
    result = M.identify_counts(matched, n_boot=100, n_draws=7, dequantisation="none")
    assert result.n_draws == 1 and np.all(result.table.draw_sd == 0)


def test_centring_matters_under_growth(tmp_path):
    b, a = count_files(tmp_path, n=400, seed=2)
    matched = M.read_counts(b, a, "synapses", ["pre", "post"], {"type": "chemical"})
    centred = M.identify_counts(matched, n_boot=100, n_draws=2)
    uncentred = M.identify_counts(matched, n_boot=100, n_draws=2, centered=False)
    best = lambda r: r.table.set_index("candidate").delta_cdf["negative_entropy"]  # noqa: E731
    assert best(uncentred) > 3 * best(centred)  # the net growth dominates the uncentred score


@pytest.mark.parametrize("kwargs, message", [
    ({"dequantisation": "poisson"}, "unknown dequantisation 'poisson'"),
    ({"n_draws": 0}, "n_draws must be an integer >= 1"),
    ({"n_boot": 10}, "n_boot must be an integer >= 100"),
    ({"candidates": ["2-norm"]}, "at least two different candidates"),
    ({"candidates": ["entropy", "2-norm"]}, "unknown potential 'entropy'"),
])
def test_identify_counts_errors(tmp_path, kwargs, message):
    b, a = count_files(tmp_path, n=50)
    matched = M.read_counts(b, a, "synapses", ["pre", "post"], {"type": "chemical"})
    with pytest.raises(M.MeasurementError, match=message):
        M.identify_counts(matched, **kwargs)


def test_too_few_connections_in_both(tmp_path):
    b, a = count_files(tmp_path, n=10)
    matched = M.read_counts(b, a, "synapses", ["pre", "post"], {"type": "chemical"})
    with pytest.raises(M.MeasurementError, match="10 connections are present in both files; the test needs at least 20"):
        M.identify_counts(matched, n_boot=100)


# --------------------------------------------------------------------------- command line
def test_cli_counts_writes_json_with_zeros_and_settings(tmp_path, capsys):
    b, a = count_files(tmp_path, n=300)
    table = tmp_path / "out.json"
    code, out, err = run([b, a, *COUNT_ARGS, "--n-boot", 100, "--n-draws", 3, "--dequantise", "uniform",
                          "--figure", tmp_path / "out.png", "--table", table], capsys)
    assert code == 0, err
    assert "300 connections" in out and "centred Delta-CDF" in out and "5 appeared, 3 vanished" in out
    summary = json.loads(table.read_text())
    assert summary["dequantisation"] == "uniform" and summary["n_draws"] == 3 and summary["centered"] is True
    assert len(summary["appeared"]) == 5 and len(summary["vanished"]) == 3
    assert summary["floor_high"] > summary["floor_median"] > 0
    assert summary["control"] is None and summary["calibration"] is None


def test_cli_uncentred_and_drift(tmp_path, capsys):
    b, a = count_files(tmp_path, n=300)
    code, out, err = run([b, a, *COUNT_ARGS, "--n-boot", 100, "--n-draws", 1, "--uncentred",
                          "--figure", tmp_path / "f.png"], capsys)
    assert code == 0, err
    assert "uncentred Delta-CDF" in out
    # continuous values: uncentred by default, centred with --drift
    code, out, err = run([b, a, "--id-columns", "pre,post", "--where", "type=chemical", "--column", "synapses",
                          "--n-boot", 100, "--figure", tmp_path / "f.png"], capsys)
    assert code == 1 and "unpaired synapses" in err and "use --counts" in err
    pd.read_csv(b).query("type == 'chemical' and pre.str.startswith('A')").to_csv(tmp_path / "b2.csv", index=False)
    pd.read_csv(a).query("pre.str.startswith('A')").to_csv(tmp_path / "a2.csv", index=False)
    for flag, word in (([], "uncentred"), (["--drift"], "centred")):
        code, out, err = run([tmp_path / "b2.csv", tmp_path / "a2.csv", "--id-columns", "pre,post", "--column",
                              "synapses", "--n-boot", 100, "--figure", tmp_path / "f.png", *flag], capsys)
        assert code == 0, err
        assert f", {word} Delta-CDF" in out


@pytest.mark.parametrize("extra, message", [
    (["--dequantise", "none"], "--dequantise only apply to count data; add --counts"),
    (["--n-draws", "3", "--calibrate"], "--n-draws, --calibrate only apply to count data"),
    (["--control", "x.csv", "y.csv"], "--control only apply to count data"),
    ([*COUNT_ARGS, "--n-draws", "0"], "--n-draws must be at least 1"),
    ([*COUNT_ARGS, "--drop-rows"], "do not apply with --counts"),
    ([*COUNT_ARGS, "--calibrate", "--uncentred"], "cannot be combined with --uncentred"),
    ([*COUNT_ARGS, "--calibrate", "--calibration-reps", "5"], "--calibration-reps must be at least 20"),
    ([*COUNT_ARGS, "--calibrate", "--candidates", "negative_entropy,3-norm"], "add 2-norm to --candidates"),
    ([*COUNT_ARGS, "--dequantise", "poisson"], "invalid choice: 'poisson'"),
    (["--centered", "--uncentred"], "not allowed with argument"),
])
def test_cli_option_errors_exit_2(tmp_path, capsys, extra, message):
    b, a = count_files(tmp_path, n=30)
    code, out, err = run([b, a, *extra, "--figure", tmp_path / "f.png"], capsys)
    assert code == 2
    assert message in err, err
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--where", "type"], "a row selection is written COLUMN=VALUE"),
    (["--control", "missing_b.csv", "missing_a.csv"], "no such file"),
])
def test_cli_count_input_errors_exit_1(tmp_path, capsys, extra, message):
    b, a = count_files(tmp_path, n=30)
    code, out, err = run([b, a, *COUNT_ARGS, "--n-boot", 100, *extra, "--figure", tmp_path / "f.png"], capsys)
    assert code == 1 and message in err and out == ""
    assert not (tmp_path / "f.png").exists()


def test_cli_control_and_calibration_on_the_real_connectomes(tmp_path, capsys):
    """Newborn to adult (datasets 1 and 8), with the two adults (7 and 8) as the same-age control."""
    files = [DATA / f"witvliet_2020_{k}.csv" for k in (1, 8, 7, 8)]
    table = tmp_path / "c.json"
    code, out, err = run([files[0], files[1], *COUNT_ARGS, "--n-boot", 100, "--n-draws", 2,
                          "--control", files[2], files[3], "--calibrate", "--calibration-reps", 20,
                          "--figure", tmp_path / "c.png", "--table", table], capsys)
    assert code == 0, err
    summary = json.loads(table.read_text())
    assert summary["n_synapses"] == 634  # chemical connections of animals 1 and 8 present in both
    assert summary["control"]["n_synapses"] == 1469
    assert 0 < summary["individual_var"] < 0.1
    assert [row["truth"] for row in summary["calibration"]] == ["negative_entropy", "2-norm"]
    assert all(0 < row["p_value"] <= 1 and 0 <= row["power"] <= 1 for row in summary["calibration"])
    assert summary["growth_verdict"] in {"multiplicative", "additive", "neither", "undecided", "not separable"}
    assert "control pair: best" in out and "growth verdict:" in out
