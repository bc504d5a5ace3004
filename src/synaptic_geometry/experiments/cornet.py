"""CORnet-RT and CORnet-S: recurrent networks of four visual areas, written from their descriptions.

Both networks map the ventral stream's areas V1, V2, V4 and IT onto four blocks, followed by a
decoder (global average pool and one linear layer, the readout)
(Kubilius et al. 2018, bioRxiv 408385; Kubilius et al. 2019, NeurIPS).

CORnet-RT (the 2018 preprint's "CORnet-R"; the authors later renamed the biologically unrolled
model "RT"). Every area has an *input* convolution (with the area's stride) followed by group
normalisation and a ReLU, and a *recurrent* 3x3 convolution, group normalisation and a ReLU
applied to the sum of that input and the area's state; the result is both the new state and the
area's output. Time is unrolled biologically: at step ``t`` V1 reads the image, every higher area
reads the output of the area below *at step t - 1*, and the decoder reads IT at the last step.
At ``t = 0`` the areas above V1 have no input yet (a zero drive). The image therefore reaches IT
at the fourth step, so at least four steps are needed; the published model uses five. Published
widths 64, 128, 256, 512; V1's input convolution is 7x7 with stride 4, the others 3x3 with
stride 2; group normalisation with 32 groups.

CORnet-S. V1 is not recurrent: a 7x7 convolution with stride 2, batch norm, ReLU, a 3x3 max pool
with stride 2, a 3x3 convolution, batch norm, ReLU. V2, V4 and IT are recurrent bottleneck
blocks run for 2, 4 and 2 steps: a 1x1 input convolution sets the area's width; then, at each
step, a 1x1 convolution expands the width four-fold, a 3x3 convolution (stride 2 at the first
step only) and a 1x1 convolution back to the area's width, each with its own batch norm *per
step* (normalisation statistics are not shared across steps), and a residual sum with a skip
path (at the first step a strided 1x1 convolution with batch norm, later the area's state).
Published widths 64 (V1), 128, 256, 512.

Module and parameter names follow the authors' published implementation (``V1.conv_input``,
``V2.norm1_0``, ``decoder.linear``, ...), so their ImageNet checkpoints load with
:func:`synaptic_geometry.experiments.checkpoints.load_checkpoint`.

Scaled for 28x28 digits (:data:`ARCHITECTURES`): one input channel, the published kernels and
time steps (RT: 5; S: 2, 4, 2), narrower areas, and V1's downsampling reduced so that the areas
keep a spatial extent. CORnet-RT: widths divided by 8 (V1 8, V2 16, V4 32, IT 64; its 32 groups
become 4, keeping 2, 4, 8 and 16 channels per group as published), V1's stride 4 becomes 2.
CORnet-S: widths divided by 16 (4, 8, 16, 32; its four-fold bottleneck makes it about eleven
times larger than CORnet-RT at equal widths, and this keeps its D and cost near RT's), the first
V1 convolution has stride 1 instead of 2 (its max pool keeps stride 2). The maps are then 14, 7,
4 and 2 pixels wide in V1, V2, V4 and IT (published at 224x224: 56, 28, 14, 7). The ``-tiny``
variants (tests) halve these widths again.

Analysed weights: the one rule of :func:`synaptic_geometry.experiments.models.analysed_weights`
applies unchanged (every conv and linear ``weight`` except the readout, the last ``nn.Linear``
registered, here ``decoder.linear``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
import torch
from torch import nn
from torch.nn import functional as F

MIN_RT_STEPS = 4  # the image reaches IT at the fourth step of the biological unrolling
AREAS = ("V1", "V2", "V4", "IT")


def _conv_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _decoder(channels: int, n_classes: int) -> nn.Sequential:
    """Global average pool, flatten, readout (named ``decoder.linear`` as published)."""
    return nn.Sequential(OrderedDict([("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
                                      ("linear", nn.Linear(channels, n_classes))]))


def _check_widths(widths: Sequence[int], count: int, what: str) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if len(widths) != count or min(widths) < 1:
        raise ValueError(f"{what} needs {count} positive widths; got {widths}")
    return widths


# ---------------------------------------------------------------------------------------------
# CORnet-RT


class RTArea(nn.Module):
    """One CORnet-RT area: input convolution, group norm, ReLU; added to the state; 3x3 recurrent
    convolution, group norm, ReLU, which is the new state and the output."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 32):
        super().__init__()
        if out_channels % groups:
            raise ValueError(f"group norm with {groups} groups needs a width divisible by it; got {out_channels}")
        self.out_channels, self.kernel_size, self.stride = out_channels, kernel_size, stride
        self.conv_input = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm_input = nn.GroupNorm(groups, out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, out_channels)

    def out_size(self, size: int) -> int:
        """Side of this area's map for an input map of side ``size``."""
        return _conv_size(size, self.kernel_size, self.stride, self.kernel_size // 2)

    def forward(self, inp: torch.Tensor | None, state: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor:
        """New output (= state) from the input of this step (None: no input yet) and the previous state."""
        if inp is None:
            weight = self.conv1.weight
            drive = torch.zeros(shape[0], self.out_channels, shape[1], shape[2], dtype=weight.dtype, device=weight.device)
        else:
            drive = torch.relu(self.norm_input(self.conv_input(inp)))
        total = drive if state is None else drive + state
        return torch.relu(self.norm1(self.conv1(total)))


class CORnetRT(nn.Module):
    """CORnet-RT with biological unrolling over ``steps`` time steps (published: 5)."""

    def __init__(self, in_channels: int = 3, n_classes: int = 1000, widths: Sequence[int] = (64, 128, 256, 512),
                 v1_kernel: int = 7, v1_stride: int = 4, groups: int = 32, steps: int = 5):
        super().__init__()
        widths = _check_widths(widths, 4, "CORnet-RT")
        if int(steps) < MIN_RT_STEPS:
            raise ValueError(f"CORnet-RT needs at least {MIN_RT_STEPS} time steps (the image reaches IT at the "
                             f"fourth); got {steps}")
        self.steps = int(steps)
        self.V1 = RTArea(in_channels, widths[0], v1_kernel, v1_stride, groups)
        self.V2 = RTArea(widths[0], widths[1], 3, 2, groups)
        self.V4 = RTArea(widths[1], widths[2], 3, 2, groups)
        self.IT = RTArea(widths[2], widths[3], 3, 2, groups)
        self.decoder = _decoder(widths[3], n_classes)

    def areas(self) -> list[RTArea]:
        return [getattr(self, name) for name in AREAS]

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Class scores from IT's output at the last step (``steps`` overrides the model's own)."""
        steps = self.steps if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1; got {steps}")
        shapes, height, width = [], x.shape[2], x.shape[3]
        for area in self.areas():
            height, width = area.out_size(height), area.out_size(width)
            shapes.append((x.shape[0], height, width))
        outputs: list[torch.Tensor | None] = [None] * len(AREAS)
        for _ in range(steps):
            inputs = [x] + outputs[:-1]  # V1 reads the image; each higher area, the area below one step ago
            outputs = [area(inp, state, shape)
                       for area, inp, state, shape in zip(self.areas(), inputs, outputs, shapes)]
        return self.decoder(outputs[-1])


# ---------------------------------------------------------------------------------------------
# CORnet-S


class SV1(nn.Module):
    """CORnet-S's V1: conv (7x7), batch norm, ReLU, 3x3 max pool (stride 2), 3x3 conv, batch norm, ReLU."""

    def __init__(self, in_channels: int, width: int, stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=stride, padding=3, bias=False)
        self.norm1 = nn.BatchNorm2d(width)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.norm1(self.conv1(x))))
        return torch.relu(self.norm2(self.conv2(x)))


