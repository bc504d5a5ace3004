"""Networks for the finetuning protocol, a registry by name, and the rule that picks analysed weights.

Our own small models (MLP, a residual convolutional network, the paper's tanh RNN reading an
image row by row), the paper's architectures scaled for digits (ResNet-18 and ShuffleNetV2 x0.5,
:mod:`~synaptic_geometry.experiments.imagenet_nets`; CORnet-RT and CORnet-S,
:mod:`~synaptic_geometry.experiments.cornet`) are built through one function, :func:`build`;
the ImageNet architectures (pretrained weights from a file) through :func:`build_torchvision`,
with torchvision when it imports and otherwise, for ResNet-18 and ShuffleNetV2 x0.5, with the
implementations written here (the same state-dict names). The weights analysed after finetuning are chosen by :func:`analysed_weights` with
one rule for every architecture: the ``weight`` of every ``nn.Conv1d/2d/3d`` and ``nn.Linear``
module, except the readout, defined as the last ``nn.Linear`` in registration order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synaptic_geometry.experiments import cornet, imagenet_nets
from synaptic_geometry.experiments.checkpoints import load_checkpoint, load_state_dict_file
from synaptic_geometry.experiments.data import _torchvision

ANALYSED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU`` per hidden width, then a linear readout."""

    def __init__(self, in_shape: tuple[int, ...], n_classes: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(np.prod(in_shape))
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.readout = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity shortcut (ResNet's basic block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(x + self.norm2(self.conv2(out)))


class ConvNet(nn.Module):
    """A small residual network: stem conv, blocks, a strided conv doubling the width, blocks, pool, readout."""

    def __init__(self, in_shape: tuple[int, ...], n_classes: int, width: int = 16, blocks: int = 1):
        super().__init__()
        channels = in_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            *[ResidualBlock(width) for _ in range(blocks)],
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            *[ResidualBlock(2 * width) for _ in range(blocks)],
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.readout = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


class TanhRNN(nn.Module):
    """The paper's recurrent model: h_t = tanh(W_in x_t + W_rec h_{t-1} + b), readout of h at the last step.

    An image (batch, 1, rows, columns) is read one row per time step. ``W_in`` and ``W_rec`` are
    ``nn.Linear`` modules so that the one analysed-weight rule covers them (the paper analysed
    ``W_rec`` alone; the per-layer analysis shows it separately).
    """

    def __init__(self, in_shape: tuple[int, ...], n_classes: int, hidden: int = 100):
        super().__init__()
        if len(in_shape) != 3 or in_shape[0] != 1:
            raise ValueError(f"TanhRNN reads one-channel images row by row; got image shape {in_shape}")
        self.input = nn.Linear(in_shape[2], hidden)
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        self.readout = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x[:, 0]  # (batch, steps, features)
        drive = self.input(rows)  # all input projections at once
        h = torch.zeros(x.shape[0], self.recurrent.in_features, dtype=x.dtype, device=x.device)
        for t in range(rows.shape[1]):
            h = torch.tanh(drive[:, t] + self.recurrent(h))
        return self.readout(h)


Builder = Callable[[tuple[int, ...], int], nn.Module]
ARCHITECTURES: dict[str, Builder] = {
    "mlp": lambda s, k: MLP(s, k, (256, 256)),
    "mlp-tiny": lambda s, k: MLP(s, k, (32,)),
    # the width sweep of the deep-network chapter: two hidden layers of h units, D = 784 h + h^2 on MNIST
    **{f"mlp-{h}": (lambda s, k, h=h: MLP(s, k, (h, h))) for h in (32, 128, 512, 640)},
    "convnet": lambda s, k: ConvNet(s, k, width=8, blocks=1),
    "convnet-tiny": lambda s, k: ConvNet(s, k, width=4, blocks=1),
    "rnn-100": lambda s, k: TanhRNN(s, k, 100),
    "rnn-1000": lambda s, k: TanhRNN(s, k, 1000),
    "rnn-tiny": lambda s, k: TanhRNN(s, k, 16),
    **imagenet_nets.DIGIT_ARCHITECTURES,
    **cornet.ARCHITECTURES,
}
TORCHVISION_ARCHITECTURES = (
    "resnet18", "resnet34", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
)
# The published CORnets at ImageNet size; their weights come from the authors' checkpoints.
CORNET_IMAGENET = {"cornet_rt": cornet.cornet_rt, "cornet_s": cornet.cornet_s}
IMAGENET_ARCHITECTURES = TORCHVISION_ARCHITECTURES + tuple(CORNET_IMAGENET)


def known_architectures() -> list[str]:
    return list(ARCHITECTURES) + list(IMAGENET_ARCHITECTURES)


def is_torchvision(name: str) -> bool:
    """Whether ``name`` is an ImageNet network whose pretrained weights come from a file (torchvision's
    architectures and the published CORnets), rather than one pretrained here."""
    return name in IMAGENET_ARCHITECTURES


def build(name: str, in_shape: tuple[int, ...] = (1, 28, 28), n_classes: int = 10, seed: int = 0) -> nn.Module:
    """A freshly initialised network by name (initialisation seeded with ``seed``)."""
    if name in TORCHVISION_ARCHITECTURES:
        return build_torchvision(name)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(known_architectures())}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ARCHITECTURES[name](tuple(in_shape), n_classes)


def build_torchvision(name: str, weights_path: str | Path | None = None, download: bool = False) -> nn.Module:
    """An ImageNet network with weights from ``weights_path`` (a state dict; for the CORnets, the authors'
    checkpoint) or, if ``download``, torchvision's hub (torchvision architectures only)."""
    if name not in IMAGENET_ARCHITECTURES:
        raise ValueError(f"unknown torchvision architecture {name!r}; known: {', '.join(IMAGENET_ARCHITECTURES)}")
    if name in CORNET_IMAGENET:
        if weights_path is None:
            raise ValueError(f"{name} needs the authors' ImageNet checkpoint: pass weights_path=<checkpoint file>")
        return load_checkpoint(CORNET_IMAGENET[name](), weights_path)

    if weights_path is None and not download:
        raise ValueError(f"{name} needs pretrained ImageNet weights: pass weights_path=<state dict file> "
                         "or download=True (needs a network)")
    try:
        tv_models = _torchvision().models
    except ImportError:
        if name not in imagenet_nets.OWN_IMAGENET or download:
            raise
        tv_models = None
    if weights_path is not None:
        model = tv_models.get_model(name, weights=None) if tv_models else imagenet_nets.OWN_IMAGENET[name]()
        try:
            model.load_state_dict(load_state_dict_file(weights_path))
        except RuntimeError as error:
            raise ValueError(f"weights in {weights_path} do not fit {name}: {error}") from error
        return model
    return tv_models.get_model(name, weights="DEFAULT")


def imagenet_builder(name: str) -> tuple[bool, str]:
    """Whether the ImageNet architecture ``name`` can be built here, and by what (or why not)."""
    if name in CORNET_IMAGENET:
        return True, "written here from the CORnet papers"
    try:
        _torchvision()
        return True, "torchvision"
    except ImportError as error:
        if name in imagenet_nets.OWN_IMAGENET:
            return True, "written here (torchvision does not import)"
        return False, str(error).split(";")[0]


def readout_name(model: nn.Module) -> str:
    """Name of the readout: the last ``nn.Linear`` in registration order."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear readout")
    return linears[-1]


def analysed_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The analysed weights: ``weight`` of every conv and linear module except the readout, by parameter name."""
    readout = readout_name(model)
    return {f"{name}.weight": module.weight for name, module in model.named_modules()
            if isinstance(module, ANALYSED_TYPES) and name != readout}


def n_analysed(model: nn.Module) -> int:
    """D, the number of analysed weights."""
    return sum(p.numel() for p in analysed_weights(model).values())
