"""The paper-architectures chapter's package logic: SimSiam's sweeps and rows, verdicts, tables, figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

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
    runs, root, (first, second, third) = ssl_store
    assert (first.n_computed, second.n_computed, third.n_computed) == (1, 4, 4)
    assert not (first.failures or second.failures or third.failures)
    scores = pa.collect_simsiam(runs, root=root)
    assert set(pa.RECORD) <= set(scores.columns) and set(scores["arch"]) == {pa.SIMSIAM}
    best = pa.inferred(scores)
    assert len(best) == 4 and set(best["lr_rule"]) == {"lowest_loss", "smallest_near_best"}
    assert best["n_weights"].gt(0).all() and np.isfinite(best["delta_cdf"]).all()
    table = pa.run_table(best)
    assert "SimSiam (ResNet-10)" in set(table["network"]) and "relative change" in table


def test_simsiam_rerun_loads_everything(ssl_store):
    runs, root, _ = ssl_store
    again = pa.run_simsiam(runs, root=root, executor="serial")
    assert all(s.n_computed == 0 and s.n_cached == s.n_jobs for s in again)


def test_combine_requires_the_shared_columns():
    with pytest.raises(ValueError, match="nothing"):
        pa.combine(None, None)
    with pytest.raises(ValueError, match="missing columns"):
        pa.combine(None, pd.DataFrame({"arch": ["x"]}))
