"""Tests of the finetuning protocol: a tiny run end to end, records, errors, the analysis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synaptic_geometry.experiments import finetune as ft
from synaptic_geometry.experiments import models

PRE = dict(dataset="digits-embedded", epochs=1, lr=0.1)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


def tiny_run(potential="2-norm", seed=0, arch="mlp-tiny", **options):
    options = {"lr_grid": [0.01, 0.5], "epochs": 2, "max_extensions": 0, **options}
    return ft.run_params(arch, potential, seed, ft.pretrain_params(arch, **PRE), **options)


def test_tiny_finetune_changes_weights_and_records(store_root):
    params = tiny_run("negative_entropy")
    arrays = ft.finetune(params, root=store_root)
    layers = list(arrays["layers"])
    assert layers == ["features.1.weight"]  # the readout is not analysed
    before, after = arrays["before/features.1.weight"], arrays["after/features.1.weight"]
    assert before.shape == (32, 64) and not np.array_equal(before, after)
    assert np.all(np.sign(before) == np.sign(after))  # exponentiated gradient keeps signs
    assert int(arrays["dim"]) == 32 * 64 and int(arrays["n_samples"]) == int(np.sqrt(32 * 64))
    assert 0.0 <= float(arrays["train_accuracy"]) <= 1.0
    assert bool(arrays["reached_100"]) == (float(arrays["train_accuracy"]) >= 1.0)
    assert len(arrays["search_lr"]) == 2 and float(arrays["lr"]) in (0.01, 0.5)
    chosen = np.argmin(arrays["search_loss"])
    assert float(arrays["search_lr"][chosen]) == float(arrays["lr"])
    touched = arrays["touched/features.1.weight"]
    assert touched.dtype == bool and touched.any()
    # weights that never received a gradient did not move
    assert np.array_equal(before[~touched], after[~touched])
    # the same parameters load from the store and are identical
    again = ft.finetune(params, root=store_root)
    assert np.array_equal(again["after/features.1.weight"], after)


def test_runs_are_seeded(store_root):
    def unit(seed):  # the training itself, recomputed
        return ft.finetune_unit(ft.unit_params(tiny_run(seed=seed), 0.5, 2), root=store_root, recompute=True)

    a, b, c = unit(3), unit(3), unit(4)
    assert not a.from_store and not b.from_store
    assert np.array_equal(a["after/features.1.weight"], b["after/features.1.weight"])
    assert not np.array_equal(a["after/features.1.weight"], c["after/features.1.weight"])


def test_missed_accuracy_is_recorded_with_extensions(store_root):
    params = tiny_run(lr_grid=[1e-6], epochs=1, extra_epochs=1, max_extensions=2)
    arrays = ft.finetune(params, root=store_root, recompute=True)
    assert not bool(arrays["reached_100"]) and float(arrays["train_accuracy"]) < 1.0
    assert arrays["search_epochs"].tolist() == [1, 2, 3]  # searched again with more epochs, then gave up
    assert int(arrays["epochs"]) == 3


def test_analysis_tables(store_root):
    arrays = ft.finetune(tiny_run("negative_entropy"), root=store_root)
    table = ft.analyse(arrays)
    assert sorted(table["candidate"]) == sorted(ft.CANDIDATE_POTENTIALS)
    assert table["delta_cdf"].is_monotonic_increasing and table["rank"].tolist() == [1, 2, 3, 4, 5]
    touched = ft.analyse(arrays, exclude_untouched=True)
    assert touched["n_weights"].iloc[0] == int(arrays["touched/features.1.weight"].sum())
    best = ft.inferred(table.assign(arch="mlp-tiny", potential="negative_entropy", seed=0))
    matrix = ft.identification_matrix(best)
    assert matrix.to_numpy().sum() == 1 and list(matrix.columns) == list(ft.CANDIDATE_POTENTIALS)


def test_zero_handling_under_negative_entropy():
    net = models.build("convnet-tiny", (1, 8, 8))  # batch-norm shifts start at exactly zero
    groups, n_euclidean = ft._param_groups(net, "negative_entropy", "euclidean", set(models.analysed_weights(net)))
    assert n_euclidean > 0 and groups[1]["potential"] == "2-norm"
    assert all(bool((p != 0).all()) for p in groups[0]["params"])
    assert ft.nudge_zeros(net, seed=0) > 0
    assert all(bool((p != 0).all()) for p in net.parameters())
    with torch.no_grad():
        net.features[0].weight[0, 0, 0, 0] = 0.0
    with pytest.raises(ValueError, match="exact zeros"):
        ft._param_groups(net, "negative_entropy", "euclidean", set(models.analysed_weights(net)))


def test_bad_input(store_root):
    with pytest.raises(ValueError, match="unknown architecture"):
        ft.plan(["vgg"], ["2-norm"], [0], {})
    with pytest.raises(ValueError):
        tiny_run("entropy")
    with pytest.raises(ValueError, match="zero_policy"):
        tiny_run(zero_policy="ignore")
    with pytest.raises(ValueError, match="lr_grid"):
        tiny_run(lr_grid=[])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ft.protocol_data("mnist", "/nonexistent/mnist")
    assert not ft.availability(ft.imagenet_params("resnet18", None, None))[0]
    ok, why = ft.availability(ft.pretrain_params("rnn-1000"))  # N = 1013 > the pool of 1000
    assert not ok and "1013" in why
    ok, why = ft.availability(ft.pretrain_params("mlp", dataset="mnist", data_root="/nonexistent"))
    assert not ok and "does not exist" in why


def test_corrupt_stored_weights(tmp_path):
    params = ft.pretrain_params("rnn-tiny", **PRE)
    ft.pretrain(params, root=tmp_path)
    stored = ft.pretrain.path(params, root=tmp_path)
    stored.write_bytes(stored.read_bytes()[:100])  # truncated file
    with pytest.raises(OSError, match="unreadable"):
        ft.pretrained_model(params, tmp_path)


# ---------------------------------------------------------------------------------------------
# Protocol options: pretraining rules, learning-rate rules, the record, the device

FIT = dict(lr_grid=[3e-3, 0.03, 0.1, 0.3, 3.0], epochs=10, max_extensions=0, batch_size=8)


def test_learning_rate_rules_choose_as_documented(store_root):
    pre = ft.pretrain_params("mlp-tiny", **{**PRE, "epochs": 2})
    runs = {rule: ft.finetune(ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_rule=rule, **FIT), root=store_root)
            for rule in ft.LR_RULES}
    lowest, smallest = runs["lowest_loss"], runs["smallest_reaching_100"]
    # the published rule ran the whole grid and took the lowest final loss
    assert lowest["search_lr"].tolist() == FIT["lr_grid"]
    assert float(lowest["lr"]) == float(lowest["search_lr"][np.argmin(lowest["search_loss"])])
    # the small-change rule searched upwards and stopped at the first rate reaching 100% accuracy
    assert bool(smallest["reached_100"]) and float(smallest["train_accuracy"]) == 1.0
    assert float(smallest["search_lr"][-1]) == float(smallest["lr"])
    assert np.all(smallest["search_accuracy"][:-1] < 1.0)
    assert smallest["search_lr"].tolist() == FIT["lr_grid"][:len(smallest["search_lr"])]
    assert float(smallest["lr"]) <= float(lowest["lr"]) or not bool(lowest["reached_100"])
    for arrays in runs.values():
        rec = ft.record(arrays)
        assert set(rec) == set(ft.RECORD_FIELDS) and rec["lr_rule"] in ft.LR_RULES
        assert rec["lr_at_grid_end"] == (rec["lr"] in (FIT["lr_grid"][0], FIT["lr_grid"][-1]))
        b, a = ft.weights(arrays)
        assert rec["relative_change"] == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(b))
        # sign changed, or zero before or after (the convention of domain_mask)
        assert rec["fraction_crossed_zero"] == pytest.approx(np.mean((np.sign(a) != np.sign(b)) | (b == 0)))
        # under the 2-norm the dual change is the weight change itself
        assert rec["change_magnitude"] == pytest.approx(rec["relative_change"])
        assert str(arrays["device"]) == "cpu" and not bool(arrays["mixed_precision"])


def test_rate_at_the_end_of_the_grid_is_flagged(store_root):
    pre = ft.pretrain_params("mlp-tiny", **PRE)
    arrays = ft.finetune(ft.run_params("mlp-tiny", "negative_entropy", 0, pre, lr_grid=[1e-6, 1e-5], epochs=1,
                                       max_extensions=0), root=store_root)
    assert bool(arrays["lr_at_grid_end"]) and float(arrays["lr"]) in (1e-6, 1e-5)
    rec = ft.record(arrays)
    assert 0 < rec["change_magnitude"] < 1e-3 and rec["fraction_crossed_zero"] == 0.0  # signs kept, tiny steps


@pytest.mark.parametrize("rule, options", [("train_accuracy", {"target_accuracy": 0.5}),
                                           ("loss_plateau", {"patience": 1, "tol": 0.9})])
def test_pretraining_stops_by_its_rule_and_records_it(tmp_path, rule, options):
    params = ft.pretrain_params("mlp-tiny", dataset="digits-embedded", epochs=6, lr=0.1, until=rule, **options)
    arrays = ft.pretrain(params, root=tmp_path)
    run = int(arrays["epochs_run"])
    assert bool(arrays["converged"]) and 1 <= run < 6
    assert arrays["epoch_loss"].shape == arrays["epoch_accuracy"].shape == (run,)
    if rule == "train_accuracy":  # stopped at the first epoch that reached the target
        assert arrays["epoch_accuracy"][-1] >= 0.5 and np.all(arrays["epoch_accuracy"][:-1] < 0.5)
    else:  # stopped at the first epoch that improved the loss by less than 90% over one epoch
        assert run >= 2 and arrays["epoch_loss"][-1] > 0.1 * arrays["epoch_loss"][-2]
    assert float(arrays["train_accuracy"]) == pytest.approx(arrays["epoch_accuracy"][-1])
    missed = ft.pretrain(ft.pretrain_params("mlp-tiny", dataset="digits-embedded", epochs=1, lr=1e-6,
                                            until="train_accuracy"), root=tmp_path)
    assert not bool(missed["converged"]) and int(missed["epochs_run"]) == 1  # the cap, recorded as a miss
    fixed = ft.pretrain(ft.pretrain_params("mlp-tiny", dataset="digits-embedded", epochs=2, lr=0.1), root=tmp_path)
    assert bool(fixed["converged"]) and int(fixed["epochs_run"]) == 2


def test_rule_settings_enter_the_key_only_for_their_rule():
    a = ft.pretrain_params("mlp-tiny", until="epochs", target_accuracy=0.5)
    b = ft.pretrain_params("mlp-tiny", until="epochs", target_accuracy=0.9)
    assert a == b and "target_accuracy" not in a
    assert ft.pretrain_params("mlp-tiny", until="train_accuracy", target_accuracy=0.9)["target_accuracy"] == 0.9
    assert ft.pretrain_params("mlp-tiny", until="loss_plateau")["patience"] == 3


def test_protocol_options_are_validated():
    pre = ft.pretrain_params("mlp-tiny", **PRE)
    with pytest.raises(ValueError, match="lr_rule"):
        ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_rule="largest")
    with pytest.raises(ValueError, match="seed"):
        ft.run_params("mlp-tiny", "2-norm", -1, pre)
    with pytest.raises(ValueError, match="distinct"):
        ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_grid=[0.1, 0.1])
    with pytest.raises(ValueError, match="epochs"):
        ft.run_params("mlp-tiny", "2-norm", 0, pre, epochs=0)
    with pytest.raises(ValueError, match="n_samples"):
        ft.run_params("mlp-tiny", "2-norm", 0, pre, n_samples=1)
    with pytest.raises(ValueError, match="until"):
        ft.pretrain_params("mlp-tiny", until="forever")
    with pytest.raises(ValueError, match="target_accuracy"):
        ft.pretrain_params("mlp-tiny", until="train_accuracy", target_accuracy=1.5)
    with pytest.raises(ValueError, match="patience"):
        ft.pretrain_params("mlp-tiny", until="loss_plateau", patience=0)
    assert ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_grid=[1.0, 0.1])["lr_grid"] == [0.1, 1.0]


def test_device_is_a_machine_setting_outside_the_key(store_root):
    params = tiny_run()
    assert ft.finetune.key(params, device="cpu") == ft.finetune.key(params) == ft.finetune.key(params, device="auto")
    with pytest.raises(ValueError, match="device"):
        ft.run_all([params], root=store_root, executor="serial", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            ft.run_all([params], root=store_root, executor="serial", device="cuda")
    sweeps = ft.run_all([params], root=store_root, executor="serial", progress=False, device="cpu")
    assert len(sweeps) == 3 and all(sweep.ok for sweep in sweeps)
    assert sweeps[1].n_jobs == len(params["lr_grid"])  # the published rule's whole grid, as units
    assert str(ft.finetune(params, root=store_root, device="cpu")["device"]) == "cpu"


# ---------------------------------------------------------------------------------------------
# Runs shared between the learning-rate rules


def stored_units(root):
    return sorted((root / "finetune_unit").glob("*.npz"))


@pytest.mark.parametrize("first_rule", ft.LR_RULES)
def test_rules_choose_among_the_same_stored_units(tmp_path, first_rule):
    pre = ft.pretrain_params("mlp-tiny", **{**PRE, "epochs": 2})
    params = {rule: ft.run_params("mlp-tiny", "2-norm", 0, pre, lr_rule=rule, **FIT) for rule in ft.LR_RULES}
    assert ft.unit_params(params["lowest_loss"], 0.1, 10) == ft.unit_params(params["smallest_reaching_100"], 0.1, 10)
    second_rule = next(r for r in ft.LR_RULES if r != first_rule)
    first = ft.finetune(params[first_rule], root=tmp_path)
    units_after_first = stored_units(tmp_path)
    assert len(units_after_first) == len(first["search_lr"])  # one unit per (rate, epochs) tried
    second = ft.finetune(params[second_rule], root=tmp_path)
    tried_by_both = set(first["search_lr"].tolist()) | set(second["search_lr"].tolist())
    assert len(stored_units(tmp_path)) == len(tried_by_both)  # no (rate, epochs) trained twice
    if first_rule == "lowest_loss":  # it ran the whole grid: the small-change rule trains nothing new
        assert stored_units(tmp_path) == units_after_first
    for rule, run in ((first_rule, first), (second_rule, second)):  # each record comes from the stored unit
        unit = ft.finetune_unit(ft.unit_params(params[rule], float(run["lr"]), int(run["epochs"])), root=tmp_path)
        assert unit.from_store
        assert np.array_equal(unit["after/features.1.weight"], run["after/features.1.weight"])
        assert float(unit["accuracy"]) == float(run["train_accuracy"]) and float(unit["loss"]) == float(run["train_loss"])
    lowest = first if first_rule == "lowest_loss" else second
    smallest = second if first_rule == "lowest_loss" else first
    shared = smallest["search_lr"].tolist()
    np.testing.assert_array_equal(  # the same trainings give the same outcomes under both rules
        lowest["search_loss"][[lowest["search_lr"].tolist().index(lr) for lr in shared]], smallest["search_loss"])


def fake_outcomes(table):
    """An ``outcome(lr, epochs)`` reading (loss, accuracy) from ``table``, counting its calls."""
    calls = []

    def outcome(lr, epochs):
        calls.append((lr, epochs))
        loss, accuracy = table[(lr, epochs)]
        return {"loss": loss, "accuracy": accuracy}

    return outcome, calls


def test_search_selects_the_rate_each_rule_names():
    grid = [1e-3, 1e-2, 1e-1, 1.0]
    # at 2 epochs: 1e-2 is the smallest rate at 100%, 1e-1 the lowest loss, 1.0 diverged
    table = {(1e-3, 2): (1.0, 0.5), (1e-2, 2): (0.3, 1.0), (1e-1, 2): (0.01, 1.0), (1.0, 2): (np.inf, 0.0)}
    outcome, calls = fake_outcomes(table)
    tried, index = ft.search("smallest_reaching_100", grid, 2, 2, 1, outcome)
    assert tried[index][0] == 1e-2 and calls == [(1e-3, 2), (1e-2, 2)]  # stopped at the first rate at 100%
    outcome, calls = fake_outcomes(table)
    tried, index = ft.search("lowest_loss", grid, 2, 2, 1, outcome)
    assert tried[index][0] == 1e-1 and len(calls) == 4  # the whole grid, no extension needed
    # nothing reaches 100% at 2 epochs; at 4 epochs only 1e-1 does, and 1e-2 has the lowest loss
    table = {**{(lr, 2): (0.5 - lr / 10, 0.9) for lr in grid},
             (1e-3, 4): (0.4, 0.95), (1e-2, 4): (0.05, 0.99), (1e-1, 4): (0.1, 1.0), (1.0, 4): (np.inf, 0.0)}
    outcome, calls = fake_outcomes(table)
    tried, index = ft.search("smallest_reaching_100", grid, 2, 2, 1, outcome)
    assert tried[index][:2] == (1e-1, 4) and len(calls) == 4 + 3
    outcome, calls = fake_outcomes(table)
    tried, index = ft.search("lowest_loss", grid, 2, 2, 1, outcome)
    assert tried[index][:2] == (1e-2, 4) and float(tried[index][2]["accuracy"]) < 1.0 and len(calls) == 8
    outcome, calls = fake_outcomes(table)
    tried, index = ft.search("lowest_loss", grid, 2, 2, 0, outcome)  # no extension allowed: the miss is kept
    assert tried[index][:2] == (1.0, 2) and len(calls) == 4  # loss 0.5 - lr / 10 is lowest at 1.0
    with pytest.raises(ValueError, match="lr_rule"):
        ft.search("largest", grid, 2, 2, 0, outcome)


def test_base_units_are_the_published_rules_grids():
    pre = ft.pretrain_params("mlp-tiny", **PRE)
    runs = [ft.run_params("mlp-tiny", p, 0, pre, lr_rule=rule, lr_grid=[0.01, 0.1], epochs=2)
            for rule in ft.LR_RULES for p in ("2-norm", "3-norm")]
    units = ft.base_units(runs + runs)
    assert len(units) == 2 * 2 and {(u["potential"], u["lr"], u["epochs"]) for u in units} == {
        (p, lr, 2) for p in ("2-norm", "3-norm") for lr in (0.01, 0.1)}
    assert ft.base_units([r for r in runs if r["lr_rule"] == "smallest_reaching_100"]) == []
    with pytest.raises(ValueError, match="lr > 0"):
        ft.unit_params(runs[0], 0.0, 2)
