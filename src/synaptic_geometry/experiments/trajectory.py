"""The package's one training loop for small full-batch problems: run
:class:`~synaptic_geometry.optim.MirrorDescent` on a loss and record where it goes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from synaptic_geometry.optim import MirrorDescent
from synaptic_geometry.potentials import Potential

SCHEDULES = ("constant", "cosine")


def descend(
    loss: Callable[[torch.Tensor], torch.Tensor],
    w0: np.ndarray,
    potential: str | Potential,
    lr: float,
    n_steps: int,
    momentum: float = 0.0,
    record_every: int = 1,
    schedule: str = "constant",
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``loss(w)`` from ``w0`` by full-batch mirror descent; return the recorded path
    and losses.

    Parameters
    ----------
    loss
        A differentiable torch function of the weight vector (float64).
    w0, potential, lr, n_steps, momentum
        Start, geometry, learning rate, number of steps and momentum (SGD's convention).
    record_every
        Record every ``record_every``-th iterate (and always the first and the last).
    schedule
        ``"constant"`` learning rate, or ``"cosine"`` annealing from ``lr`` to zero over the run
        (``torch.optim.lr_scheduler.CosineAnnealingLR``, as in the paper's experiments).

    Returns
    -------
    path, losses
        ``path`` has shape ``(n_records, len(w0))``; ``losses`` the loss at each recorded point.
        A run that diverges raises ``FloatingPointError`` (from the optimizer) or ends with a
        non-finite loss.
    """
    if n_steps < 1 or record_every < 1:
        raise ValueError(f"n_steps and record_every must be >= 1 (got {n_steps}, {record_every})")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    w = torch.tensor(np.asarray(w0, dtype=np.float64).ravel(), requires_grad=True)
    optimizer = MirrorDescent([w], lr=lr, momentum=momentum, potential=potential)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_steps) if schedule == "cosine" else None
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
        if scheduler is not None:
            scheduler.step()
        if step % record_every == 0 or step == n_steps:
            record()
    return np.array(path), np.array(losses)


def least_squares(X: np.ndarray, y: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss ``w -> ||X w - y||^2 / (2 N)`` as a torch function (float64)."""
    X_t = torch.as_tensor(np.asarray(X, dtype=np.float64))
    y_t = torch.as_tensor(np.asarray(y, dtype=np.float64))
    n = X_t.shape[0]
    return lambda w: 0.5 * torch.sum((X_t @ w - y_t) ** 2) / n
