"""ResNets (He et al. 2016): basic-block and bottleneck families, with torchvision's module names.

One implementation serves the SimSiam backbone (:mod:`synaptic_geometry.experiments.simsiam`) and
the supervised ResNet-18 classifier (:mod:`synaptic_geometry.experiments.imagenet_nets`). Module and
parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
``fc``), so a torchvision or SimSiam state dict loads as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; identity shortcut, or a strided 1x1 projection."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _shortcut(in_channels, width, stride)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand x4, batch norms; shortcut as in :class:`BasicBlock`."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample = _shortcut(in_channels, width * 4, stride)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(out)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
STEMS = ("imagenet", "small")


class ResNet(nn.Module):
    """A ResNet: stem, four stages of blocks (widths w, 2w, 4w, 8w; strides 1, 2, 2, 2), pool, ``fc``.

    ``stem="imagenet"``: 7x7 convolution with stride 2 and a 3x3 max pool (for 224x224 images);
    ``stem="small"``: one 3x3 convolution with stride 1 and no pool (the variant SimSiam used for
    32x32 CIFAR images). ``fc`` is the identity here; SimSiam puts its projector there.
    ``zero_init_residual`` starts the last batch norm of every block at zero (as SimSiam does).
    """

    def __init__(self, block: str = "basic", layers: Sequence[int] = (2, 2, 2, 2), width: int = 64,
                 in_channels: int = 3, stem: str = "imagenet", zero_init_residual: bool = True):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; known: {', '.join(BLOCKS)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; known: {', '.join(STEMS)}")
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1 or int(width) < 1:
            raise ValueError(f"a ResNet needs four positive block counts and a positive width; got {layers}, {width}")
        kind = BLOCKS[block]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        channels = width
        for stage, (n_blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2)), start=1):
            stage_width = width * 2 ** (stage - 1)
            blocks = []
            for index in range(n_blocks):
                blocks.append(kind(channels, stage_width, stride if index == 0 else 1))
                channels = stage_width * kind.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.feature_dim = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_norm().weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features (before ``fc``)."""
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
