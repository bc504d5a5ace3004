"""The deep-network chapter's plan, scores, outcomes and verdicts, and the resumable enlarged sweep."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from synaptic_geometry.experiments import deep_analysis as da
from synaptic_geometry.experiments import finetune as ft
from synaptic_geometry.infra.sweep import SweepResult
from conftest import kill_when

PROTOCOLS = {"published": {"lr_rule": "lowest_loss"}, "small-change": {"lr_rule": "smallest_reaching_100"}}
PRETRAINING = {"mlp-tiny": {"epochs": 1, "lr": 0.1}}
OPTIONS = dict(lr_grid=[0.01, 0.5], epochs=2, max_extensions=0, batch_size=32)


def tiny_plan(potentials=("2-norm", "negative_entropy")):
    return da.chapter_plan(["mlp-tiny"], list(potentials), [0], PRETRAINING, PROTOCOLS, dataset="digits-embedded",
                           **OPTIONS)


def test_plan_pairs_protocols_on_the_same_pretraining_and_seeds():
    runs = tiny_plan()
    assert len(runs) == 4
    assert [da.protocol_of(r, PROTOCOLS) for r in runs] == ["published"] * 2 + ["small-change"] * 2
    assert runs[0]["pretraining"] == runs[2]["pretraining"] and runs[0]["seed"] == runs[2]["seed"]
    assert {r["lr_rule"] for r in runs} == set(ft.LR_RULES)
    # an architecture without its own settings uses the default's (the width sweep)
    (wide,) = da.chapter_plan(["mlp-32"], ["2-norm"], [0], {"mlp": {"epochs": 2, "lr": 0.05}}, PROTOCOLS | {},
                              **OPTIONS)[:1]
    assert wide["pretraining"]["epochs"] == 2 and wide["arch"] == "mlp-32"
    with pytest.raises(ValueError, match="unknown option"):
        da.chapter_plan(["mlp-tiny"], ["2-norm"], [0], PRETRAINING, {"x": {"momentum": 0.5}})
    with pytest.raises(ValueError, match="at least one protocol"):
        da.chapter_plan(["mlp-tiny"], ["2-norm"], [0], PRETRAINING, {})
    with pytest.raises(ValueError, match="no pretraining settings"):
        da.chapter_plan(["rnn-tiny"], ["2-norm"], [0], PRETRAINING, PROTOCOLS, pretraining_default="none")
    with pytest.raises(ValueError, match="matches no protocol"):
        da.protocol_of({**runs[0], "lr_rule": "other"}, PROTOCOLS)



def test_finetuning_images_sets_n_for_the_named_network_only():
    plain = da.chapter_plan(["mlp-tiny", "rnn-tiny"], ["2-norm"], [0], PRETRAINING, PROTOCOLS,
                            dataset="digits-embedded", pretraining_default="mlp-tiny", **OPTIONS)
    sized = da.chapter_plan(["mlp-tiny", "rnn-tiny"], ["2-norm"], [0], PRETRAINING, PROTOCOLS,
                            dataset="digits-embedded", pretraining_default="mlp-tiny",
                            finetuning_images={"rnn-tiny": 40}, **OPTIONS)
    assert [r["arch"] for r in sized] == ["mlp-tiny", "rnn-tiny"] * 2  # protocol-major, then architecture
    assert [r["n_samples"] for r in sized] == [None, 40, None, 40]
    # the other network's runs are unchanged, so their stored results keep their keys
    assert [r for r in sized if r["arch"] == "mlp-tiny"] == [r for r in plain if r["arch"] == "mlp-tiny"]
    with pytest.raises(ValueError, match="not planned"):
        da.chapter_plan(["mlp-tiny"], ["2-norm"], [0], PRETRAINING, PROTOCOLS, finetuning_images={"mlp": 10})



def test_finetuning_count_is_the_set_number_or_the_square_root_rounded_down():
    assert ft.finetuning_count(None, 1_028_000) == 1013 and ft.finetuning_count(1000, 1_028_000) == 1000
    assert ft.finetuning_count(None, 1013 ** 2 - 1) == 1012 and ft.finetuning_count(None, 1013 ** 2) == 1013

def profile_settings(**changes):
    settings = dict(architectures=["mlp-tiny"], dataset="digits-embedded", data_root=None,
                    pretraining={**PRETRAINING, "mlp": {"epochs": 1, "lr": 0.1}},
                    potentials=["2-norm"], seeds=[0], protocols=PROTOCOLS, widths=["mlp-32"], width_seeds=[0],
                    lr_grid=[0.01, 0.5], epochs=2, extra_epochs=2, max_extensions=0, batch_size=32,
                    finetuning_images={})
    return {**settings, **changes}


def test_profile_runs_checks_the_finetuning_pool_before_any_training():
    # digits-embedded's pool holds 20% of 1797 images; mlp-32 on 8x8 digits has D = 64*32 + 32*32 + 32*10
    main, widths = da.profile_runs(profile_settings())
    assert [r["arch"] for r in main] == ["mlp-tiny", "mlp-tiny"] and [r["arch"] for r in widths] == ["mlp-32"]
    assert da.finetuning_shortfalls(main + widths) == []
    pool = len(ft.protocol_data("digits-embedded")[1])
    too_many = profile_settings(finetuning_images={"mlp-tiny": pool + 1})
    with pytest.raises(ValueError, match=rf"(?s)too few finetuning images.*mlp-tiny: N = {pool + 1}.*holds {pool}"):
        da.profile_runs(too_many)
    (line,) = da.finetuning_shortfalls(da.chapter_plan(["mlp-tiny"], ["2-norm"], [0], PRETRAINING,
                                                       {"published": PROTOCOLS["published"]},
                                                       dataset="digits-embedded", n_samples=pool + 5, **OPTIONS))
    assert line.startswith(f"mlp-tiny: N = {pool + 5} ")
    assert da.profile_runs(profile_settings(finetuning_images={"mlp-tiny": pool}))[0][0]["n_samples"] == pool
    with pytest.raises(ValueError, match="does not run"):
        da.profile_runs(profile_settings(finetuning_images={"rnn-tiny": 10}))


def test_check_finished_names_the_failed_jobs():
    da.check_finished([SweepResult("units", 3, n_computed=3)])
    failed = SweepResult("units", 12, failures=[{"label": f"arch=rnn seed={i}", "error": "ValueError: pool"}
                                                for i in range(12)])
    with pytest.raises(RuntimeError, match=r"12 job\(s\) failed") as error:
        da.check_finished([SweepResult("pretrain", 1, n_cached=1), failed])
    assert "units: arch=rnn seed=0: ValueError: pool" in str(error.value)
    assert "arch=rnn seed=11" not in str(error.value) and "and 2 more" in str(error.value)

def synthetic_scores():
    """Two runs, two statistics: under 'raw' the first run is missed, under 'corrected' both are found."""
    rows = []
    values = {("raw", 0): {"2-norm": 0.3, "3-norm": 0.2, "negative_entropy": 0.5},
              ("raw", 1): {"2-norm": 0.1, "3-norm": 0.2, "negative_entropy": 0.4},
              ("corrected", 0): {"2-norm": 0.05, "3-norm": 0.08, "negative_entropy": 0.3},
              ("corrected", 1): {"2-norm": 0.04, "3-norm": 0.09, "negative_entropy": 0.2}}
    for (stat, seed), table in values.items():
        for candidate, value in table.items():
            rows.append({"protocol": "p", "arch": "a", "potential": "2-norm", "seed": seed, "statistic": stat,
                         "layer": "pooled", "candidate": candidate, "delta_cdf": value, "floor_median": 0.02,
                         "floor_q95": 0.03, "n_weights": 100, "change_magnitude": 0.1 * (seed + 1),
                         "lr_at_grid_end": seed == 1, "reached_100": True})
    return pd.DataFrame(rows)


def test_outcomes_margins_and_verdicts():
    out = da.outcomes(synthetic_scores()).set_index(["statistic", "seed"])
    assert out.loc[("raw", 0), "inferred"] == "3-norm" and not out.loc[("raw", 0), "correct"]
    assert out.loc[("raw", 0), "margin"] == pytest.approx(0.2 - 0.3)  # negative: missed by 0.1
    assert out.loc[("raw", 1), "margin"] == pytest.approx(0.1)
    assert out.loc[("corrected", 0), "floor_ratio"] == pytest.approx(0.05 / 0.02)
    table = da.verdicts(out.reset_index()).set_index("statistic")
    assert table.loc["raw", "identified"] == "1 / 2" and table.loc["raw", "verdict"] == "partly"
    assert table.loc["corrected", "verdict"] == "holds" and table.loc["corrected", "rate at grid end"] == 1
    assert table.loc["corrected", "median change"] == pytest.approx(0.15)
    assert table.loc["raw", "median margin / null"] == pytest.approx(np.median([-0.1, 0.1]) / 0.02)
    c = da.counts(out.reset_index()).set_index("statistic")
    assert c.loc["raw", "identified"] == 1 and c.loc["corrected", "runs"] == 2
    assert [da.verdict(k, 6) for k in (6, 5, 3, 2, 0)] == ["holds", "partly", "partly", "fails", "fails"]
    with pytest.raises(ValueError):
        da.verdict(3, 2)
    with pytest.raises(ValueError, match="trained potential"):
        da.outcomes(synthetic_scores().query("candidate != '2-norm'"))


def test_scores_of_stored_runs(tmp_path):
    runs = tiny_plan(["negative_entropy"])
    ft.run_all(runs, root=tmp_path, executor="serial", progress=False)
    table = da.scores(runs, PROTOCOLS, root=tmp_path, floor_samples=3)
    assert set(table["statistic"]) == set(da.STATISTICS) and set(table["protocol"]) == set(PROTOCOLS)
    assert len(table) == 2 * 2 * len(ft.CANDIDATE_POTENTIALS) and (table["layer"] == "pooled").all()
    assert (table["delta_cdf"] > 0).all() and (table["floor_median"] > 0).all()
    raw = table[table["statistic"] == "raw"]
    arrays = ft.finetune(runs[0], root=tmp_path)
    plain = ft.analyse(arrays, exclude_untouched=True).set_index("candidate")["delta_cdf"]
    first = raw[raw["protocol"] == "published"].set_index("candidate")["delta_cdf"]
    np.testing.assert_allclose(first.loc[plain.index], plain)  # the raw statistic is the published one
    per_layer = da.scores(runs, PROTOCOLS, root=tmp_path, floor_samples=3, per_layer=True)
    assert set(per_layer["layer"]) == {"features.1.weight"}


def test_score_sweep_stores_what_scores_reads(tmp_path):
    """The scoring sweep computes each finished run's scores once (in worker processes), and the
    table read afterwards equals the one computed in the calling process."""
    runs = tiny_plan(["negative_entropy"])
    ft.run_all(runs, root=tmp_path, executor="serial", progress=False)
    direct = da.scores(runs, PROTOCOLS, root=tmp_path, floor_samples=3)
    for path in (tmp_path / "deep_scores").glob("*"):
        path.unlink()  # forget the scores: the sweep must recompute them
    first = da.score_all(runs + tiny_plan(["3-norm"]), root=tmp_path, floor_samples=3, executor="local", workers=2,
                         progress=False)
    assert (first.n_jobs, first.n_computed, first.ok) == (len(runs), len(runs), True)  # unfinished runs skipped
    again = da.score_all(runs, root=tmp_path, floor_samples=3, executor="serial", progress=False)
    assert (again.n_cached, again.n_computed) == (len(runs), 0)
    pd.testing.assert_frame_equal(da.scores(runs, PROTOCOLS, root=tmp_path, floor_samples=3), direct)


def test_enlarged_sweep_resumes_after_a_kill(tmp_path):
    """The chapter's sweep (both protocols) killed after its first finished run reruns only the missing runs."""
    runs = tiny_plan(["2-norm", "negative_entropy", "3-norm"])
    root = tmp_path / "store"
    script = textwrap.dedent(f"""
        from synaptic_geometry.experiments import deep_analysis as da, finetune as ft
        runs = da.chapter_plan(["mlp-tiny"], ["2-norm", "negative_entropy", "3-norm"], [0], {PRETRAINING!r},
                               {PROTOCOLS!r}, dataset="digits-embedded", **{OPTIONS!r})
        ft.run_all(runs, root={str(root)!r}, executor="serial", progress=False)
    """)
    kill_when(script, lambda: any(ft.is_done(ft.finetune, {"params": r}, root) for r in runs), timeout=300)
    done = [r for r in runs if ft.is_done(ft.finetune, {"params": r}, root)]
    assert 1 <= len(done) < len(runs)
    stamps = {ft.finetune.path(r, root=root): ft.finetune.path(r, root=root).stat().st_mtime_ns for r in done}
    units = {path: path.stat().st_mtime_ns for path in (root / "finetune_unit").glob("*.npz")}
    first, second, third = ft.run_all(runs, root=root, executor="serial", progress=False)
    assert (first.n_cached, first.n_computed) == (1, 0)  # the pretraining survived
    assert (second.n_cached, second.n_computed) == (second.n_jobs, 0) and second.n_jobs > 0  # so did the units
    assert (third.n_cached, third.n_computed) == (len(done), len(runs) - len(done)) and third.ok
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in {**stamps, **units}.items())  # not redone
    assert all(ft.is_done(ft.finetune, {"params": r}, root) for r in runs)


