"""The package's one training loop for small full-batch problems: run
:class:`~synaptic_geometry.optim.MirrorDescent` on a loss and record where it goes."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from synaptic_geometry.optim import MirrorDescent
from synaptic_geometry.potentials import Potential

SCHEDULES = ("constant", "cosine", "backtracking")
# attempts of a backtracking step: the learning rate is halved after each rejected one
BACKTRACKING_TRIES = 30


class Descent(NamedTuple):
    """The record of one :func:`descend` run."""

    path: np.ndarray    # recorded iterates, shape (n_records, n_weights)
    losses: np.ndarray  # the loss at every iterate: before each step and after the last one
    lr: float           # the learning rate the run ended with (the schedule's end, or what backtracking left)


def descend(
    loss: Callable[[torch.Tensor], torch.Tensor],
    w0: np.ndarray,
    potential: str | Potential,
    lr: float,
    n_steps: int,
    momentum: float = 0.0,
    record_every: int = 1,
    schedule: str = "constant",
) -> Descent:
    """Minimise ``loss(w)`` from ``w0`` by full-batch mirror descent; return the recorded path,
    the losses and the final learning rate.

    Parameters
    ----------
    loss
        A differentiable torch function of the weight vector (float64).
    w0, potential, lr, n_steps, momentum
        Start, geometry, learning rate, number of steps and momentum (SGD's convention).
    record_every
        Record every ``record_every``-th iterate in ``path`` (and always the first and the last);
        the loss is recorded at every iterate.
    schedule
        ``"constant"`` learning rate; ``"cosine"`` annealing from ``lr`` to zero over the run
        (``torch.optim.lr_scheduler.CosineAnnealingLR``, as in the paper's experiments); or
        ``"backtracking"``: a step that would raise the loss is taken again at half the learning
        rate, which stays halved (at most :data:`BACKTRACKING_TRIES` attempts a step, the last
        one is kept; needs ``momentum=0``).

    Returns
    -------
    Descent
        ``path`` has shape ``(n_records, len(w0))``; ``losses`` has ``n_steps + 1`` entries;
        ``lr`` is the learning rate after the last step. A run that diverges raises
        ``FloatingPointError`` (from the optimizer) or ends with a non-finite loss.
    """
    if n_steps < 1 or record_every < 1:
        raise ValueError(f"n_steps and record_every must be >= 1 (got {n_steps}, {record_every})")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if schedule == "backtracking" and momentum != 0:
        raise ValueError(f"the backtracking schedule needs momentum=0 (got {momentum})")
    w = torch.tensor(np.asarray(w0, dtype=np.float64).ravel(), requires_grad=True)
    optimizer = MirrorDescent([w], lr=lr, momentum=momentum, potential=potential)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_steps) if schedule == "cosine" else None
    path, losses = [w.detach().numpy().copy()], []
    for step in range(1, n_steps + 1):
        optimizer.zero_grad()
        value = loss(w)
        value.backward()
        losses.append(float(value.detach()))
        if schedule == "backtracking":
            _backtracking_step(optimizer, loss, w, losses[-1])
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if step % record_every == 0 or step == n_steps:
            path.append(w.detach().numpy().copy())
    with torch.no_grad():
        losses.append(float(loss(w)))
    return Descent(np.array(path), np.array(losses), float(optimizer.param_groups[0]["lr"]))


def _backtracking_step(optimizer: MirrorDescent, loss: Callable, w: torch.Tensor, current: float) -> None:
    """One step that does not raise the loss above ``current``, halving the learning rate until
    it does not (a step whose arithmetic overflows counts as raising it)."""
    group = optimizer.param_groups[0]
    start = w.detach().clone()
    for attempt in range(BACKTRACKING_TRIES):
        last = attempt == BACKTRACKING_TRIES - 1
        try:
            optimizer.step()
        except FloatingPointError:
            if last:
                raise
            trial = float("inf")
        else:
            with torch.no_grad():
                trial = float(loss(w))
            if trial <= current:
                return
        group["lr"] /= 2
        if not last:
            with torch.no_grad():
                w.copy_(start)


def least_squares(X: np.ndarray, y: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss ``w -> ||X w - y||^2 / (2 N)`` as a torch function (float64)."""
    X_t = torch.as_tensor(np.asarray(X, dtype=np.float64))
    y_t = torch.as_tensor(np.asarray(y, dtype=np.float64))
    n = X_t.shape[0]
    return lambda w: 0.5 * torch.sum((X_t @ w - y_t) ** 2) / n
