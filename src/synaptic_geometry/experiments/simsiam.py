"""Self-supervised SimSiam: a ResNet backbone, pretraining on digits, and finetuning with mirror descent.

SimSiam (Chen and He 2021, CVPR) learns without labels from two augmented views of each image.
An *encoder* (a ResNet backbone, He et al. 2016, followed by a projection MLP) maps a view to
``z``; a *predictor* MLP maps ``z`` to ``p``; the loss is the symmetrised negative cosine
similarity with a stop-gradient on the target branch,

    L = -cos(p1, sg(z2)) / 2 - cos(p2, sg(z1)) / 2,

whose minimum, -1, is reached when every image's two views give aligned outputs. Without the
stop-gradient the network collapses to a constant output; the collapse check
(:func:`output_std`) is the per-dimension standard deviation of the l2-normalised ``z``, about
``1/sqrt(d)`` for outputs spread over the sphere and 0 for a collapsed network.

The paper (Pogodin et al. 2024) finetuned a pretrained SimSiam ResNet-50 for 50 epochs with
this loss on ``N = floor(sqrt(D))`` ImageNet validation images and analysed only the backbone's
convolutions (D = their number of weights). Here, at CPU scale, a narrow ResNet of the ResNet-18
family is pretrained with SimSiam on the pretraining part of the embedded MNIST digits and then
finetuned the same way on ``N`` digits of the finetuning pool (:mod:`synaptic_geometry.experiments.data`);
the paper's ResNet-50 path reads a SimSiam checkpoint and an ImageNet folder.

Module names follow torchvision's ResNet and the SimSiam authors' model (``encoder.layer1.0.conv1``,
``encoder.fc`` for the projector, ``predictor``), so their published checkpoint loads as is.

Finetuning keeps the learning-rate rule and the epochs as arguments. Without labels there is no
training accuracy to reach. Two small-change rules measure progress by the fraction of the gap
between the loss before finetuning and its floor, -1, that a run closes on fixed views of the
finetuning images (:func:`gap_closed`): ``smallest_converged`` takes the smallest rate of the grid
that closes a fixed fraction of that gap; ``smallest_near_best`` (the default) the smallest rate
that closes a fixed fraction of what the grid's best rate closed. The floor is not reachable
under random augmentations, so the first rule can fail at every rate (:func:`finetune_params`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F

from synaptic_geometry.experiments import data as data_mod
from synaptic_geometry.experiments.checkpoints import load_checkpoint
from synaptic_geometry.experiments.finetune import _param_groups, change_record, child_seed
from synaptic_geometry.experiments.resnet import BLOCKS, STEMS, BasicBlock, Bottleneck, ResNet  # noqa: F401 (re-exported)
from synaptic_geometry.infra.store import experiment
from synaptic_geometry.optim import MirrorDescent
from synaptic_geometry.potentials import get_potential

LR_RULES = ("lowest_loss", "smallest_converged", "smallest_near_best")
LOSS_FLOOR = -1.0  # the SimSiam loss when every pair of views gives aligned outputs

# ---------------------------------------------------------------------------------------------
# SimSiam


class SimSiam(nn.Module):
    """SimSiam: ``encoder`` (a ResNet whose ``fc`` is the 3-layer projector) and a 2-layer ``predictor``.

    Projector: Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN (the last batch norm without learned
    scale and shift), from the backbone's feature width to ``dim``; predictor: a bottleneck
    Linear(dim, pred_dim)-BN-ReLU-Linear(pred_dim, dim). SimSiam's ImageNet sizes are
    dim = 2048, pred_dim = 512 (Chen and He 2021).
    """

    def __init__(self, backbone: ResNet, dim: int = 2048, pred_dim: int = 512):
        super().__init__()
        if int(dim) < 1 or int(pred_dim) < 1:
            raise ValueError(f"dim and pred_dim must be positive; got {dim}, {pred_dim}")
        hidden = backbone.feature_dim
        backbone.fc = nn.Sequential(
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, dim), nn.BatchNorm1d(dim, affine=False))
        self.encoder = backbone
        self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(),
                                       nn.Linear(pred_dim, dim))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(p1, p2, z1, z2) for two views; the loss applies the stop-gradient to the z's."""
        z1, z2 = self.encoder(x1), self.encoder(x2)
        return self.predictor(z1), self.predictor(z2), z1, z2


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetrised negative cosine similarity with stop-gradient on the targets (mean over the batch)."""
    return -(F.cosine_similarity(p1, z2.detach(), dim=1).mean()
             + F.cosine_similarity(p2, z1.detach(), dim=1).mean()) / 2


def output_std(z: torch.Tensor | np.ndarray) -> float:
    """Collapse check: mean over dimensions of the standard deviation of the l2-normalised outputs.

    About ``1/sqrt(d)`` when the outputs ``z`` (n, d) are spread over the sphere; 0 when they
    have collapsed to one direction.
    """
    z = torch.as_tensor(z, dtype=torch.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"outputs must be a (samples >= 2, dimensions) array; got shape {tuple(z.shape)}")
    return float(F.normalize(z, dim=1).std(dim=0).mean())


def analysed_weights(model: SimSiam) -> dict[str, nn.Parameter]:
    """The analysed weights: every convolution of the backbone (``encoder`` without its projector ``fc``)."""
    if not isinstance(model, SimSiam):
        raise TypeError(f"expected a SimSiam model; got {type(model).__name__}")
    return {f"encoder.{name}.weight": module.weight for name, module in model.encoder.named_modules()
            if isinstance(module, nn.Conv2d) and not name.startswith("fc")}


def n_analysed(model: SimSiam) -> int:
    """D, the number of analysed weights (backbone convolutions)."""
    return sum(p.numel() for p in analysed_weights(model).values())


BACKBONES = {  # name: (block, blocks per stage, stem)
    "resnet18": ("basic", (2, 2, 2, 2), "small"),
    "resnet10": ("basic", (1, 1, 1, 1), "small"),
    "resnet50": ("bottleneck", (3, 4, 6, 3), "imagenet"),
}


def build(backbone: str = "resnet10", in_channels: int = 1, width: int = 8, dim: int = 128,
          pred_dim: int = 32, seed: int = 0) -> SimSiam:
    """A freshly initialised SimSiam model (initialisation seeded with ``seed``).

    Backbones (:data:`BACKBONES`): ``resnet18`` (basic blocks 2, 2, 2, 2) and ``resnet10`` (one
    basic block per stage, the smallest of that family) with the small stem, for digits;
    ``resnet50`` (bottlenecks 3, 4, 6, 3, ImageNet stem), the paper's. Stage widths are ``width``,
    2, 4 and 8 ``width`` (published: 64).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown SimSiam backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    block, layers, stem = BACKBONES[backbone]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SimSiam(ResNet(block, layers, width, in_channels, stem), dim, pred_dim)


