"""The computations of the chapter "Mirror descent and the geometry of plasticity".

Three small experiments, each a function that returns what the chapter plots and quotes:

* :func:`two_dimensional_paths`: two weights, a loss with one minimum and a loss with a line of
  minima, one path per geometry, and the exact Bregman projection of the start onto the line;
* :func:`implicit_bias_check`: many mirror-descent steps on random underdetermined least squares,
  against the exact Bregman projection (the implicit-bias theorem);
* :func:`weight_histograms`: the same log-normal start, data and loss, fitted under each geometry,
  with the share of weights that changed sign and the skewness of the log-magnitudes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats
import torch

from synaptic_geometry.experiments.linreg import bregman_projection
from synaptic_geometry.experiments.trajectory import descend, least_squares
from synaptic_geometry.gaussianity import domain_mask
from synaptic_geometry.potentials import TRAINED_POTENTIALS

__all__ = [
    "LINE",
    "QUADRATIC",
    "TwoDimensionalPaths",
    "WeightHistograms",
    "implicit_bias_check",
    "two_dimensional_paths",
    "weight_histograms",
]

#: The two-weight losses of the chapter. The quadratic has its minimum at ``w_star`` with
#: curvature ``A``; the line is the set of solutions of one data point ``x . w = y``. The start
#: has unequal magnitudes, so the geometries' projections onto the line are far apart.
QUADRATIC = {"A": np.array([[1.0, 0.6], [0.6, 1.5]]), "w_star": np.array([0.4, 1.2])}
LINE = {"x": np.array([[1.0, 1.0]]), "y": np.array([1.5])}
START_2D = np.array([0.05, 0.6])
#: Momentum of the implicit-bias check, as in every experiment of the paper.
MOMENTUM = 0.9


@dataclass
class TwoDimensionalPaths:
    """Paths of each geometry on the two losses, and where the line's runs end."""

    start: np.ndarray
    quadratic: dict[str, np.ndarray]  # potential -> path (n_records x 2)
    line: dict[str, np.ndarray]
    projections: dict[str, np.ndarray]  # potential -> exact Bregman projection onto the line
    endpoints: pd.DataFrame  # one row per potential: end of the run, projection, distance


def two_dimensional_paths(
    lr: float, n_steps: int, potentials: Sequence[str] = TRAINED_POTENTIALS
) -> TwoDimensionalPaths:
    """Run mirror descent on both two-weight losses from :data:`START_2D`, one run per potential.

    Parameters
    ----------
    lr, n_steps
        Learning rate and number of steps (no momentum).
    potentials
        Potential names.

    Returns
    -------
    TwoDimensionalPaths
        The recorded paths and, for the line, a table comparing each run's end with the exact
        Bregman projection of the start.
    """
    A, w_star = torch.tensor(QUADRATIC["A"]), torch.tensor(QUADRATIC["w_star"])

    def quadratic(w: torch.Tensor) -> torch.Tensor:
        return 0.5 * (w - w_star) @ A @ (w - w_star)

    line_loss = least_squares(LINE["x"], LINE["y"])
    quad_paths, line_paths, projections, rows = {}, {}, {}, []
    for name in potentials:
        quad_paths[name] = descend(quadratic, START_2D, name, lr, n_steps).path
        line_paths[name] = descend(line_loss, START_2D, name, lr, n_steps).path
        projections[name] = bregman_projection(LINE["x"], LINE["y"], START_2D, name).w
        end = line_paths[name][-1]
        rows.append({"potential": name, "end_w1": end[0], "end_w2": end[1],
                     "projection_w1": projections[name][0], "projection_w2": projections[name][1],
                     "distance": float(np.linalg.norm(end - projections[name]))})
    return TwoDimensionalPaths(START_2D.copy(), quad_paths, line_paths, projections, pd.DataFrame(rows))