class SArea(nn.Module):
    """A recurrent CORnet-S area: a bottleneck block (1x1 expand x``scale``, 3x3, 1x1) run ``steps``
    times with a residual sum, batch norms per step, stride 2 at the first step only."""

    def __init__(self, in_channels: int, out_channels: int, steps: int, scale: int = 4):
        super().__init__()
        if int(steps) < 1:
            raise ValueError(f"a CORnet-S area needs at least one step; got {steps}")
        self.steps = int(steps)
        inner = out_channels * scale
        self.conv_input = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.skip = nn.Conv2d(out_channels, out_channels, 1, stride=2, bias=False)
        self.norm_skip = nn.BatchNorm2d(out_channels)
        self.conv1 = nn.Conv2d(out_channels, inner, 1, bias=False)
        self.conv2 = nn.Conv2d(inner, inner, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(inner, out_channels, 1, bias=False)
        for t in range(self.steps):  # the published names: norm1_0, norm2_0, norm3_0, norm1_1, ...
            setattr(self, f"norm1_{t}", nn.BatchNorm2d(inner))
            setattr(self, f"norm2_{t}", nn.BatchNorm2d(inner))
            setattr(self, f"norm3_{t}", nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        steps = self.steps if steps is None else int(steps)
        if not 1 <= steps <= self.steps:
            raise ValueError(f"this area has batch norms for 1..{self.steps} steps; got {steps}")
        x = self.conv_input(x)
        for t in range(steps):
            skip = self.norm_skip(self.skip(x)) if t == 0 else x
            y = torch.relu(getattr(self, f"norm1_{t}")(self.conv1(x)))
            y = F.conv2d(y, self.conv2.weight, stride=2 if t == 0 else 1, padding=1)
            y = torch.relu(getattr(self, f"norm2_{t}")(y))
            y = getattr(self, f"norm3_{t}")(self.conv3(y))
            x = torch.relu(y + skip)
        return x


class CORnetS(nn.Module):
    """CORnet-S: a feedforward V1, recurrent V2, V4, IT (published steps 2, 4, 2), decoder."""

    def __init__(self, in_channels: int = 3, n_classes: int = 1000, widths: Sequence[int] = (64, 128, 256, 512),
                 steps: Sequence[int] = (2, 4, 2), v1_stride: int = 2, scale: int = 4):
        super().__init__()
        widths = _check_widths(widths, 4, "CORnet-S")
        steps = tuple(int(s) for s in steps)
        if len(steps) != 3:
            raise ValueError(f"CORnet-S needs time steps for V2, V4 and IT (three numbers); got {steps}")
        self.V1 = SV1(in_channels, widths[0], v1_stride)
        self.V2 = SArea(widths[0], widths[1], steps[0], scale)
        self.V4 = SArea(widths[1], widths[2], steps[1], scale)
        self.IT = SArea(widths[2], widths[3], steps[2], scale)
        self.decoder = _decoder(widths[3], n_classes)

    @property
    def steps(self) -> tuple[int, int, int]:
        return self.V2.steps, self.V4.steps, self.IT.steps

    def forward(self, x: torch.Tensor, steps: Sequence[int] | None = None) -> torch.Tensor:
        """Class scores; ``steps`` (for V2, V4, IT) may run fewer steps than the model has batch norms for."""
        steps = self.steps if steps is None else tuple(steps)
        x = self.V1(x)
        for area, n in zip((self.V2, self.V4, self.IT), steps):
            x = area(x, n)
        return self.decoder(x)


# ---------------------------------------------------------------------------------------------
# Constructors


def cornet_rt(n_classes: int = 1000, in_channels: int = 3) -> CORnetRT:
    """The published CORnet-RT (ImageNet, 224x224 inputs)."""
    return CORnetRT(in_channels, n_classes)


def cornet_s(n_classes: int = 1000, in_channels: int = 3) -> CORnetS:
    """The published CORnet-S (ImageNet, 224x224 inputs)."""
    return CORnetS(in_channels, n_classes)


RT_DIGIT_WIDTHS = (8, 16, 32, 64)  # published widths / 8
S_DIGIT_WIDTHS = (4, 8, 16, 32)  # published widths / 16


def cornet_rt_digits(in_shape: tuple[int, ...], n_classes: int, widths: Sequence[int] = RT_DIGIT_WIDTHS,
                     groups: int = 4) -> CORnetRT:
    """CORnet-RT scaled for small images: widths / 8, 4 groups, V1 stride 2, five steps."""
    return CORnetRT(in_shape[0], n_classes, widths, v1_kernel=7, v1_stride=2, groups=groups, steps=5)


def cornet_s_digits(in_shape: tuple[int, ...], n_classes: int, widths: Sequence[int] = S_DIGIT_WIDTHS) -> CORnetS:
    """CORnet-S scaled for small images: widths / 16, V1's first convolution with stride 1, steps 2, 4, 2."""
    return CORnetS(in_shape[0], n_classes, widths, steps=(2, 4, 2), v1_stride=1)


def _halved(widths: Sequence[int]) -> tuple[int, ...]:
    return tuple(w // 2 for w in widths)


# Builders in the signature of ``models.ARCHITECTURES`` (image shape, number of classes).
ARCHITECTURES: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "cornet-rt": cornet_rt_digits,
    "cornet-s": cornet_s_digits,
    "cornet-rt-tiny": lambda s, k: cornet_rt_digits(s, k, _halved(RT_DIGIT_WIDTHS), groups=2),
    "cornet-s-tiny": lambda s, k: cornet_s_digits(s, k, _halved(S_DIGIT_WIDTHS)),
}
PUBLISHED = {"cornet-rt": cornet_rt, "cornet-s": cornet_s}

