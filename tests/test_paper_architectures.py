"""The paper-architectures chapter's package logic: SimSiam's sweeps and rows, verdicts, tables, figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from synaptic_geometry.experiments import finetune as ft
from synaptic_geometry.experiments import paper_architectures as pa
from synaptic_geometry.experiments import simsiam


def _best(rows):
    frame = pd.DataFrame(rows, columns=["arch", "lr_rule", "potential", "inferred", "relative_change",
                                        "fraction_crossed_zero", "lr_at_grid_end", "fits"])
    frame["correct"] = frame["potential"] == frame["inferred"]
    return frame


def test_verdict_words_and_errors():
    assert pa.verdict(3, 3) == "every run"
    assert pa.verdict(1, 3) == "some runs"
    assert pa.verdict(0, 3) == "none"
    for bad in ((4, 3), (-1, 3), (0, 0)):
        with pytest.raises(ValueError):
            pa.verdict(*bad)


def test_verdict_table_counts_per_network_and_rule():
    best = _best([
        ("cornet-s", "lowest_loss", "2-norm", "2-norm", 0.5, 0.1, True, True),
        ("cornet-s", "lowest_loss", "3-norm", "2.5-norm", 0.7, 0.3, False, False),
        ("cornet-s", "smallest_reaching_100", "2-norm", "2-norm", 0.01, 0.0, False, True),
        ("cornet-rt", "lowest_loss", "2-norm", "3-norm", 0.2, 0.2, False, True),
    ])
    table = pa.verdict_table(best, order=["cornet-rt", "cornet-s"])
    assert list(table["network"]) == ["CORnet-RT", "CORnet-S", "CORnet-S"]  # ordered as asked
    row = table.iloc[1]
    assert row["identified"] == "1 of 2" and row["verdict"] == "some runs"
    assert row["relative change"] == pytest.approx(0.6) and row["crossed zero"] == pytest.approx(0.2)
    assert row["at grid end"] == "1 of 2" and row["fit"] == "1 of 2"
    assert table.iloc[2]["verdict"] == "every run" and table.iloc[0]["verdict"] == "none"


def test_matched_over_floor():
    scores = pd.DataFrame({"potential": ["2-norm", "2-norm", "3-norm"], "candidate": ["2-norm", "3-norm", "3-norm"],
                           "layer": "pooled", "n_weights": [100, 100, 400], "delta_cdf": [0.5, 0.9, 0.2]})
    ratios = pa.matched_over_floor(scores, pd.Series({100: 0.1, 400: 0.05}))
    assert list(ratios["ratio"]) == pytest.approx([5.0, 4.0])  # only the trained potential's rows
    with pytest.raises(ValueError, match="no Gaussian floor"):
        pa.matched_over_floor(scores, pd.Series({100: 0.1}))


def test_identification_matrices_figure_has_one_panel_per_network_and_rule():
    best = _best([("cornet-rt", "lowest_loss", "2-norm", "2-norm", 0.1, 0, False, True),
                  ("simsiam", "smallest_near_best", "3-norm", "2-norm", 0.1, 0, False, True)])
    fig = pa.plot_identification_matrices(best, ["cornet-rt", "simsiam"],
                                          [["lowest_loss", "smallest_reaching_100"], ["lowest_loss", "smallest_near_best"]])
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and "CORnet-RT\npublished (lowest loss)" in titles
    counts = [int(t.get_text()) for ax in fig.axes for t in ax.texts]
    assert sum(counts) == 2  # each run counted once


def test_rate_runs_share_the_grid_across_rules():
    pretraining = simsiam.pretrain_params(width=2, epochs=1)
    runs = pa.simsiam_plan(pretraining, ["2-norm", "3-norm"], [0], ["lowest_loss", "smallest_near_best"],
                           lr_grid=[0.1, 0.01], epochs=1)
    assert len(runs) == 4 and [r["lr_rule"] for r in runs[:2]] == ["lowest_loss"] * 2
    rates = pa.rate_runs(runs)
    assert len(rates) == 4  # 2 potentials x 2 rates: the rules add none
    assert sorted({r["lr"] for r in rates}) == [0.01, 0.1]
    assert all(set(r) == set(simsiam.RATE_KEYS) | {"lr"} for r in rates)


@pytest.fixture(scope="module")
def ssl_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    pretraining = simsiam.pretrain_params(width=2, epochs=1, batch_size=64, dataset="digits-embedded")
    runs = pa.simsiam_plan(pretraining, ["2-norm", "negative_entropy"], [0], ["lowest_loss", "smallest_near_best"],
                           lr_grid=[0.01, 0.3], epochs=1, batch_size=16, n_samples=24)
    sweeps = pa.run_simsiam(runs, root=root, executor="serial")
    return runs, root, sweeps


def test_simsiam_sweeps_and_rows(ssl_store):
    runs, root, (first, second, *thirds) = ssl_store
    assert len(thirds) == 2  # one sweep per rule, the published rule first
    assert (first.n_computed, second.n_computed, sum(t.n_computed for t in thirds)) == (1, 4, 4)
    assert not any(s.failures for s in (first, second, *thirds))
    scores = pa.collect_simsiam(runs, root=root)
    assert set(pa.RECORD) <= set(scores.columns) and set(scores["arch"]) == {pa.SIMSIAM}
    best = pa.inferred(scores)
    assert len(best) == 4 and set(best["lr_rule"]) == {"lowest_loss", "smallest_near_best"}
    assert best["n_weights"].gt(0).all() and np.isfinite(best["delta_cdf"]).all()
    table = pa.run_table(best)
    assert "SimSiam (ResNet-10)" in set(table["network"]) and "relative change" in table
    assert "D" not in table and "N" not in table and len(table) == len(best)  # D and N: the networks' table
    assert ("seed" in table) == (best["seed"].nunique() > 1)
    assert "seed" in pa.run_table(pd.concat([best, best.assign(seed=best["seed"] + 1)]))


def test_simsiam_rerun_loads_everything(ssl_store):
    runs, root, _ = ssl_store
    again = pa.run_simsiam(runs, root=root, executor="serial")
    assert all(s.n_computed == 0 and s.n_cached == s.n_jobs for s in again)


def test_combine_requires_the_shared_columns():
    with pytest.raises(ValueError, match="nothing"):
        pa.combine(None, None)
    with pytest.raises(ValueError, match="missing columns"):
        pa.combine(None, pd.DataFrame({"arch": ["x"]}))


# ---------------------------------------------------------------------------------------------
# The bracketed learning-rate search (finetune.search with bracket=True) and the grid-end flag

GRID = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]


def _outcomes(loss: dict, reach: set):
    calls = []

    def outcome(lr, epochs):
        calls.append(lr)
        return {"loss": loss[lr], "accuracy": 1.0 if lr in reach else 0.9}

    return outcome, calls


# loss after a fixed number of epochs: falls with the rate up to 1e-2, rises above it, 10 diverges
UNIMODAL = {1e-5: 2.0, 1e-4: 1.5, 1e-3: 0.6, 1e-2: 0.2, 1e-1: 0.9, 1.0: 2.3, 10.0: np.inf}


@pytest.mark.parametrize("start, expected_calls", [
    (None, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]),  # upwards from the smallest rate, one rate past the minimum
    (1e-2, [1e-2, 1e-1, 1e-3]),              # the start is the minimum: one rate each side
    (1e-3, [1e-3, 1e-2, 1e-1]),              # the loss falls upwards: walk up
    (1.0, [1.0, 10.0, 1e-1, 1e-2, 1e-3]),    # it rises upwards (10 diverged): walk down
])
def test_bracketed_lowest_loss_finds_the_full_searchs_rate(start, expected_calls):
    outcome, calls = _outcomes(UNIMODAL, set())
    tried, index = ft.search("lowest_loss", GRID, 5, 5, 0, outcome, bracket=True, start_lr=start)
    assert tried[index][0] == 1e-2 and calls == expected_calls
    full, full_index = ft.search("lowest_loss", GRID, 5, 5, 0, _outcomes(UNIMODAL, set())[0])
    assert full[full_index][0] == 1e-2 and len(full) == len(GRID)  # same answer, more trainings


def test_bracketed_lowest_loss_at_the_top_of_the_grid_is_a_grid_end():
    outcome, calls = _outcomes({lr: 1.0 / lr for lr in GRID}, set())  # the loss still falls at the top
    tried, index = ft.search("lowest_loss", GRID, 5, 5, 0, outcome, bracket=True, start_lr=1e-2)
    assert tried[index][0] == GRID[-1] and calls == [1e-2, 1e-1, 1.0, 10.0]


@pytest.mark.parametrize("start, expected_calls, chosen", [
    (1e-2, [1e-2, 1e-3, 1e-4], 1e-3),  # a success: down to the first failure
    (1e-1, [1e-1, 1e-2, 1e-3, 1e-4], 1e-3),
    (None, [1e-5, 1e-4, 1e-3], 1e-3),  # no start: upwards from the smallest rate, as the full search
    (1e-4, [1e-4], 1e-4),              # the start does not fit: the search ends, the run does not fit
])
def test_bracketed_smallest_reaching_100(start, expected_calls, chosen):
    reach = {1e-3, 1e-2, 1e-1}
    outcome, calls = _outcomes(UNIMODAL, reach)
    tried, index = ft.search("smallest_reaching_100", GRID, 20, 0, 0, outcome, bracket=True, start_lr=start)
    assert tried[index][0] == chosen and calls == expected_calls
    assert (float(tried[index][2]["accuracy"]) >= 1.0) == (chosen in reach)
    full, full_index = ft.search("smallest_reaching_100", GRID, 20, 0, 0, _outcomes(UNIMODAL, reach)[0])
    assert full[full_index][0] == 1e-3
    with pytest.raises(ValueError, match="start_lr"):
        ft.search("smallest_reaching_100", GRID, 20, 0, 0, outcome, bracket=True, start_lr=3e-3)


def test_search_options_enter_the_key_only_when_set():
    pre = ft.pretrain_params("mlp-tiny", "digits-embedded", epochs=1)
    plain = ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_grid=GRID)
    assert not {"stop_at_100", "bracket", "start_lr"} & set(plain)
    small = ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_grid=GRID, lr_rule="smallest_reaching_100",
                          stop_at_100=True, bracket=True, start_lr=1e-2)
    assert (small["stop_at_100"], small["bracket"], small["start_lr"]) == (True, True, 1e-2)
    assert ft.unit_params(small, 1e-2, 20)["stop_at_100"] is True
    assert "stop_at_100" not in ft.unit_params(plain, 1e-2, 20)
    assert ft.base_units([ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_grid=GRID, bracket=True)]) == []
    assert ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_grid=GRID, bracket=True, start_lr=1e-2)["start_lr"] == 1e-2
    for bad in ({"start_lr": 1e-2}, {"start_lr": 3e-3, "bracket": True}):
        with pytest.raises(ValueError, match="start_lr"):
            ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_grid=GRID, lr_rule="smallest_reaching_100", **bad)


def test_stop_at_100_ends_training_at_the_first_epoch_that_fits(tmp_path):
    pre = ft.pretrain_params("mlp-tiny", "digits-embedded", epochs=2, lr=0.1)
    params = ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_grid=[0.1], epochs=30, batch_size=16,
                           lr_rule="smallest_reaching_100", stop_at_100=True)
    unit = ft.finetune_unit(ft.unit_params(params, 0.1, 30), root=tmp_path)
    assert float(unit["accuracy"]) == 1.0 and 1 <= int(unit["epochs_run"]) < 30
    run = ft.finetune(params, root=tmp_path)
    assert ft.record(run)["epochs_run"] == int(unit["epochs_run"]) and ft.record(run)["epochs"] == 30


def test_small_change_plan_starts_at_the_published_rate(tmp_path):
    pre = ft.pretrain_params("mlp-tiny", "digits-embedded", epochs=2, lr=0.1)
    published = ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_grid=[1e-3, 0.1, 10.0], epochs=2, batch_size=16,
                              bracket=True)
    with pytest.raises(ValueError, match="not stored"):
        pa.small_change_plan([published], 10, root=tmp_path)
    chosen = float(ft.finetune(published, root=tmp_path)["lr"])
    (small,) = pa.small_change_plan([published], 10, root=tmp_path)
    assert small["start_lr"] == chosen and small["epochs"] == 10 and small["stop_at_100"] and small["bracket"]
    assert small["lr_rule"] == "smallest_reaching_100" and small["lr_grid"] == published["lr_grid"]
    with pytest.raises(ValueError, match="published"):
        pa.small_change_plan([small], 10, root=tmp_path)


def test_grid_end_runs_lists_the_flagged_runs():
    best = _best([("cornet-s", "lowest_loss", "2-norm", "2-norm", 0.5, 0.1, True, True),
                  ("cornet-s", "smallest_reaching_100", "3-norm", "2.5-norm", 0.7, 0.3, False, False)])
    best["lr"] = [1e-5, 1e-2]
    flagged = pa.grid_end_runs(best)
    assert list(flagged["network"]) == ["CORnet-S"] and list(flagged["rate"]) == [1e-5]
    assert len(pa.grid_end_runs(best[~best["lr_at_grid_end"]])) == 0