def implicit_bias_check(
    width: int, n_data: int, n_steps: int, lr: float, seed: int,
    potentials: Sequence[str] = (*TRAINED_POTENTIALS, "hypentropy:0.1"),
) -> pd.DataFrame:
    """Mirror descent (momentum :data:`MOMENTUM`) on a random underdetermined least-squares problem against
    the exact Bregman projection of its start.

    The inputs are standard normal over the square root of ``width``, the targets standard
    normal, the start log-normal in magnitude (median ``1/sqrt(width)``) with random signs.

    Returns
    -------
    pandas.DataFrame
        One row per potential: ``final_loss`` of the run and ``relative_distance``, the distance
        from the run's end to the projection over the projection's norm.
    """
    if n_data >= width:
        raise ValueError(f"the problem must be underdetermined: n_data={n_data} >= width={width}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_data, width)) / np.sqrt(width)
    y = rng.standard_normal(n_data)
    w0 = rng.lognormal(mean=np.log(1 / np.sqrt(width)), sigma=0.5, size=width) * rng.choice([-1, 1], size=width)
    rows = []
    for name in potentials:
        run = descend(least_squares(X, y), w0, name, lr=lr, n_steps=n_steps, momentum=MOMENTUM, record_every=n_steps)
        projection = bregman_projection(X, y, w0, name).w
        rows.append({"potential": name, "final_loss": run.losses[-1],
                     "relative_distance": float(np.linalg.norm(run.path[-1] - projection) / np.linalg.norm(projection))})
    return pd.DataFrame(rows)


@dataclass
class WeightHistograms:
    """Weights before and after learning under each geometry, with their summary statistics."""

    before: np.ndarray
    after: dict[str, np.ndarray]
    summary: pd.DataFrame  # one row per potential (and one for the start)


def weight_histograms(
    width: int, target_shift: float, seed: int, potentials: Sequence[str] = TRAINED_POTENTIALS
) -> WeightHistograms:
    """Fit one underdetermined regression from one log-normal start under each geometry.

    The start has log-normal magnitudes (median ``0.5/sqrt(width)``, log-spread 0.5) and random
    signs; there are ``floor(sqrt(width))`` standard normal data points; the targets are the
    start's predictions plus ``target_shift`` times their standard deviation times a standard
    normal draw, so learning must move the weights. The result of each geometry is its limit,
    the exact Bregman projection.

    Returns
    -------
    WeightHistograms
        ``summary`` has, per potential, ``sign_changed`` (share of weights whose sign changed or
        that reached zero: outside :func:`~synaptic_geometry.gaussianity.domain_mask`),
        ``log_skewness`` (skewness of log|w| over the non-zero weights) and ``skewness_se``
        (its standard error under normality, sqrt(6/n)).
    """
    rng = np.random.default_rng(seed)
    n = int(np.sqrt(width))
    X = rng.standard_normal((n, width)) / np.sqrt(width)
    before = rng.lognormal(mean=np.log(0.5 / np.sqrt(width)), sigma=0.5, size=width) * rng.choice([-1, 1], size=width)
    predictions = X @ before
    y = predictions + target_shift * predictions.std() * rng.standard_normal(n)
    after = {name: bregman_projection(X, y, before, name).w for name in potentials}

    def log_skew(w: np.ndarray) -> tuple[float, float]:
        logs = np.log(np.abs(w[w != 0]))
        return float(scipy.stats.skew(logs)), float(np.sqrt(6.0 / logs.size))

    rows = [{"potential": "start", "sign_changed": 0.0, **dict(zip(("log_skewness", "skewness_se"), log_skew(before)))}]
    for name in potentials:
        flipped = float(np.mean(~domain_mask(before, after[name])))
        rows.append({"potential": name, "sign_changed": flipped,
                     **dict(zip(("log_skewness", "skewness_se"), log_skew(after[name])))})
    return WeightHistograms(before, after, pd.DataFrame(rows))

