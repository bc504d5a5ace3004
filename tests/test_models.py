"""Tests of the model registry, output shapes and the analysed-weight rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from synaptic_geometry.experiments import models

OWN = ["mlp-tiny", "convnet-tiny", "rnn-tiny"]


@pytest.mark.parametrize("name", OWN)
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
def test_output_shape(name, shape):
    net = models.build(name, shape, 10)
    assert net(torch.randn(5, *shape)).shape == (5, 10)


@pytest.mark.parametrize("name", OWN + ["mlp", "convnet", "rnn-100"])
def test_analysed_weights_exclude_readout_only(name):
    net = models.build(name)
    analysed = models.analysed_weights(net)
    readout = net.readout.weight
    assert all(p is not readout for p in analysed.values())
    assert models.readout_name(net) == "readout"
    every = [m.weight for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(analysed) == len(every) - 1
    assert models.n_analysed(net) == sum(p.numel() for p in every) - readout.numel()
    assert not any(n.endswith("bias") for n in analysed)


def test_rnn_dimensions_and_weights():
    net = models.build("rnn-100")
    assert models.n_analysed(net) == 100 * 100 + 28 * 100
    assert set(models.analysed_weights(net)) == {"input.weight", "recurrent.weight"}
    with pytest.raises(ValueError, match="one-channel"):
        models.build("rnn-tiny", (3, 8, 8))


def test_build_is_seeded():
    a, b, c = models.build("mlp-tiny", seed=1), models.build("mlp-tiny", seed=1), models.build("mlp-tiny", seed=2)
    assert torch.equal(a.readout.weight, b.readout.weight) and not torch.equal(a.readout.weight, c.readout.weight)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'; known: mlp"):
        models.build("vgg")


def test_torchvision_architecture_errors(tmp_path):
    try:
        import torchvision  # noqa: F401
        has_torchvision = True
    except Exception:
        has_torchvision = False
    if not has_torchvision:
        with pytest.raises(ImportError, match="torchvision is not importable"):
            models.build_torchvision("resnet34", weights_path=tmp_path / "w.pt")  # not written here
    with pytest.raises(ValueError, match="unknown torchvision architecture"):
        models.build_torchvision("resnet50")


def test_state_dict_files(tmp_path):
    state = {"a": torch.arange(3.0)}
    torch.save(state, tmp_path / "w.pt")
    assert torch.equal(models.load_state_dict_file(tmp_path / "w.pt")["a"], state["a"])
    np.savez(tmp_path / "w.npz", a=np.arange(3.0))
    assert models.load_state_dict_file(tmp_path / "w.npz")["a"].tolist() == [0.0, 1.0, 2.0]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        models.load_state_dict_file(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_state_dict_file(tmp_path / "none.pt")