# ---------------------------------------------------------------------------------------------
# Augmentations (batched, seeded)


@dataclass(frozen=True)
class Augmentation:
    """Random views of a batch: resized crop, rotation, flip, colour changes, additive noise.

    A crop covers a fraction ``crop_scale`` of the image's area with aspect ratio in ``crop_ratio``
    (log-uniform), sits uniformly inside the image, is rotated by up to ``max_rotation`` degrees
    and resized back to the image's size (bilinear; zero outside the image). ``flip`` mirrors half
    of the views left-right. ``jitter`` scales brightness, contrast and saturation by factors in
    [1 - jitter, 1 + jitter] (with probability ``jitter_p``), ``grayscale_p`` turns a view grey;
    both act on pixels in [0, 1], recovered with ``mean``/``std`` from normalised images.
    ``noise_std`` adds Gaussian noise last.
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    max_rotation: float = 15.0
    flip: bool = False
    jitter: float = 0.0
    jitter_p: float = 0.0
    grayscale_p: float = 0.0
    noise_std: float = 0.1
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1; got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high; got {self.crop_ratio}")
        for name in ("max_rotation", "jitter", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        for name in ("jitter_p", "grayscale_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1]; got {getattr(self, name)}")


# Digits: crops of half the area or more, rotations up to 15 degrees, noise; no flips (a mirrored
# digit is another symbol or none). ImageNet: SimSiam's recipe (crops of 0.2-1 of the area, flips,
# brightness, contrast and saturation jitter 0.4 with probability 0.8, grayscale 0.2) without its
# hue jitter and Gaussian blur.
DIGITS = Augmentation()
IMAGENET = Augmentation(crop_scale=(0.2, 1.0), max_rotation=0.0, flip=True, jitter=0.4, jitter_p=0.8,
                        grayscale_p=0.2, noise_std=0.0, mean=data_mod.IMAGENET_MEAN, std=data_mod.IMAGENET_STD)
AUGMENTATIONS = {"digits": DIGITS, "imagenet": IMAGENET}


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def crop_transforms(n: int, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Affine maps (n, 2, 3) from output to input coordinates (``F.affine_grid``'s convention)."""
    area = _uniform(n, *augmentation.crop_scale, generator)
    ratio = torch.exp(_uniform(n, math.log(augmentation.crop_ratio[0]), math.log(augmentation.crop_ratio[1]), generator))
    half_w, half_h = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (1 - half_w) * _uniform(n, -1.0, 1.0, generator)
    centre_y = (1 - half_h) * _uniform(n, -1.0, 1.0, generator)
    angle = torch.deg2rad(_uniform(n, -augmentation.max_rotation, augmentation.max_rotation, generator))
    mirror = torch.ones(n, dtype=torch.float64)
    if augmentation.flip:
        mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([mirror * half_w * cos, -half_h * sin, centre_x], 1),
                         torch.stack([mirror * half_w * sin, half_h * cos, centre_y], 1)], 1)
    return theta.float()


