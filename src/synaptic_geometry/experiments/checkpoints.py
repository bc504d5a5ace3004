"""Read published checkpoints (CORnet, SimSiam) into our models, without unpickling anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights in ``path`` into ``model`` (strictly) and return it.

    Accepts a ``torch.save`` file read with ``weights_only=True`` holding a state dict, or a dict
    with a ``state_dict`` entry (the layout of the CORnet and SimSiam authors' checkpoints; the
    ``module.`` prefix that ``DataParallel`` adds is removed), or an ``.npz`` of arrays. A missing
    or an unexpected key is a ValueError that names them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                state = {k: torch.as_tensor(arrays[k]) for k in arrays.files}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"weights file {path} is not a plain tensor file ({type(error).__name__}: {error})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} must hold a state dict (names to tensors)")
    try:
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    except RuntimeError as error:
        raise ValueError(f"weights in {path} do not fit {type(model).__name__}: {error}") from error
    return model
