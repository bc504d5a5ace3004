"""Where training runs: the device setting, mixed precision, seeded determinism, image-folder loaders.

Shared by finetuning, pretraining and the spiking simulations, so that each offers the same
machine setting ``device: auto | cpu | cuda``:

* :func:`resolve_device` turns the setting into a ``torch.device`` (``auto``: CUDA when available);
* :class:`MixedPrecision` runs a training step under autocast with a ``torch.amp.GradScaler`` on
  CUDA (float16, as the paper trained its ImageNet networks) and is a no-op on the CPU. Autocast
  changes the dtype of activations only: parameters and their gradients stay float32, so the
  optimizer (and the dual-space arithmetic of :class:`~synaptic_geometry.optim.MirrorDescent`)
  works in float32 and sees unscaled gradients;
* :func:`seed_everything` seeds torch and selects deterministic kernels, and says what is then
  reproducible on that device (:attr:`Determinism.guarantee`);
* :func:`image_folder_loader` makes a ``DataLoader`` over an image folder (``root/<class>/<image>``)
  with worker processes, a seeded shuffle and seeded workers.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = [
    "DEVICE_SETTINGS",
    "Determinism",
    "ImageFolder",
    "MixedPrecision",
    "image_folder_loader",
    "resolve_device",
    "seed_everything",
]

DEVICE_SETTINGS = ("auto", "cpu", "cuda")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2; see torch.use_deterministic_algorithms)
_CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(setting: str) -> torch.device:
    """The device for a machine setting.

    Parameters
    ----------
    setting : str
        ``"auto"`` (CUDA when available, else the CPU), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For any other setting.
    RuntimeError
        For ``"cuda"`` when torch sees no CUDA device.
    """
    if setting not in DEVICE_SETTINGS:
        raise ValueError(f"unknown device setting {setting!r}; expected one of {', '.join(DEVICE_SETTINGS)}")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise RuntimeError(f"device 'cuda' was requested but {build} (torch {torch.__version__}); "
                           "use device 'auto' or 'cpu'")
    return torch.device(setting)


class MixedPrecision:
    """Autocast and gradient scaling for training steps on CUDA; a no-op on the CPU.

    Use it as::

        amp = MixedPrecision(device)
        with amp.autocast():
            loss = loss_fn(model(x), y)
        took_step = amp.backward_and_step(loss, optimizer)

    Parameters
    ----------
    device : torch.device
        The device the model is on. Only ``cuda`` enables mixed precision.
    dtype : torch.dtype
        The autocast dtype on CUDA (float16, with loss scaling; bfloat16 works too).
    """

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float16):
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"autocast dtype must be torch.float16 or torch.bfloat16, got {dtype}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.enabled = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Run the forward pass (and loss) in mixed precision on CUDA; nothing changes on the CPU."""
        if not self.enabled:
            yield
            return
        with torch.autocast(device_type="cuda", dtype=self.dtype):
            yield

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        """Backpropagate ``loss`` and step ``optimizer``.

        On CUDA the loss is scaled before backward, the gradients are unscaled before the step,
        and the step is skipped (and the scale lowered) when they hold inf or nan, as
        ``torch.amp.GradScaler`` does. On the CPU this is ``loss.backward(); optimizer.step()``.

        Returns
        -------
        bool
            Whether the optimizer stepped.
        """
        if not self.enabled:
            loss.backward()
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale  # the scaler lowers the scale exactly when it skipped

    def state_dict(self) -> dict:
        """The gradient scaler's state (empty on the CPU), for checkpoints."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if state:
            self.scaler.load_state_dict(state)


@dataclass(frozen=True)
class Determinism:
    """What :func:`seed_everything` set, and what is reproducible as a result."""

    seed: int
    device: str
    threads: int
    guarantee: str


def seed_everything(seed: int, device: torch.device) -> Determinism:
    """Seed torch and select deterministic kernels for ``device``.

    Seeds torch's global generators (the CPU's and every GPU's), which initialise modules and
    drive dropout; data order and data randomness are seeded separately (see
    :func:`image_folder_loader`), and numpy randomness in this project goes through explicit
    ``numpy.random.Generator`` objects. On CUDA it also calls
    ``torch.use_deterministic_algorithms(True, warn_only=True)``, turns cuDNN's benchmark mode
    off and its deterministic mode on, and sets ``CUBLAS_WORKSPACE_CONFIG`` (effective only if
    CUDA has not run a cuBLAS call yet: call this first).

    Parameters
    ----------
    seed : int
        A non-negative integer.
    device : torch.device
        The device training will run on.

    Returns
    -------
    Determinism
        With ``guarantee``: what is then bitwise reproducible on this device.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    device = torch.device(device)
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        guarantee = (
            "CUDA: bitwise identical results for the same seed on the same GPU model, driver, CUDA and torch "
            "build, with deterministic algorithms on; ops that torch has no deterministic CUDA kernel for "
            "warn (warn_only=True) and may differ from run to run. Mixed precision's loss scaling is "
            "deterministic. Results differ between GPU models and from the CPU."
        )
    elif device.type == "cpu":
        guarantee = (
            f"CPU: bitwise identical results for the same seed, the same number of threads ({threads} here; "
            "parallel reductions split work by thread) and the same torch build and CPU instruction set. "
            "Results differ from a GPU's."
        )
    else:
        raise ValueError(f"seed_everything supports cpu and cuda devices, got {device}")
    return Determinism(seed=seed, device=device.type, threads=threads, guarantee=guarantee)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as a float32 tensor (channels, height, width) in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class ImageFolder(Dataset):
    """Images in ``root/<class name>/<file>``, labelled by the class's index in sorted order.

    Parameters
    ----------
    root : str or Path
        A folder with one subfolder per class.
    transform : callable, optional
        Maps the RGB ``PIL.Image`` to the sample (default: a float32 tensor in [0, 1], channels
        first). It runs in the worker processes: use a module-level function or object.
    """

    def __init__(self, root: str | Path, transform: Callable[[Image.Image], object] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((self.root / name).iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.samples:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class subfolders of {self.root}")
        self.transform = transform or _to_tensor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[object, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def _seed_worker(worker_id: int) -> None:
    """Seed Python's and numpy's global generators in a worker from its torch seed.

    torch seeds each worker with the loader's base seed plus the worker id; this extends that to
    libraries a transform might use.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def image_folder_loader(
    root: str | Path,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    workers: int = 0,
    transform: Callable[[Image.Image], object] | None = None,
    device: torch.device | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A ``DataLoader`` over an :class:`ImageFolder`, seeded and with worker processes.

    The same ``seed`` gives the same order of images, epoch after epoch, for any number of
    workers: the shuffle draws from its own ``torch.Generator`` seeded with ``seed``. Worker
    processes get their torch seed from a second generator seeded with ``seed`` (torch adds the
    worker id), extended to Python's ``random`` and numpy by a ``worker_init_fn``, so random
    transforms are reproducible for a given number of workers (with ``workers=0`` they draw from
    the main process's generators, which :func:`seed_everything` seeds).

    Parameters
    ----------
    root : str or Path
        ``root/<class name>/<image file>``.
    batch_size : int
        Images per batch (>= 1).
    seed : int
        Seeds the order and the workers (>= 0).
    shuffle : bool
        Reshuffle at every epoch (training) or keep the folder's order (evaluation).
    workers : int
        Worker processes that load and transform images (0: in the main process).
    transform : callable, optional
        As for :class:`ImageFolder`.
    device : torch.device, optional
        The device batches go to; CUDA turns on pinned memory.
    drop_last : bool
        Drop the last incomplete batch.

    Returns
    -------
    torch.utils.data.DataLoader
    """
    for key, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    dataset = ImageFolder(root, transform)
    order = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),  # the workers' base seed
        worker_init_fn=_seed_worker,
        persistent_workers=workers > 0,
        pin_memory=device is not None and torch.device(device).type == "cuda",
        drop_last=drop_last,
    )
