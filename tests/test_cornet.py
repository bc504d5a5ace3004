"""Tests of CORnet-RT and CORnet-S: shapes, the recurrence, published names, analysed weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from synaptic_geometry.experiments import cornet, models
from synaptic_geometry.experiments.checkpoints import load_checkpoint

DIGITS = list(cornet.ARCHITECTURES)


def seeded(name: str, shape=(1, 28, 28), seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cornet.ARCHITECTURES[name](shape, 10).eval()


@pytest.mark.parametrize("name", DIGITS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
def test_digit_output_shape(name, shape):
    assert seeded(name, shape)(torch.rand(3, *shape)).shape == (3, 10)


@pytest.mark.parametrize("build", [cornet.cornet_rt, cornet.cornet_s])
def test_published_constructors(build):
    net = build().eval()
    assert net.decoder.linear.in_features == 512 and net.decoder.linear.out_features == 1000
    with torch.no_grad():  # 64x64 instead of 224x224 keeps the test fast; the layout is the same
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 1000)


def test_published_widths_and_steps():
    rt, s = cornet.cornet_rt(), cornet.cornet_s()
    assert [a.conv1.out_channels for a in rt.areas()] == [64, 128, 256, 512]
    assert (rt.V1.conv_input.kernel_size, rt.V1.conv_input.stride, rt.steps) == ((7, 7), (4, 4), 5)
    assert rt.V1.norm1.num_groups == 32
    assert s.steps == (2, 4, 2)
    assert [s.V1.conv2.out_channels, s.V2.conv3.out_channels, s.V4.conv3.out_channels, s.IT.conv3.out_channels] == \
        [64, 128, 256, 512]
    assert s.V4.conv1.out_channels == 4 * 256  # the four-fold bottleneck
    assert (s.V1.conv1.kernel_size, s.V1.conv1.stride) == ((7, 7), (2, 2))


def test_digit_scaling_is_as_documented():
    rt, s = seeded("cornet-rt"), seeded("cornet-s")
    assert [a.conv1.out_channels for a in rt.areas()] == [8, 16, 32, 64]
    assert rt.V1.conv_input.stride == (2, 2) and rt.V1.norm1.num_groups == 4 and rt.steps == 5
    assert [s.V2.conv3.out_channels, s.V4.conv3.out_channels, s.IT.conv3.out_channels] == [8, 16, 32]
    assert s.V1.conv1.stride == (1, 1) and s.steps == (2, 4, 2)
    x = torch.rand(2, 1, 28, 28)
    assert s.V1(x).shape[-1] == 14  # V1 maps 14 pixels wide, as in CORnet-RT's V1
    assert rt.V1(x, None, (2, 14, 14)).shape[-1] == 14


def test_rt_recurrence_is_applied():
    net = seeded("cornet-rt")
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        out4, out5, out6 = net(x, steps=4), net(x, steps=5), net(x, steps=6)
    assert not torch.allclose(out4, out5) and not torch.allclose(out5, out6)
    assert torch.equal(out5, net(x))  # the model's own five steps


def test_rt_unrolling_is_biological():
    """The image reaches IT at the fourth step: with three steps the output ignores the image."""
    net = seeded("cornet-rt")
    a, b = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(net(a, steps=3), net(b, steps=3))
        assert not torch.allclose(net(a, steps=4), net(b, steps=4))
    with pytest.raises(ValueError, match="at least 4 time steps"):
        cornet.CORnetRT(steps=3)


def test_s_recurrence_is_applied():
    net = seeded("cornet-s")
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        full, fewer = net(x), net(x, steps=(2, 1, 2))
    assert not torch.allclose(full, fewer)
    with pytest.raises(ValueError, match="batch norms for 1..4 steps"):
        net(x, steps=(2, 5, 2))
    # separate batch norms per step, under the published names
    names = {n for n, _ in net.named_modules()}
    assert {f"V4.norm{k}_{t}" for k in (1, 2, 3) for t in range(4)} <= names
    assert "V4.norm1_4" not in names


@pytest.mark.parametrize("name", DIGITS)
def test_analysed_weights_exclude_the_decoder_only(name):
    net = seeded(name)
    analysed = models.analysed_weights(net)
    assert models.readout_name(net) == "decoder.linear"
    assert all(p is not net.decoder.linear.weight for p in analysed.values())
    convs = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(analysed) == convs
    assert models.n_analysed(net) == sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Conv2d))


def test_published_parameter_names():
    keys = set(cornet.cornet_rt().state_dict()) | set(cornet.cornet_s().state_dict())
    expected = {"V1.conv_input.weight", "V1.conv_input.bias", "V1.norm_input.weight", "IT.conv1.weight",
                "V1.conv1.weight", "V1.norm2.running_mean", "V2.skip.weight", "V2.norm_skip.weight",
                "V2.norm3_1.weight", "IT.conv3.weight", "decoder.linear.weight", "decoder.linear.bias"}
    assert expected <= keys


def test_published_checkpoint_loads(tmp_path):
    source, target = seeded("cornet-s-tiny", seed=1), seeded("cornet-s-tiny", seed=2)
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    load_checkpoint(target, path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    with pytest.raises(ValueError, match="do not fit CORnetRT"):
        load_checkpoint(seeded("cornet-rt-tiny"), path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(target, tmp_path / "missing.pth")


def test_invalid_configurations():
    with pytest.raises(ValueError, match="divisible"):
        cornet.CORnetRT(widths=(8, 16, 32, 60), groups=8)
    with pytest.raises(ValueError, match="four positive widths|4 positive widths"):
        cornet.CORnetS(widths=(8, 16, 32))
    with pytest.raises(ValueError, match="three numbers"):
        cornet.CORnetS(steps=(2, 4))


class NotATensor:
    pass


def test_checkpoint_formats(tmp_path):
    source, target = seeded("cornet-rt-tiny", seed=1), seeded("cornet-rt-tiny", seed=2)
    np.savez(tmp_path / "weights.npz", **{k: v.numpy() for k, v in source.state_dict().items()})
    load_checkpoint(target, tmp_path / "weights.npz")
    assert torch.equal(target.IT.conv1.weight, source.IT.conv1.weight)
    torch.save({"state_dict": source.state_dict(), "optimizer": NotATensor()}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="not a plain tensor file"):  # weights_only refuses arbitrary objects
        load_checkpoint(target, tmp_path / "pickled.pth")
