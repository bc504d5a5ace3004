"""Run :class:`~synaptic_geometry.optim.MirrorDescent` on a small loss and record where it goes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from synaptic_geometry.optim import MirrorDescent
from synaptic_geometry.potentials import Potential


def descend(
    loss: Callable[[torch.Tensor], torch.Tensor],
    w0: np.ndarray,
    potential: str | Potential,
    lr: float,
    n_steps: int,
    momentum: float = 0.0,
    record_every: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``loss(w)`` from ``w0`` by mirror descent; return the recorded path and losses.

    The path has shape ``(n_records, len(w0))`` and holds ``w0``, every ``record_every``-th
    iterate and the last one; ``losses`` holds the loss at each recorded point.
    """
    if n_steps < 1 or record_every < 1:
        raise ValueError(f"n_steps and record_every must be >= 1 (got {n_steps}, {record_every})")
    w = torch.tensor(np.asarray(w0, dtype=np.float64).ravel(), requires_grad=True)
    optimizer = MirrorDescent([w], lr=lr, momentum=momentum, potential=potential)
    path, losses = [], []

    def record() -> None:
        with torch.no_grad():
            path.append(w.detach().numpy().copy())
            losses.append(float(loss(w)))

    record()
    for step in range(1, n_steps + 1):
        optimizer.zero_grad()
        loss(w).backward()
        optimizer.step()
        if step % record_every == 0 or step == n_steps:
            record()
    return np.array(path), np.array(losses)


def least_squares(X: np.ndarray, y: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss ``w -> ||X w - y||^2 / (2 N)`` as a torch function (float64)."""
    X_t = torch.as_tensor(np.asarray(X, dtype=np.float64))
    y_t = torch.as_tensor(np.asarray(y, dtype=np.float64))
    n = X_t.shape[0]
    return lambda w: 0.5 * torch.sum((X_t @ w - y_t) ** 2) / n
