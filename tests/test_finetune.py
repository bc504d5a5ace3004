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
    a = ft.finetune(tiny_run(seed=3), root=store_root, recompute=True)
    b = ft.finetune(tiny_run(seed=3), root=store_root, recompute=True)
    c = ft.finetune(tiny_run(seed=4), root=store_root, recompute=True)
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