def _colour(x: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation jitter and grayscale on [0, 1] pixels (from normalised ``x``)."""
    mean = torch.tensor(augmentation.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(augmentation.std, dtype=x.dtype).view(1, -1, 1, 1)
    pixels = x * std + mean
    n = x.shape[0]

    def grey(images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=1, keepdim=True) if images.shape[1] != 3 else (
            0.299 * images[:, :1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:])

    if augmentation.jitter > 0:
        apply = (torch.rand(n, generator=generator) < augmentation.jitter_p).to(x.dtype).view(-1, 1, 1, 1)
        low, high = 1 - augmentation.jitter, 1 + augmentation.jitter
        factors = [_uniform(n, low, high, generator).to(x.dtype).view(-1, 1, 1, 1) for _ in range(3)]
        factors = [1 + apply * (f - 1) for f in factors]
        pixels = (pixels * factors[0]).clamp(0, 1)
        pixels = (grey(pixels).mean(dim=(2, 3), keepdim=True) * (1 - factors[1]) + pixels * factors[1]).clamp(0, 1)
        pixels = (grey(pixels) * (1 - factors[2]) + pixels * factors[2]).clamp(0, 1)
    if augmentation.grayscale_p > 0:
        turn = (torch.rand(n, generator=generator) < augmentation.grayscale_p).view(-1, 1, 1, 1)
        pixels = torch.where(turn, grey(pixels).expand_as(pixels), pixels)
    return (pixels - mean) / std


def augment(x: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """One random view of every image of the batch ``x`` (n, channels, height, width)."""
    if x.ndim != 4:
        raise ValueError(f"expected a batch of images (n, channels, height, width); got shape {tuple(x.shape)}")
    theta = crop_transforms(x.shape[0], augmentation, generator)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    views = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if augmentation.jitter > 0 or augmentation.grayscale_p > 0:
        views = _colour(views, augmentation, generator)
    if augmentation.noise_std > 0:
        views = views + augmentation.noise_std * torch.randn(views.shape, generator=generator, dtype=views.dtype)
    return views


def two_views(x: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random views of every image of ``x``."""
    return augment(x, augmentation, generator), augment(x, augmentation, generator)


# ---------------------------------------------------------------------------------------------
# Training with the SimSiam loss


def evaluation_views(images: torch.Tensor, augmentation: Augmentation, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed views of ``images`` (the same for every learning rate and potential of a run)."""
    return two_views(images, augmentation, torch.Generator().manual_seed(seed))


def evaluate(model: SimSiam, views: tuple[torch.Tensor, torch.Tensor], batch_size: int = 256) -> tuple[float, float]:
    """SimSiam loss on fixed ``views`` and the collapse statistic of their outputs ``z``.

    Batch norms use batch statistics, as in training (the views are split into nearly equal
    batches of at most ``batch_size``), and their running statistics are left untouched, so the
    loss changes only when weights change: in eval mode the running statistics, which adapt to
    the finetuning images at any learning rate, would lower the loss with no weight change at all.
    """
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    saved, was_training = [m.momentum for m in norms], model.training
    for m in norms:
        m.momentum = 0.0  # running = (1 - momentum) running + momentum batch: unchanged
    model.train()
    losses, outputs = [], []
    try:
        with torch.no_grad():
            chunks = max(1, math.ceil(len(views[0]) / batch_size))
            for x1, x2 in zip(torch.tensor_split(views[0], chunks), torch.tensor_split(views[1], chunks)):
                p1, p2, z1, z2 = model(x1, x2)
                losses.append(simsiam_loss(p1, p2, z1, z2).item() * len(z1))
                outputs.append(z1)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    return sum(losses) / len(views[0]), output_std(torch.cat(outputs))


def train(model: SimSiam, images: torch.Tensor, augmentation: Augmentation, potential: str, lr: float, epochs: int,
          batch_size: int, momentum: float, seed: int, weight_decay: float = 0.0, schedule_predictor: bool = True,
          watch: dict[str, nn.Parameter] | None = None) -> dict:
    """Train ``model`` in place with the SimSiam loss and MirrorDescent (cosine learning rate).

    Fresh views every epoch, drawn with the order and views generators seeded from ``seed``. With
    ``schedule_predictor=False`` the predictor keeps a constant rate (SimSiam's pretraining recipe).
    Returns the mean training loss per epoch, the collapse statistic of each epoch's outputs, and
    ``touched`` masks of ``watch`` (True where a nonzero gradient arrived). Exact zeros under
    negative entropy are handled as in :func:`synaptic_geometry.experiments.finetune.train`.
    A non-finite loss or weight stops training and is reported as ``diverged``.
    """
    if lr <= 0 or epochs < 1 or batch_size < 2:
        raise ValueError(f"need lr > 0, epochs >= 1, batch_size >= 2; got {lr}, {epochs}, {batch_size}")
    watch = watch or {}
    groups, n_euclidean = _param_groups(model, get_potential(potential).name, "euclidean", set(watch))
    predictor = {id(p) for p in model.predictor.parameters()}
    split = []
    for group in groups:  # separate predictor parameters so that they may keep a constant rate
        for members, constant in (([p for p in group["params"] if id(p) not in predictor], False),
                                  ([p for p in group["params"] if id(p) in predictor], not schedule_predictor)):
            if members:
                split.append({**group, "params": members, "constant": constant})
    optimizer = MirrorDescent([{k: v for k, v in g.items() if k != "constant"} for g in split], lr=lr,
                              momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = len(range(0, len(images) - 1, batch_size))
    total = epochs * steps_per_epoch
    cosine = lambda step: 0.5 * (1 + math.cos(math.pi * step / total))  # noqa: E731
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, [(lambda step: 1.0) if g["constant"] else cosine for g in split])
    order, views = torch.Generator().manual_seed(child_seed(seed, "order")), torch.Generator().manual_seed(child_seed(seed, "views"))
    touched = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in watch.items()}
    epoch_loss, epoch_std, diverged = [], [], False
    model.train()
    for _ in range(epochs):
        perm, losses, outputs = torch.randperm(len(images), generator=order), [], []
        for start in range(0, len(images) - 1, batch_size):
            index = perm[start:start + batch_size]
            if len(index) < 2:  # batch norm needs two samples
                continue
            x1, x2 = two_views(images[index], augmentation, views)
            p1, p2, z1, z2 = model(x1, x2)
            loss = simsiam_loss(p1, p2, z1, z2)
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for n, p in watch.items():
                if p.grad is not None:
                    touched[n] |= p.grad != 0
            try:
                optimizer.step()
            except FloatingPointError:
                diverged = True
                break
            schedule.step()
            losses.append(loss.item())
            outputs.append(z1.detach())
        if diverged:
            break
        epoch_loss.append(float(np.mean(losses)))
        epoch_std.append(output_std(torch.cat(outputs)))
    diverged = diverged or not all(torch.isfinite(p).all() for p in model.parameters())
    return {"epoch_loss": np.asarray(epoch_loss), "epoch_std": np.asarray(epoch_std), "diverged": diverged,
            "touched": touched, "n_euclidean_params": n_euclidean}


# ---------------------------------------------------------------------------------------------
# Linear probe


def embed(model: SimSiam, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Backbone features (before the projector) of ``images``, in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        features = torch.cat([model.encoder.features(images[s:s + batch_size]) for s in range(0, len(images), batch_size)])
    model.train(was_training)
    return features.numpy().astype(np.float64)


def linear_probe(features: np.ndarray, labels: np.ndarray, seed: int = 0, test_fraction: float = 0.5) -> float:
    """Test accuracy of a logistic-regression probe on standardised frozen features (stratified split)."""
    x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=test_fraction,
                                                        random_state=seed, stratify=labels)
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), y_train)
    return float(probe.score(scaler.transform(x_test), y_test))


# ---------------------------------------------------------------------------------------------
# Pretraining on digits (cached)


def pretrain_params(backbone: str = "resnet10", width: int = 8, dim: int = 128, pred_dim: int = 32,
                    epochs: int = 8, lr: float = 0.1, batch_size: int = 64, weight_decay: float = 5e-4,
                    seed: int = 0, dataset: str = "mnist-embedded", augmentation: str = "digits") -> dict:
    """Parameters of a SimSiam pretraining on an embedded dataset (they form its key in the store)."""
    if backbone == "resnet50":
        raise ValueError("resnet50 is not pretrained here: use imagenet_params with a SimSiam checkpoint")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown SimSiam backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    if dataset not in data_mod.EMBEDDED:
        raise ValueError(f"SimSiam pretraining reads an embedded dataset; known: {', '.join(data_mod.EMBEDDED)}")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; known: {', '.join(AUGMENTATIONS)}")
    if epochs < 1 or lr <= 0 or batch_size < 2 or weight_decay < 0:
        raise ValueError(f"need epochs >= 1, lr > 0, batch_size >= 2, weight_decay >= 0; "
                         f"got {epochs}, {lr}, {batch_size}, {weight_decay}")
    return {"source": "embedded", "backbone": backbone, "width": int(width), "dim": int(dim), "pred_dim": int(pred_dim),
            "epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size),
            "weight_decay": float(weight_decay), "seed": int(seed), "dataset": dataset, "augmentation": augmentation}


def _state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {"state/" + k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _digits(dataset: str) -> tuple[data_mod.ImageData, data_mod.ImageData]:
    """(pretraining part, finetuning pool) of an embedded dataset, pixels in [0, 1] (black = 0)."""
    return data_mod.pretrain_finetune_split(data_mod.embedded(dataset, "unit"))


def _fresh_model(params: dict, in_channels: int) -> SimSiam:
    return build(params["backbone"], in_channels, params["width"], params["dim"], params["pred_dim"], params["seed"])


@experiment("simsiam_pretrain")
def pretrain(params: dict) -> dict[str, np.ndarray]:
    """SimSiam pretraining on the pretraining part of an embedded dataset (``params`` from
    :func:`pretrain_params`): the weights, the loss and collapse statistic per epoch, and linear-probe
    accuracies on the finetuning pool for these features, for the same network at initialisation,
    and for the raw pixels."""
    pretrain_data, pool = _digits(params["dataset"])
    model = _fresh_model(params, pretrain_data.shape[0])
    labels = pool.y.numpy()
    probe_seed = child_seed(params["seed"], "probe")
    initial_probe = linear_probe(embed(model, pool.x), labels, probe_seed)
    result = train(model, pretrain_data.x, AUGMENTATIONS[params["augmentation"]], "2-norm", params["lr"],
                   params["epochs"], params["batch_size"], 0.9, params["seed"], params["weight_decay"],
                   schedule_predictor=False)
    if result["diverged"]:
        raise FloatingPointError(f"SimSiam pretraining diverged with lr={params['lr']}; use a smaller rate")
    views = evaluation_views(pool.x, AUGMENTATIONS[params["augmentation"]], child_seed(params["seed"], "eval"))
    pool_loss, pool_std = evaluate(model, views, params["batch_size"])
    return {**_state_arrays(model), "epoch_loss": result["epoch_loss"], "epoch_std": result["epoch_std"],
            "pool_loss": np.float64(pool_loss), "pool_std": np.float64(pool_std),
            "dim": np.int64(params["dim"]), "n_analysed": np.int64(n_analysed(model)),
            "probe_accuracy": np.float64(linear_probe(embed(model, pool.x), labels, probe_seed)),
            "probe_accuracy_initial": np.float64(initial_probe),
            "probe_accuracy_pixels": np.float64(linear_probe(pool.x.flatten(1).numpy(), labels, probe_seed))}


# ---------------------------------------------------------------------------------------------
# The paper's ResNet-50 on ImageNet


def imagenet_params(weights_path: str | None, imagenet_root: str | None, width: int = 64, dim: int = 2048,
                    pred_dim: int = 512) -> dict:
    """"Pretraining" of the paper's SimSiam ResNet-50: where its checkpoint and ImageNet images are."""
    return {"source": "imagenet", "backbone": "resnet50", "width": int(width), "dim": int(dim),
            "pred_dim": int(pred_dim), "weights_path": weights_path, "imagenet_root": imagenet_root,
            "augmentation": "imagenet", "seed": 0}


def availability(pretraining: dict) -> tuple[bool, str]:
    """Whether finetuning from ``pretraining`` can run here, and if not, why (for the chapter's note)."""
    if pretraining["source"] == "embedded":
        return True, "pretrained here on the embedded digits"
    weights, root = pretraining.get("weights_path"), pretraining.get("imagenet_root")
    if not (weights and Path(weights).is_file()):
        return False, f"no SimSiam ResNet-50 checkpoint (weights_path={weights!r})"
    if not (root and Path(root).is_dir()):
        return False, f"no ImageNet validation folder (imagenet_root={root!r})"
    return True, "SimSiam checkpoint and ImageNet folder present"


def pretrained_model(pretraining: dict, root: str | Path | None = None) -> SimSiam:
    """The SimSiam network of ``pretraining``: from the store at ``root`` (digits; default: the
    store's default root) or from its checkpoint (ImageNet)."""
    if pretraining["source"] == "imagenet":
        model = build("resnet50", 3, pretraining["width"], pretraining["dim"], pretraining["pred_dim"])
        return load_checkpoint(model, pretraining["weights_path"])
    arrays = pretrain(pretraining, root=root)
    pretrain_data, _ = _digits(pretraining["dataset"])
    model = _fresh_model(pretraining, pretrain_data.shape[0])
    model.load_state_dict({k[len("state/"):]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith("state/")})
    return model


def finetuning_images(pretraining: dict, n: int, seed: int) -> torch.Tensor:
    """``n`` finetuning images drawn with ``seed``: from the digits' finetuning pool or the ImageNet folder."""
    if pretraining["source"] == "imagenet":
        return data_mod.load_image_folder(pretraining["imagenet_root"], n=n, seed=seed).x
    _, pool = _digits(pretraining["dataset"])
    return data_mod.subset(pool, n, seed).x


# ---------------------------------------------------------------------------------------------
# Finetuning with a potential (one run, cached)


def gap_closed(loss_before: float, loss_after: float) -> float:
    """Fraction of the gap between the loss before finetuning and its floor (-1) that finetuning closed."""
    gap = loss_before - LOSS_FLOOR
    if gap <= 0:
        raise ValueError(f"the loss before finetuning ({loss_before}) is already at its floor {LOSS_FLOOR}")
    return (loss_before - loss_after) / gap


def finetune_params(potential: str, seed: int, pretraining: dict, lr_grid: Sequence[float] = (1e-3, 1e-2, 1e-1),
                    lr_rule: str = "smallest_near_best", epochs: int = 50, target_gap_closed: float = 0.5,
                    batch_size: int = 256, momentum: float = 0.9, n_samples: int | None = None,
                    bracket: bool = False) -> dict:
    """Parameters of one SimSiam finetuning run (validated; they form its key in the store).

    ``lr_rule``: ``lowest_loss`` (the published rule: the rate with the lowest final loss);
    ``smallest_converged`` (the smallest rate, searched upwards, whose run closes at least
    ``target_gap_closed`` of the gap between the loss before finetuning and its floor, -1; if none
    does, the run is stored with ``converged = False`` at the rate with the lowest loss);
    ``smallest_near_best`` (the smallest rate whose run closes at least ``target_gap_closed`` of
    what the best rate of the grid closed: the knee of the loss against the rate, always reached
    when any rate lowers the loss, at the cost of running the whole grid).

    ``bracket=True`` runs the rates upwards and stops at the first whose loss exceeds the lowest so
    far (assuming the loss falls with the rate up to its best rate and rises above it): the lowest
    loss is then bracketed, and so is the best gap closed that ``smallest_near_best`` measures
    against (the gap closed falls as the loss rises). It enters the parameters only when set.
    """
    if lr_rule not in LR_RULES:
        raise ValueError(f"unknown lr_rule {lr_rule!r}; known: {', '.join(LR_RULES)}")
    if not lr_grid or any(lr <= 0 for lr in lr_grid):
        raise ValueError(f"lr_grid must be a non-empty list of positive rates; got {lr_grid}")
    if not 0 < target_gap_closed <= 1:
        raise ValueError(f"target_gap_closed must be in (0, 1]; got {target_gap_closed}")
    if epochs < 1 or batch_size < 2 or (n_samples is not None and n_samples < 2):
        raise ValueError(f"need epochs >= 1, batch_size >= 2, n_samples >= 2; got {epochs}, {batch_size}, {n_samples}")
    if pretraining.get("source") not in ("embedded", "imagenet"):
        raise ValueError("pretraining must come from pretrain_params or imagenet_params")
    return {"potential": get_potential(potential).name, "seed": int(seed), "pretraining": dict(pretraining),
            "lr_grid": sorted(float(lr) for lr in lr_grid), "lr_rule": lr_rule, "epochs": int(epochs),
            "target_gap_closed": float(target_gap_closed), "batch_size": int(batch_size),
            "momentum": float(momentum), "n_samples": None if n_samples is None else int(n_samples),
            **({"bracket": True} if bracket else {})}


RATE_KEYS = ("potential", "seed", "pretraining", "epochs", "batch_size", "momentum", "n_samples")


def _setup(params: dict) -> tuple[SimSiam, torch.Tensor, tuple[torch.Tensor, torch.Tensor], int, int]:
    """The pretrained network, the run's ``N`` images, their fixed evaluation views, D and N."""
    pretrained = pretrained_model(params["pretraining"])
    augmentation = AUGMENTATIONS[params["pretraining"]["augmentation"]]
    dim = n_analysed(pretrained)
    n = params["n_samples"] or math.floor(math.sqrt(dim))
    images = finetuning_images(params["pretraining"], n, child_seed(params["seed"], "subset"))
    views = evaluation_views(images, augmentation, child_seed(params["seed"], "eval"))
    return pretrained, images, views, dim, n


@experiment("simsiam_finetune_rate")
def finetune_at_rate(params: dict) -> dict[str, np.ndarray]:
    """Finetuning at one learning rate (``params``: a run's :data:`RATE_KEYS` and ``lr``): the loss
    on the fixed views before and after, the gap closed, the collapse statistic, the weights after.

    Cached on its own, so that the learning-rate rules of :func:`finetune` share the runs of the
    grid (a rule only chooses among them)."""
    pretrained, images, views, _, _ = _setup(params)
    augmentation = AUGMENTATIONS[params["pretraining"]["augmentation"]]
    loss_before, std_before = evaluate(pretrained, views, params["batch_size"])
    model = copy.deepcopy(pretrained)
    result = train(model, images, augmentation, params["potential"], params["lr"], params["epochs"],
                   params["batch_size"], params["momentum"], params["seed"], watch=analysed_weights(model))
    loss, std = (math.inf, 0.0) if result["diverged"] else evaluate(model, views, params["batch_size"])
    arrays = {"loss_before": np.float64(loss_before), "std_before": np.float64(std_before),
              "loss": np.float64(loss), "std": np.float64(std), "diverged": np.bool_(result["diverged"]),
              "gap_closed": np.float64(-math.inf if result["diverged"] else gap_closed(loss_before, loss)),
              "epoch_loss": result["epoch_loss"], "n_euclidean_params": np.int64(result["n_euclidean_params"])}
    for name, weight in analysed_weights(model).items():
        arrays[f"after/{name}"] = weight.detach().numpy().copy()
        arrays[f"touched/{name}"] = result["touched"][name].numpy()
    return arrays


@experiment("simsiam_finetune")
def finetune(params: dict) -> dict[str, np.ndarray]:
    """One finetuning run (``params`` from :func:`finetune_params`): every parameter trained with the
    potential on the SimSiam loss over ``N = floor(sqrt(D))`` images, the learning rate chosen by
    the run's rule among the cached runs of the grid (:func:`finetune_at_rate`); returns the
    backbone convolutions before/after (``before/<name>``, ``after/<name>``, ``touched/<name>``,
    ``layers``: the layout that :func:`synaptic_geometry.experiments.finetune.analyse` reads) and
    the run's record, with the change record of :func:`~synaptic_geometry.experiments.finetune.change_record`."""
    pretrained, _, _, dim, n = _setup(params)
    before = {k: v.detach().numpy().copy() for k, v in analysed_weights(pretrained).items()}
    shared = {k: params[k] for k in RATE_KEYS}
    runs = []  # (lr, stored run at that rate), rates ascending
    for lr in params["lr_grid"]:
        run = finetune_at_rate({**shared, "lr": lr})
        runs.append((lr, run))
        if params["lr_rule"] == "smallest_converged" and float(run["gap_closed"]) >= params["target_gap_closed"]:
            break
        if params.get("bracket") and float(run["loss"]) > min(float(r["loss"]) for _, r in runs):
            break
    closed = [float(run["gap_closed"]) for _, run in runs]
    target = params["target_gap_closed"]
    if params["lr_rule"] == "smallest_near_best":
        target *= max(closed)
    reaching = [(lr, run) for (lr, run), c in zip(runs, closed) if c >= target and c > 0]
    if reaching and params["lr_rule"] != "lowest_loss":
        lr, chosen = reaching[0]
    else:
        lr, chosen = min(runs, key=lambda r: float(r[1]["loss"]))
    change = change_record(before, {k: chosen[f"after/{k}"] for k in before}, params["potential"])
    arrays = {"dim": np.int64(dim), "n_samples": np.int64(n), "lr": np.float64(lr), "epochs": np.int64(params["epochs"]),
              "loss_before": chosen["loss_before"], "loss_after": chosen["loss"],
              "gap_closed": chosen["gap_closed"],
              "converged": np.bool_(float(chosen["gap_closed"]) >= target and float(chosen["gap_closed"]) > 0),
              "std_before": chosen["std_before"], "std_after": chosen["std"],
              "lr_at_grid_end": np.bool_(lr in (params["lr_grid"][0], params["lr_grid"][-1])),
              **{key: np.float64(value) for key, value in change.items()},
              "epoch_loss": chosen["epoch_loss"], "n_euclidean_params": chosen["n_euclidean_params"],
              "search_lr": np.asarray([lr for lr, _ in runs]),
              "search_loss": np.asarray([float(run["loss"]) for _, run in runs]),
              "search_gap_closed": np.asarray(closed),
              "search_std": np.asarray([float(run["std"]) for _, run in runs]),
              "layers": np.asarray(list(before), dtype=str)}
    for name in before:
        arrays[f"before/{name}"] = before[name]
        arrays[f"after/{name}"] = chosen[f"after/{name}"]
        arrays[f"touched/{name}"] = chosen[f"touched/{name}"]
    return arrays
