"""Read published checkpoints (CORnet, SimSiam) into our models, without unpickling anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict (names to tensors) in ``path``, read without unpickling anything.

    Accepts a ``torch.save`` file read with ``weights_only=True`` holding a state dict, or a dict
    with a ``state_dict`` entry (the layout of the CORnet and SimSiam authors' checkpoints), or an
    ``.npz`` of arrays. A missing file is a FileNotFoundError; a corrupt file, one holding other
    objects than tensors, or one that is not a state dict is a ValueError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {k: torch.as_tensor(arrays[k]) for k in arrays.files}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"weights file {path} is corrupt or not a plain tensor file "
                         f"({type(error).__name__}: {error}); delete or replace it") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} must hold a state dict (names to tensors)")
    return state


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights in ``path`` into ``model`` (strictly) and return it.

    The file is read by :func:`load_state_dict_file`; the ``module.`` prefix that ``DataParallel``
    adds to the names is removed. A missing or an unexpected key is a ValueError that names them.
    """
    state = load_state_dict_file(path)
    try:
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    except RuntimeError as error:
        raise ValueError(f"weights in {path} do not fit {type(model).__name__}: {error}") from error
    return model
