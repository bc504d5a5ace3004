"""The scale-structure-aware statistic for measured synapses: the change arranged as a
postsynaptic x presynaptic matrix and scored by :mod:`synaptic_geometry.scale_correction`.

A gradient-like change of the synapse from neuron ``j`` onto neuron ``i`` has a spread that
factorises, ``sd_ij ~ r_i c_j`` (a postsynaptic times a presynaptic scale). Pooled over synapses
of neurons with different scales the change is a scale mixture of Gaussians, heavy-tailed under
any potential. The correction divides the matrix of dual changes (rows: postsynaptic neurons,
columns: presynaptic neurons, only the observed pairs) alternately by its row and column root mean
squares, and compares the result with corrected Gaussian matrices of the same shape and mask.

Its limits: it assumes that factorised spread; each neuron's scale is estimated from that
neuron's own synapses, so with few synapses per neuron the scales are noisy and the statistic can
name the wrong potential (it did on the small convolutional layers of the deep-network chapter);
it needs neuron ids and one value per (presynaptic, postsynaptic) pair; the corrected scores have
no bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from synaptic_geometry.identify.errors import MeasurementError, show
from synaptic_geometry.potentials import Potential, get_potential
from synaptic_geometry.scale_correction import corrected_gaussian_floor, identify_corrected, scale_mixture

__all__ = ["N_CORRECTED_FLOOR", "ScaleCorrection", "neuron_matrix", "scale_corrected", "simulate_neuron_synapses"]

#: Corrected Gaussian matrices of the data's shape and mask whose scores make the corrected floor.
N_CORRECTED_FLOOR = 100


@dataclass
class ScaleCorrection:
    """The corrected statistic of one data set; ``table`` (candidate, delta_cdf) is sorted best first."""

    table: pd.DataFrame
    best: str
    runner_up: str
    margin: float                      # corrected delta_cdf(runner_up) - delta_cdf(best)
    floor: tuple[float, float]         # corrected Gaussian floor: median, quantile at the confidence level
    n_floor: int
    n_post: int                        # rows: postsynaptic neurons
    n_pre: int                         # columns: presynaptic neurons
    per_post: float                    # median synapses per postsynaptic neuron
    per_pre: float                     # median synapses per presynaptic neuron

    def summary_lines(self, level: str) -> list[str]:
        return [
            f"scale correction (the column 'corrected', no bootstrap): each candidate's change divided by "
            f"postsynaptic and presynaptic RMS in a {self.n_post} postsynaptic x {self.n_pre} presynaptic matrix, "
            f"median {self.per_post:g} synapses per postsynaptic and {self.per_pre:g} per presynaptic neuron",
            f"corrected Gaussian floor ({self.n_floor} corrected Gaussian matrices of the same shape and mask): "
            f"median {self.floor[0]:.4f}, {level} below {self.floor[1]:.4f}",
            f"corrected best: {self.best} (margin to {self.runner_up}: {self.margin:.4f}); it assumes a spread that "
            "factorises over presynaptic and postsynaptic neurons, and with few synapses per neuron the scales "
            "are noisy",
        ]

    def to_dict(self) -> dict:
        return {
            "table": self.table.to_dict(orient="records"), "best": self.best, "runner_up": self.runner_up,
            "margin": self.margin, "floor_median": self.floor[0], "floor_high": self.floor[1],
            "n_floor": self.n_floor, "n_post": self.n_post, "n_pre": self.n_pre,
            "synapses_per_post": self.per_post, "synapses_per_pre": self.per_pre,
        }


def neuron_matrix(pre: Sequence, post: Sequence) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Row (postsynaptic) and column (presynaptic) index of each synapse, and the matrix shape.

    Neurons are numbered in sorted order of their ids, so the order of the rows does not matter; each
    (pre, post) pair may occur once.
    """
    pre, post = [str(x) for x in pre], [str(x) for x in post]
    if len(pre) != len(post):
        raise MeasurementError(f"{len(pre)} presynaptic ids for {len(post)} postsynaptic ids; give one of each per synapse")
    cols, col_names = pd.factorize(pd.Series(pre, dtype=object), sort=True)
    rows, row_names = pd.factorize(pd.Series(post, dtype=object), sort=True)
    pairs = pd.Series(list(zip(pre, post)))
    repeated = pairs[pairs.duplicated()].unique()
    if len(repeated):
        raise MeasurementError(f"neuron pairs (pre, post) occur more than once: {show(repeated)}; the scale "
                               "correction needs one value per pair")
    return rows.astype(np.int64), cols.astype(np.int64), (len(row_names), len(col_names))


