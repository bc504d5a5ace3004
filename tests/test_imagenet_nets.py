"""ResNet-18 and ShuffleNetV2 written here: shapes, sizes, names (against torchvision when it imports),
analysed weights, input padding, and the ImageNet path (weights file + image folder) end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from synaptic_geometry.experiments import finetune as ft
from synaptic_geometry.experiments import imagenet_nets as inet
from synaptic_geometry.experiments import models

DIGIT_NAMES = ["resnet18-tiny", "shufflenet-tiny", "resnet18-digits", "shufflenet-x0.5-digits",
               "cornet-rt-tiny", "cornet-s-tiny", "cornet-rt", "cornet-s"]


def _torchvision_models():
    try:
        import torchvision
    except Exception as error:  # the index's wheel fails beside the CPU torch: RuntimeError, not ImportError
        pytest.skip(f"torchvision does not import here ({type(error).__name__}: {error}); "
                    "key and shape compatibility is checked where it does")
    return torchvision.models


@pytest.mark.parametrize("name", DIGIT_NAMES)
def test_registered_digit_networks_classify_digits(name):
    net = models.build(name, (1, 28, 28), 10, seed=0)
    out = net(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,params", [("resnet18", 11_689_512), ("shufflenet_v2_x0_5", 1_366_792)])
def test_published_sizes(name, params):
    """Parameter counts of torchvision's ImageNet networks (its documentation's numbers)."""
    net = inet.OWN_IMAGENET[name]()
    assert sum(p.numel() for p in net.parameters()) == params
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


@pytest.mark.parametrize("name", ["resnet18", "shufflenet_v2_x0_5"])
def test_state_dict_matches_torchvision(name):
    tv = _torchvision_models().get_model(name, weights=None).state_dict()
    own = inet.OWN_IMAGENET[name]().state_dict()
    assert list(own) == list(tv) or set(own) == set(tv)
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in tv.items()}


@pytest.mark.parametrize("name", ["resnet18", "shufflenet_v2_x0_5"])
def test_torchvision_weights_give_the_same_outputs(name, tmp_path):
    tv = _torchvision_models().get_model(name, weights=None).eval()
    torch.save(tv.state_dict(), tmp_path / "w.pt")
    own = inet.OWN_IMAGENET[name]().eval()
    own.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(own(x), tv(x), atol=1e-5)


def test_analysed_weights_of_resnet18():
    net = models.build("resnet18-digits")
    names = list(models.analysed_weights(net))
    assert names[0] == "conv1.weight" and "fc.weight" not in names
    assert len(names) == 1 + 16 + 3  # stem, two convolutions in each of 8 blocks, 3 projection shortcuts
    assert {n for n in names if "downsample" in n} == {f"layer{i}.0.downsample.0.weight" for i in (2, 3, 4)}
    assert models.n_analysed(net) == 49 * 8 + 2724 * 8 ** 2  # 49 w (stem) + 2724 w^2 (blocks) at width w = 8


def test_analysed_weights_of_shufflenet():
    net = models.build("shufflenet-x0.5-digits")
    weights = models.analysed_weights(net)
    assert "fc.weight" not in weights and "conv5.0.weight" in weights
    # stem + conv5 + 5 convolutions per stride-2 unit (3 stages) + 3 per stride-1 unit (3 + 7 + 3)
    assert len(weights) == 2 + 3 * 5 + 13 * 3
    depthwise = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(f"{n}.weight" in weights for n in depthwise)
    assert weights["stage2.0.branch1.0.weight"].shape == (24, 1, 3, 3)  # depthwise on the 24 input channels


def test_padding_and_map_sizes():
    x = torch.rand(2, 1, 28, 28)
    padded = inet.pad_to(x, inet.DIGIT_SIDE)
    assert padded.shape == (2, 1, 36, 36)
    assert torch.equal(padded[:, :, 4:32, 4:32], x)
    border = torch.ones(36, 36, dtype=torch.bool)
    border[4:32, 4:32] = False
    assert (padded[:, :, border] == 0).all()
    assert inet.pad_to(x, None) is x and inet.pad_to(x, 20) is x
    for name, last in (("resnet18-tiny", "layer4"), ("shufflenet-tiny", "stage4")):
        net = models.build(name)
        shapes = []
        getattr(net, last).register_forward_hook(lambda m, i, o: shapes.append(o.shape[-2:]))
        net(x)
        assert tuple(shapes[0]) == (2, 2), f"{name}: last stage maps are {tuple(shapes[0])}, not 2x2"


def test_every_kernel_tap_of_the_last_stage_gets_a_gradient():
    net = models.build("resnet18-tiny", seed=1)
    net(torch.rand(8, 1, 28, 28)).sum().backward()
    grad = net.layer4[1].conv2.weight.grad
    assert (grad.abs().sum(dim=(0, 1)) > 0).all()  # all 9 taps


def test_channel_shuffle_interleaves_two_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert inet.channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    with pytest.raises(ValueError, match="cannot shuffle"):
        inet.channel_shuffle(torch.zeros(1, 5, 1, 1), 2)


def test_shufflenet_unit_keeps_the_passed_half():
    unit = inet.ShuffleUnit(8, 8, 1).eval()
    x = torch.randn(1, 8, 4, 4)
    out = unit(x)
    assert torch.equal(out[:, 0::2], x[:, :4])  # the untouched half lands on the even channels


def test_invalid_configurations():
    with pytest.raises(ValueError, match="stride 1 or 2"):
        inet.ShuffleUnit(8, 8, 3)
    with pytest.raises(ValueError, match="keeps its width"):
        inet.ShuffleUnit(8, 16, 1)
    with pytest.raises(ValueError, match="even width"):
        inet.ShuffleUnit(8, 7, 2)
    with pytest.raises(ValueError, match="three positive stage repeats"):
        inet.ShuffleNetV2((4, 8))
    with pytest.raises(ValueError, match="five positive widths"):
        inet.ShuffleNetV2(widths=(24, 48, 96, 192))


def test_build_torchvision_errors(tmp_path):
    with pytest.raises(ValueError, match="needs pretrained ImageNet weights"):
        models.build_torchvision("resnet18")
    torch.save(inet.resnet18().state_dict(), tmp_path / "r.pt")
    with pytest.raises(ValueError, match="do not fit"):
        models.build_torchvision("shufflenet_v2_x0_5", weights_path=tmp_path / "r.pt")
    ok, how = models.imagenet_builder("resnet18")
    assert ok and how


def _write_folder(root, classes=2, per_class=3, side=48, seed=0):
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(side, side + 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")


def test_imagenet_path_end_to_end(tmp_path):
    """Weights file + image folder -> one finetuning run through the store -> analysis."""
    folder, store = tmp_path / "imagenet", tmp_path / "store"
    _write_folder(folder)
    torch.manual_seed(0)
    state = inet.shufflenet_v2_x0_5().state_dict()
    torch.save(state, tmp_path / "shufflenet_v2_x0_5.pt")

    pretraining = ft.imagenet_params("shufflenet_v2_x0_5", str(tmp_path / "shufflenet_v2_x0_5.pt"), str(folder))
    assert ft.availability(pretraining)[0]
    assert not ft.availability({**pretraining, "imagenet_root": str(tmp_path / "none")})[0]
    params = ft.run_params("shufflenet_v2_x0_5", "2-norm", 0, pretraining, lr_grid=[0.05], epochs=1,
                           max_extensions=0, batch_size=4, n_samples=4)
    arrays = ft.finetune(params, root=store)
    assert int(arrays["n_samples"]) == 4 and int(arrays["dim"]) == 333_840
    name = "stage2.0.branch1.0.weight"
    assert np.array_equal(arrays[f"before/{name}"], state[name].numpy())  # started from the file's weights
    moved = [n for n in arrays["layers"] if not np.array_equal(arrays[f"before/{n}"], arrays[f"after/{n}"])]
    assert moved, "finetuning changed no analysed weight"
    scores = ft.analyse(arrays)
    assert set(scores["candidate"]) == set(ft.CANDIDATE_POTENTIALS)
    assert ft.finetune(params, root=store).from_store  # the second call loads


def test_published_cornet_from_the_authors_checkpoint(tmp_path):
    """Full-size CORnet-RT on the ImageNet path: a checkpoint in the authors' layout loads by name."""
    torch.manual_seed(0)
    state = models.CORNET_IMAGENET["cornet_rt"]().state_dict()
    torch.save({"epoch": torch.tensor(20), "state_dict": {f"module.{k}": v for k, v in state.items()}},
               tmp_path / "cornet_rt.pth")
    net = models.build_torchvision("cornet_rt", weights_path=tmp_path / "cornet_rt.pth")
    assert torch.equal(net.V1.conv_input.weight, state["V1.conv_input.weight"])
    assert "decoder.linear.weight" not in models.analysed_weights(net)
    with pytest.raises(ValueError, match="authors' ImageNet checkpoint"):
        models.build_torchvision("cornet_s")
    pretraining = ft.imagenet_params("cornet_rt", str(tmp_path / "cornet_rt.pth"), str(tmp_path / "no-folder"))
    ok, why = ft.availability(pretraining)
    assert not ok and "ImageNet validation folder" in why