def test_record_summary_and_identified_fraction():
    out = da.outcomes(synthetic_scores()).assign(lr=[0.1, 0.3, 0.1, 0.3], relative_change=0.2,
                                                 fraction_crossed_zero=[0.0, 0.1, 0.0, 0.1], epochs=30, dim=1000)
    summary = da.record_summary(out).iloc[0]
    assert summary["runs"] == 2 and summary["median rate"] == pytest.approx(0.2)  # each run counted once
    assert summary["rate at grid end"] == 1 and summary["missed 100%"] == 0
    frac = da.identified_fraction(out, ["statistic"]).set_index("statistic")
    assert frac.loc["raw", "identified"] == 0.5 and frac.loc["corrected", "identified"] == 1.0
    assert frac.loc["raw", "margin"] == pytest.approx(np.median([-0.1, 0.1]) / 0.02)


def test_width_table_orders_by_size_with_reader_columns():
    base = da.outcomes(synthetic_scores()).assign(relative_change=0.2, fraction_crossed_zero=0.0)
    out = pd.concat([base.assign(arch="mlp-640", dim=911360), base.assign(arch="mlp-32", dim=26112)])
    table = da.width_table(out)
    assert list(table["network"]) == ["mlp-32", "mlp-640"]  # narrowest first, one row each
    assert table["D"].tolist() == [26112, 911360] and table["runs"].tolist() == [2, 2]
    assert table["raw: identified"].tolist() == [0.5, 0.5] and table["corrected: identified"].tolist() == [1.0, 1.0]
    ratio = np.median([0.3, 0.1]) / 0.02  # the trained potential (2-norm) over the null median
    assert table["raw: ratio"].tolist() == pytest.approx([ratio, ratio])


