"""The paper's ImageNet classifiers, written here: ResNet-18 and ShuffleNetV2, with torchvision's names.

The paper finetuned torchvision's ImageNet networks. torchvision is pinned by the project, but
its wheel on the package index is built against a CUDA torch and does not import beside the CPU
torch used here, so the two architectures the book runs are written from their papers, with
torchvision's module and parameter names (a torchvision ImageNet state dict loads into them as
is, with ``torch.load(weights_only=True)``; ``tests/test_imagenet_nets.py`` compares keys and
shapes with torchvision whenever torchvision imports).

ResNet-18 (He et al. 2016): the 7x7 stride-2 stem and 3x3 max pool, four stages of two basic
blocks (3x3, 3x3 with an identity shortcut, or a strided 1x1 projection where the shape changes)
of widths 64, 128, 256, 512 with strides 1, 2, 2, 2, global average pool, ``fc``. The blocks are
:mod:`synaptic_geometry.experiments.resnet`'s, shared with the SimSiam backbone.

ShuffleNetV2 (Ma et al. 2018): a 3x3 stride-2 convolution and a 3x3 max pool, three stages of
units, a 1x1 convolution to 1024 channels, global average pool, ``fc``. A unit with stride 1
splits its channels in two halves, passes one through and sends the other through a 1x1
convolution, a 3x3 depthwise convolution and a 1x1 convolution (batch norm after each, ReLU
after the two 1x1 ones); the halves are concatenated and the channels shuffled (two groups
interleaved). The first unit of a stage has stride 2 and no split: both branches see the whole
input, the left one a 3x3 depthwise (stride 2) and a 1x1 convolution, and the output doubles the
width. Stage repeats 4, 8, 4; the x0.5 network has stage widths 48, 96, 192 after a 24-channel stem.

Digits (:data:`DIGIT_ARCHITECTURES`): one input channel, ten classes, and the 28x28 digits padded
with black to 36x36, the smallest size at which the last stage's maps are 2x2 (at 28 or 32 they
are 1x1, and then only the centre tap of each 3x3 kernel of the last stage ever gets a gradient).
The maps are then 18, 9, 9, 5, 3, 2 pixels wide after the stem, the pool and the four stages of
ResNet-18 (published at 224: 112, 56, 56, 28, 14, 7). ResNet-18 is narrowed to widths 8, 16, 32,
64 (published / 8, as CORnet-RT here), so that ``N = floor(sqrt(D))`` fits in the finetuning pool;
ShuffleNetV2 x0.5 keeps its published widths. The ``-tiny`` variants (tests) are narrower still.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from synaptic_geometry.experiments.resnet import ResNet

DIGIT_SIDE = 36  # 28x28 digits padded to this: the last stage's maps are 2x2


def pad_to(x: torch.Tensor, side: int | None) -> torch.Tensor:
    """Zero-pad images (n, c, h, w) symmetrically to ``side`` x ``side`` (no-op for None or larger images)."""
    if side is None:
        return x
    height, width = x.shape[-2:]
    dh, dw = max(0, side - height), max(0, side - width)
    if not dh and not dw:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


# ---------------------------------------------------------------------------------------------
# ResNet-18


class ResNetClassifier(ResNet):
    """A torchvision-layout ResNet classifier (ImageNet stem, ``fc`` readout), with optional input padding."""

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), width: int = 64, in_channels: int = 3,
                 n_classes: int = 1000, pad_side: int | None = None):
        super().__init__("basic", layers, width, in_channels, stem="imagenet", zero_init_residual=False)
        self.fc = nn.Linear(self.feature_dim, n_classes)
        self.pad_side = pad_side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(pad_to(x, self.pad_side)))


def resnet18(n_classes: int = 1000, in_channels: int = 3, width: int = 64, pad_side: int | None = None) -> ResNetClassifier:
    """ResNet-18 (published: width 64, three channels, 1000 classes, 224x224 inputs)."""
    return ResNetClassifier((2, 2, 2, 2), width, in_channels, n_classes, pad_side)


# ---------------------------------------------------------------------------------------------
# ShuffleNetV2


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal groups of channels: (g0c0, g0c1, ..., g1c0, ...) -> (g0c0, g1c0, g0c1, ...)."""
    n, channels, height, width = x.shape
    if channels % groups:
        raise ValueError(f"cannot shuffle {channels} channels in {groups} groups")
    return x.view(n, groups, channels // groups, height, width).transpose(1, 2).reshape(n, channels, height, width)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit (names as torchvision's ``InvertedResidual``: ``branch1``, ``branch2``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"a ShuffleNetV2 unit has stride 1 or 2; got {stride}")
        if out_channels % 2:
            raise ValueError(f"a ShuffleNetV2 unit needs an even width; got {out_channels}")
        half = out_channels // 2
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"a stride-1 unit keeps its width; got {in_channels} -> {out_channels}")
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(_depthwise(in_channels, 2), nn.BatchNorm2d(in_channels),
                                         _pointwise(in_channels, half), nn.BatchNorm2d(half), nn.ReLU())
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            _pointwise(in_channels if stride == 2 else half, half), nn.BatchNorm2d(half), nn.ReLU(),
            _depthwise(half, stride), nn.BatchNorm2d(half),
            _pointwise(half, half), nn.BatchNorm2d(half), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
            out = torch.cat((left, self.branch2(right)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 with torchvision's names (``conv1``, ``stage2``-``stage4``, ``conv5``, ``fc``)."""

    def __init__(self, repeats: Sequence[int] = (4, 8, 4), widths: Sequence[int] = (24, 48, 96, 192, 1024),
                 in_channels: int = 3, n_classes: int = 1000, pad_side: int | None = None):
        super().__init__()
        repeats, widths = tuple(int(r) for r in repeats), tuple(int(w) for w in widths)
        if len(repeats) != 3 or min(repeats) < 1:
            raise ValueError(f"ShuffleNetV2 needs three positive stage repeats; got {repeats}")
        if len(widths) != 5 or min(widths) < 1:
            raise ValueError(f"ShuffleNetV2 needs five positive widths (stem, three stages, last conv); got {widths}")
        self.pad_side = pad_side
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = widths[0]
        for stage, (n_units, width) in enumerate(zip(repeats, widths[1:4]), start=2):
            units = [ShuffleUnit(channels, width, 2)] + [ShuffleUnit(width, width, 1) for _ in range(n_units - 1)]
            setattr(self, f"stage{stage}", nn.Sequential(*units))
            channels = width
        self.conv5 = nn.Sequential(_pointwise(channels, widths[4]), nn.BatchNorm2d(widths[4]), nn.ReLU())
        self.fc = nn.Linear(widths[4], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(pad_to(x, self.pad_side)))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean(dim=(2, 3)))


SHUFFLENET_WIDTHS = {"x0.5": (24, 48, 96, 192, 1024), "x1.0": (24, 116, 232, 464, 1024)}


def shufflenet_v2_x0_5(n_classes: int = 1000, in_channels: int = 3, pad_side: int | None = None) -> ShuffleNetV2:
    """ShuffleNetV2 x0.5 (published: three channels, 1000 classes, 224x224 inputs)."""
    return ShuffleNetV2((4, 8, 4), SHUFFLENET_WIDTHS["x0.5"], in_channels, n_classes, pad_side)


# ImageNet networks written here, by torchvision's names (same constructor signature: classes, channels).
OWN_IMAGENET: dict[str, Callable[..., nn.Module]] = {"resnet18": resnet18, "shufflenet_v2_x0_5": shufflenet_v2_x0_5}

RESNET18_DIGIT_WIDTH = 8  # published 64 / 8
DIGIT_ARCHITECTURES: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "resnet18-digits": lambda s, k: resnet18(k, s[0], RESNET18_DIGIT_WIDTH, DIGIT_SIDE),
    "shufflenet-x0.5-digits": lambda s, k: shufflenet_v2_x0_5(k, s[0], DIGIT_SIDE),
    "resnet18-tiny": lambda s, k: resnet18(k, s[0], 2, DIGIT_SIDE),
    "shufflenet-tiny": lambda s, k: ShuffleNetV2((1, 2, 1), (4, 8, 16, 32, 64), s[0], k, DIGIT_SIDE),
}
