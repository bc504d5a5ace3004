"""Tests of SimSiam: the loss and its stop-gradient, augmentations, collapse check, backbone, runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from synaptic_geometry.experiments import finetune, simsiam

SMALL = dict(backbone="resnet10", width=2, dim=16, pred_dim=4)


def outputs(seed: int = 0, n: int = 6, d: int = 5, grad: bool = True) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=gen).requires_grad_(grad) for _ in range(4)]


# ---------------------------------------------------------------------------------------------
# The loss


def test_no_gradient_flows_through_the_target_branch():
    p1, p2, z1, z2 = outputs()
    simsiam.simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_stop_gradient_in_a_network():
    """Through a shared encoder, the gradient is that of the predictions alone (targets as constants)."""
    torch.manual_seed(0)
    encoder, predictor = nn.Linear(4, 3), nn.Linear(3, 3)
    x1, x2 = torch.randn(8, 4), torch.randn(8, 4)

    def grads(detached_targets: bool) -> torch.Tensor:
        encoder.zero_grad()
        z1, z2 = encoder(x1), encoder(x2)
        if detached_targets:
            z1c, z2c = z1.detach().clone(), z2.detach().clone()
            loss = -(nn.functional.cosine_similarity(predictor(z1), z2c).mean()
                     + nn.functional.cosine_similarity(predictor(z2), z1c).mean()) / 2
        else:
            loss = simsiam.simsiam_loss(predictor(z1), predictor(z2), z1, z2)
        loss.backward()
        return encoder.weight.grad.clone()

    torch.testing.assert_close(grads(False), grads(True))


def test_loss_is_symmetric_in_the_views():
    p1, p2, z1, z2 = outputs(grad=False)
    torch.testing.assert_close(simsiam.simsiam_loss(p1, p2, z1, z2), simsiam.simsiam_loss(p2, p1, z2, z1))
    assert not torch.isclose(simsiam.simsiam_loss(p1, p2, z1, z2), simsiam.simsiam_loss(p1, p2, z2, z1))


def test_loss_values_at_alignment():
    _, _, z1, z2 = outputs(grad=False)
    assert simsiam.simsiam_loss(3.0 * z2, 0.5 * z1, z1, z2).item() == pytest.approx(-1.0)
    assert simsiam.simsiam_loss(-z2, -z1, z1, z2).item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Augmentations


def images(n: int = 6, side: int = 28, channels: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(1))


def test_augmentations_are_seeded_and_keep_shapes():
    x = images()
    a1, a2 = simsiam.two_views(x, simsiam.DIGITS, torch.Generator().manual_seed(5))
    b1, b2 = simsiam.two_views(x, simsiam.DIGITS, torch.Generator().manual_seed(5))
    c1, _ = simsiam.two_views(x, simsiam.DIGITS, torch.Generator().manual_seed(6))
    assert a1.shape == x.shape and a2.shape == x.shape
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.allclose(a1, a2) and not torch.allclose(a1, c1)
    color = images(4, 32, 3)
    assert simsiam.augment(color, simsiam.IMAGENET, torch.Generator().manual_seed(0)).shape == color.shape


def test_identity_augmentation_returns_the_images():
    identity = simsiam.Augmentation(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), max_rotation=0.0, noise_std=0.0)
    x = images()
    torch.testing.assert_close(simsiam.augment(x, identity, torch.Generator().manual_seed(0)), x, atol=1e-5, rtol=0)


def test_digit_views_are_never_mirrored_and_rotate_little():
    theta = simsiam.crop_transforms(2000, simsiam.DIGITS, torch.Generator().manual_seed(0))
    linear = theta[:, :, :2].double()
    assert (torch.linalg.det(linear) > 0).all()  # orientation kept: no flip
    angle = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert angle.abs().max() <= simsiam.DIGITS.max_rotation + 1e-4
    assert angle.abs().max() > 0.8 * simsiam.DIGITS.max_rotation
    scale = torch.sqrt(torch.linalg.det(linear))  # sqrt of the crop's area fraction
    assert scale.min() >= math.sqrt(simsiam.DIGITS.crop_scale[0]) - 1e-4 and scale.max() <= 1 + 1e-4
    mirrored = torch.linalg.det(simsiam.crop_transforms(200, simsiam.IMAGENET, torch.Generator())[:, :, :2])
    assert (mirrored < 0).any() and (mirrored > 0).any()  # the ImageNet recipe does flip


def test_digit_views_keep_the_left_side_left():
    x = torch.zeros(200, 1, 28, 28)
    x[:, :, 8:20, 4:10] = 1.0  # a bar on the left
    noiseless = simsiam.Augmentation(noise_std=0.0)
    views = simsiam.augment(x, noiseless, torch.Generator().manual_seed(0))
    left, right = views[..., :14].sum(dim=(1, 2, 3)), views[..., 14:].sum(dim=(1, 2, 3))
    assert (left > right).all()


def test_augmentation_validation():
    with pytest.raises(ValueError, match="crop_scale"):
        simsiam.Augmentation(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="grayscale_p"):
        simsiam.Augmentation(grayscale_p=1.5)
    with pytest.raises(ValueError, match="batch of images"):
        simsiam.augment(torch.rand(28, 28), simsiam.DIGITS, torch.Generator())


# ---------------------------------------------------------------------------------------------
# Collapse check


def test_collapse_statistic():
    gen = torch.Generator().manual_seed(0)
    spread = torch.randn(4000, 64, generator=gen)
    assert simsiam.output_std(spread) == pytest.approx(1 / 8, rel=0.02)
    collapsed = torch.rand(500, 1, generator=gen) * torch.randn(1, 64, generator=gen).abs()  # one direction
    assert simsiam.output_std(collapsed) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="samples >= 2"):
        simsiam.output_std(np.ones(5))


# ---------------------------------------------------------------------------------------------
# Backbone and analysed weights


@pytest.mark.parametrize("backbone,width,side,feature_dim", [("resnet10", 4, 28, 32), ("resnet18", 2, 8, 16),
                                                              ("resnet50", 2, 32, 64)])
def test_backbone_shapes(backbone, width, side, feature_dim):
    channels = 3 if backbone == "resnet50" else 1
    model = simsiam.build(backbone, channels, width, dim=12, pred_dim=3).eval()
    assert model.encoder.feature_dim == feature_dim
    x = torch.rand(3, channels, side, side)
    p1, p2, z1, z2 = model(x, x)
    assert p1.shape == z1.shape == (3, 12)


def test_published_resnet50_size():
    model = simsiam.build("resnet50", 3, 64, 2048, 512)
    assert model.encoder.feature_dim == 2048
    norms = sum(m.weight.numel() + m.bias.numel() for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    # convolutions + batch norms + a 1000-class fc = torchvision's ResNet-50, 25,557,032 parameters
    assert simsiam.n_analysed(model) + norms + 2048 * 1000 + 1000 == 25_557_032
    assert {"encoder.layer4.2.conv3.weight", "encoder.fc.6.bias", "predictor.3.weight"} <= set(model.state_dict())


def test_analysed_weights_are_the_backbone_convolutions():
    model = simsiam.build("resnet18", 1, 2, 16, 4)
    analysed = simsiam.analysed_weights(model)
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(analysed) == len(convs) == 1 + 8 * 2 + 3  # stem, two per block, three projection shortcuts
    assert "encoder.layer2.0.downsample.0.weight" in analysed
    assert not any(name.startswith(("encoder.fc", "predictor")) for name in analysed)
    assert all(p.ndim == 4 for p in analysed.values())
    assert simsiam.n_analysed(model) == sum(m.weight.numel() for m in convs)
    with pytest.raises(TypeError, match="SimSiam"):
        simsiam.analysed_weights(nn.Linear(2, 2))


def test_build_is_seeded_and_validates():
    a, b = simsiam.build(seed=3), simsiam.build(seed=3)
    assert torch.equal(a.encoder.conv1.weight, b.encoder.conv1.weight)
    assert not torch.equal(a.encoder.conv1.weight, simsiam.build(seed=4).encoder.conv1.weight)
    with pytest.raises(ValueError, match="unknown SimSiam backbone 'vgg'"):
        simsiam.build("vgg")


# ---------------------------------------------------------------------------------------------
# Pretraining, probe and finetuning (tiny, through the store)


@pytest.fixture(scope="module")
def pretraining(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    params = simsiam.pretrain_params(**SMALL, epochs=2, lr=0.05, batch_size=64, dataset="digits-embedded")
    return params, root, simsiam.pretrain(params, root=root)


def test_pretraining_record(pretraining):
    params, root, result = pretraining
    assert not result.from_store and simsiam.pretrain(params, root=root).from_store
    assert result["epoch_loss"].shape == (2,) and np.all(np.abs(result["epoch_loss"]) <= 1)
    assert 0 < float(result["pool_std"]) <= 1
    for key in ("probe_accuracy", "probe_accuracy_initial", "probe_accuracy_pixels"):
        assert 0.1 < float(result[key]) <= 1.0  # ten classes: chance is 0.1
    assert float(result["probe_accuracy_pixels"]) > 0.8  # 8x8 digits are linearly separable


def test_linear_probe_reads_labels():
    gen = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    informative = np.eye(4)[labels] + 0.1 * gen.standard_normal((200, 4))
    assert simsiam.linear_probe(informative, labels) == 1.0
    assert simsiam.linear_probe(gen.standard_normal((200, 4)), labels) < 0.5


@pytest.mark.parametrize("potential", ["2-norm", "negative_entropy"])
def test_finetuning_run(pretraining, potential):
    params, root, _ = pretraining
    run_params = simsiam.finetune_params(potential, 0, params, lr_grid=(0.01, 0.1), epochs=2, batch_size=16,
                                         n_samples=40, lr_rule="lowest_loss")
    run = simsiam.finetune(run_params, root=root)
    model = simsiam.pretrained_model(params, root)
    names = list(simsiam.analysed_weights(model))
    assert list(run["layers"]) == names
    for name in names:
        np.testing.assert_array_equal(run[f"before/{name}"], simsiam.analysed_weights(model)[name].detach().numpy())
        assert run[f"touched/{name}"].shape == run[f"before/{name}"].shape
    before, after = finetune.weights(run)
    assert not np.allclose(before, after)
    if potential == "negative_entropy":
        assert np.all(np.sign(before) == np.sign(after))
    assert list(run["search_lr"]) == [0.01, 0.1]  # lowest_loss searches the whole grid
    assert float(run["loss_after"]) == run["search_loss"].min()
    assert int(run["n_samples"]) == 40 and int(run["dim"]) == simsiam.n_analysed(model)
    scores = finetune.analyse(run)
    assert set(scores["candidate"]) >= {"2-norm", "negative_entropy", "3-norm"}


def test_smallest_converged_rule(pretraining):
    params, root, _ = pretraining
    run_params = simsiam.finetune_params("2-norm", 1, params, lr_grid=(0.3, 0.001, 0.03), epochs=2, batch_size=16,
                                         n_samples=40, target_gap_closed=0.05,
                                         lr_rule="smallest_converged")
    assert run_params["lr_grid"] == [0.001, 0.03, 0.3]  # searched upwards
    run = simsiam.finetune(run_params, root=root)
    closed = run["search_gap_closed"]
    searched = len(run["search_lr"])
    np.testing.assert_array_equal(run["search_lr"], [0.001, 0.03, 0.3][:searched])
    assert np.all(closed[:-1] < 0.05)  # every rate before the last one missed the target
    assert bool(run["converged"]) == (closed[-1] >= 0.05)
    if bool(run["converged"]):
        assert float(run["lr"]) == run["search_lr"][-1]
    assert float(run["gap_closed"]) == pytest.approx(simsiam.gap_closed(float(run["loss_before"]),
                                                                        float(run["loss_after"])))


def test_evaluation_ignores_running_statistics(pretraining):
    model = simsiam.pretrained_model(pretraining[0], pretraining[1])
    views = simsiam.evaluation_views(torch.rand(20, 1, 8, 8), simsiam.DIGITS, seed=0)
    first = simsiam.evaluate(model, views, batch_size=8)
    norm = model.encoder.bn1
    kept = norm.running_mean.clone()
    assert torch.equal(norm.running_mean, kept) and simsiam.evaluate(model, views, batch_size=8) == first
    with torch.no_grad():
        norm.running_mean.add_(5.0)  # eval-mode outputs would change; batch statistics do not
    second = simsiam.evaluate(model, views, batch_size=8)
    assert second[0] == pytest.approx(first[0]) and second[1] == pytest.approx(first[1])
    assert model.training and norm.momentum == 0.1


def test_smallest_near_best_rule(pretraining):
    params, root, _ = pretraining
    run = simsiam.finetune(simsiam.finetune_params("3-norm", 2, params, lr_grid=(0.001, 0.03, 0.3), epochs=2,
                                                   batch_size=16, n_samples=40, lr_rule="smallest_near_best",
                                                   target_gap_closed=0.5), root=root)
    closed = run["search_gap_closed"]
    assert len(closed) == 3  # the whole grid is run
    chosen = int(np.flatnonzero(run["search_lr"] == run["lr"])[0])
    assert closed.max() > 0 and bool(run["converged"])
    assert closed[chosen] >= 0.5 * closed.max() and np.all(closed[:chosen] < 0.5 * closed.max())


def test_gap_closed():
    assert simsiam.gap_closed(-0.5, -0.75) == pytest.approx(0.5)
    assert simsiam.gap_closed(-0.5, -0.25) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="floor"):
        simsiam.gap_closed(-1.0, -1.0)


def test_parameter_validation(pretraining):
    params = pretraining[0]
    with pytest.raises(ValueError, match="unknown lr_rule"):
        simsiam.finetune_params("2-norm", 0, params, lr_rule="fastest")
    with pytest.raises(ValueError, match="unknown potential|potential"):
        simsiam.finetune_params("entropy", 0, params)
    with pytest.raises(ValueError, match="target_gap_closed"):
        simsiam.finetune_params("2-norm", 0, params, target_gap_closed=0.0)
    with pytest.raises(ValueError, match="embedded dataset"):
        simsiam.pretrain_params(dataset="imagenet")
    with pytest.raises(ValueError, match="imagenet_params"):
        simsiam.pretrain_params(backbone="resnet50")


# ---------------------------------------------------------------------------------------------
# The paper's path: a SimSiam checkpoint and an ImageNet folder


def test_imagenet_path_on_a_tiny_folder(tmp_path):
    folder = tmp_path / "val"
    gen = np.random.default_rng(0)
    for label in ("n01", "n02"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            pixels = gen.integers(0, 256, size=(48, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{i}.png")
    model = simsiam.build("resnet50", 3, width=2, dim=8, pred_dim=4, seed=1)
    weights = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 100, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, weights)

    missing = simsiam.imagenet_params(str(weights), None, width=2, dim=8, pred_dim=4)
    available, reason = simsiam.availability(missing)
    assert not available and "ImageNet validation folder" in reason
    params = simsiam.imagenet_params(str(weights), str(folder), width=2, dim=8, pred_dim=4)
    assert simsiam.availability(params)[0]
    loaded = simsiam.pretrained_model(params)
    assert torch.equal(loaded.encoder.layer3[0].conv2.weight, model.encoder.layer3[0].conv2.weight)
    run_params = simsiam.finetune_params("3-norm", 0, params, lr_grid=(0.01,), epochs=1, batch_size=3, n_samples=6)
    run = simsiam.finetune(run_params, root=tmp_path / "store")
    assert int(run["n_samples"]) == 6 and len(run["layers"]) == len(simsiam.analysed_weights(model))
    before, after = finetune.weights(run)
    assert before.size == simsiam.n_analysed(model) and not np.allclose(before, after)
    wrong = tmp_path / "wrong.pth"
    torch.save(simsiam.build("resnet50", 3, width=4, dim=8, pred_dim=4).state_dict(), wrong)
    with pytest.raises(ValueError, match="do not fit SimSiam"):
        simsiam.pretrained_model(simsiam.imagenet_params(str(wrong), str(folder), width=2, dim=8, pred_dim=4))


def test_rules_share_the_runs_of_the_grid(pretraining):
    params, root, _ = pretraining
    common = dict(lr_grid=(0.001, 0.1), epochs=1, batch_size=16, n_samples=30)
    first = simsiam.finetune(simsiam.finetune_params("2-norm", 5, params, lr_rule="lowest_loss", **common), root=root)
    second_params = simsiam.finetune_params("2-norm", 5, params, lr_rule="smallest_near_best", **common)
    shared = {k: second_params[k] for k in simsiam.RATE_KEYS}
    assert all(simsiam.finetune_at_rate({**shared, "lr": lr}, root=root).from_store for lr in (0.001, 0.1))
    second = simsiam.finetune(second_params, root=root)
    np.testing.assert_array_equal(first["search_loss"], second["search_loss"])
    chosen = float(second["lr"])
    index = int(np.flatnonzero(second["search_lr"] == chosen)[0])
    at_rate = simsiam.finetune_at_rate({**shared, "lr": chosen}, root=root)
    name = str(second["layers"][0])
    np.testing.assert_array_equal(second[f"after/{name}"], at_rate[f"after/{name}"])
    assert float(second["loss_after"]) == second["search_loss"][index]
    assert 0 <= float(second["fraction_crossed_zero"]) <= 1 and float(second["relative_change"]) > 0