def scale_corrected(before: np.ndarray, after: np.ndarray, pre: Sequence, post: Sequence,
                    potentials: Sequence[Potential], centered: bool, seed: int, confidence: float,
                    n_floor: int = N_CORRECTED_FLOOR) -> ScaleCorrection:
    """The corrected Delta-CDF of each candidate and its floor, for synapses ``pre[k] -> post[k]``.

    The values are arranged as a postsynaptic x presynaptic matrix with a mask of the observed
    pairs, and scored by :func:`~synaptic_geometry.scale_correction.identify_corrected` against
    corrected Gaussian matrices of the same shape and mask (seeded by ``seed``), whose own scores
    (:func:`~synaptic_geometry.scale_correction.corrected_gaussian_floor`) make the floor.
    """
    rows, cols, shape = neuron_matrix(pre, post)
    per_row, per_col = np.bincount(rows, minlength=shape[0]), np.bincount(cols, minlength=shape[1])
    for counts, side in ((per_row, "postsynaptic"), (per_col, "presynaptic")):
        if counts.max() < 2:
            raise MeasurementError(
                f"every {side} neuron has a single synapse: its scale would be estimated from that synapse alone "
                "and the corrected change would keep only signs; the scale correction needs neurons with "
                "several synapses")
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    w_before, w_after = np.ones(shape), np.ones(shape)  # entries outside the mask are never used
    w_before[rows, cols], w_after[rows, cols] = before, after
    try:
        table = identify_corrected(w_before, w_after, list(potentials), masks=[mask], centered=centered, seed=seed)
    except ValueError as error:
        raise MeasurementError(f"scale correction: {error}") from None
    floor = corrected_gaussian_floor([shape], [mask], n_samples=n_floor, seed=seed, centered=centered)
    table = table[["candidate", "delta_cdf"]]
    return ScaleCorrection(
        table=table, best=str(table["candidate"].iloc[0]), runner_up=str(table["candidate"].iloc[1]),
        margin=float(table["delta_cdf"].iloc[1] - table["delta_cdf"].iloc[0]),
        floor=(float(np.median(floor)), float(np.quantile(floor, confidence))), n_floor=int(n_floor),
        n_post=shape[0], n_pre=shape[1], per_post=float(np.median(per_row)), per_pre=float(np.median(per_col)),
    )


def simulate_neuron_synapses(truth: str, rng: np.random.Generator, n_post: int = 30, n_pre: int = 40,
                             density: float = 0.6, spread: float = 0.6, rel_change: float = 0.3) -> pd.DataFrame:
    """Synapses ``pre -> post`` whose dual change under ``truth`` is Gaussian with a spread that factorises.

    A random share ``density`` of the ``n_post x n_pre`` neuron pairs has a synapse; sizes start
    log-normal (median about 0.6, log-sd 0.5); the dual change is
    :func:`~synaptic_geometry.scale_correction.scale_mixture` (log-normal postsynaptic and presynaptic
    scales with log-sd ``spread``), scaled to ``rel_change`` times the spread of the dual
    coordinates. Returns columns ``pre``, ``post``, ``before``, ``after``, one row per synapse in random order.
    """
    if not 0 < density <= 1 or spread < 0 or not rel_change > 0 or min(n_post, n_pre) < 2:
        raise ValueError(f"need 0 < density <= 1, spread >= 0, rel_change > 0 and at least 2 neurons per side; got "
                         f"{density}, {spread}, {rel_change}, {n_post} x {n_pre}")
    mask = rng.random((n_post, n_pre)) < density
    w0 = np.exp(rng.normal(-0.5, 0.5, (n_post, n_pre)))
    phi = get_potential(truth)
    step = scale_mixture((n_post, n_pre), spread, rng)
    dual = phi.grad(w0)
    w1 = phi.inv_grad(dual + rel_change * np.std(dual[mask]) * step / np.std(step[mask]), np.sign(w0))
    post, pre = np.nonzero(mask)
    order = rng.permutation(post.size)
    return pd.DataFrame({"pre": [f"n{j}" for j in pre[order]], "post": [f"m{i}" for i in post[order]],
                         "before": w0[mask][order], "after": w1[mask][order]})