def test_unit_sweep_resumes_after_a_kill(tmp_path):
    """The sweep of single-rate units killed after its first stored unit recomputes only the missing
    units, and the runs then find every unit they need in the store (none trained twice)."""
    runs = tiny_plan(["2-norm", "negative_entropy", "3-norm"])
    units = ft.base_units(runs)
    root = tmp_path / "store"
    script = textwrap.dedent(f"""
        from synaptic_geometry.experiments import deep_analysis as da, finetune as ft
        runs = da.chapter_plan(["mlp-tiny"], ["2-norm", "negative_entropy", "3-norm"], [0], {PRETRAINING!r},
                               {PROTOCOLS!r}, dataset="digits-embedded", **{OPTIONS!r})
        ft.run_all(runs, root={str(root)!r}, executor="serial", progress=False)
    """)

    def stored_units() -> list[dict]:
        return [u for u in units if ft.is_done(ft.finetune_unit, {"params": u}, root)]

    kill_when(script, lambda: len(stored_units()) >= 1, timeout=300)
    done = stored_units()
    assert 1 <= len(done) < len(units)  # killed inside the unit sweep
    assert not any(ft.is_done(ft.finetune, {"params": r}, root) for r in runs)
    stamps = {path: path.stat().st_mtime_ns for path in (ft.finetune_unit.path(u, root=root) for u in done)}
    first, second, third = ft.run_all(runs, root=root, executor="serial", progress=False)
    assert (first.n_cached, first.n_computed) == (1, 0)
    assert (second.n_jobs, second.n_cached, second.n_computed) == (len(units), len(done), len(units) - len(done))
    assert second.ok and third.ok and (third.n_cached, third.n_computed) == (0, len(runs))
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())  # the stored units were kept
    assert len(list((root / "finetune_unit").glob("*.npz"))) == len(units)  # the runs trained no unit again


def test_width_trend_separates_the_statistic_from_its_null():
    """A Delta-CDF constant in width over a null falling like D^-1/2: the ratio rises by the null's
    factor alone, and the statistic's own factor is one."""
    rows = [{"statistic": stat, "dim": d, "n_weights": d // 2, "trained_delta_cdf": 0.2,
             "floor_median": 1 / np.sqrt(d // 2), "floor_ratio": 0.2 * np.sqrt(d // 2)}
            for d in (1000, 4000, 16000) for stat in ("raw", "corrected")]
    trend = da.width_trend(pd.DataFrame(rows))
    assert (trend["narrowest_d"], trend["widest_d"]) == (1000, 16000)
    assert trend["stat_factor"] == pytest.approx(1.0) and trend["null_factor"] == pytest.approx(0.25)
    assert trend["sqrt_factor"] == pytest.approx(0.25)
    assert trend["widest_ratio"] / trend["narrowest_ratio"] == pytest.approx(4.0)
    assert trend["direction"] == "rises"
    assert da.width_trend(pd.DataFrame([{**r, "floor_ratio": 1 / r["dim"]} for r in rows]))["direction"] == "falls"
