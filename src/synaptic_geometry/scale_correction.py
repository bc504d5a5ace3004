"""A Delta-CDF that allows for the row and column scale structure of a layer's dual change.

Why (derived; the deep-network chapter gives the argument in full): the gradient of a layer's
weight ``W_ij`` is a sum over data of (error of output unit ``i``) x (input ``j``). Under mirror
descent the dual change ``grad phi(W_after) - grad phi(W_before)`` is a sum of such gradients, so
each entry is approximately Gaussian, with a spread that factorises, ``sd_ij ~ r_i c_j``: an
output-unit scale times an input scale. Pooled over entries (and layers) with different scales,
the change is a *scale mixture* of Gaussians, heavy-tailed under any potential, so the plain
Delta-CDF penalises the right potential too. Dividing each entry by a row and a column scale
removes that structure; what it cannot remove is an entry-wise distortion, which is what a wrong
potential leaves: analysed under ``psi`` instead of ``phi``, the change is, to first order,
``psi''(w) / phi''(w)`` times the right one, a factor that varies from weight to weight with the
weight itself and is not a product of a row and a column factor.

The correction (:func:`rowcol_normalize`) is the alternating (Sinkhorn-like) normalisation of
second moments: divide every row by its root mean square, then every column by its root mean
square, and repeat until both are 1. A layer's change is read as a matrix with one row per output
unit (:func:`layer_matrix`): linear ``(out, in)``; convolution ``(out channel, in channel x kernel
position)``; a recurrent matrix ``(to, from)``.

Its limit: the scale of a column is estimated from the entries of that column. With few entries
per row or column (a small convolution has as few as 8 output channels) the normalised values are
bounded (``|x| <= sqrt(n)`` for a scale estimated from ``n`` values) and lighter-tailed than a
Gaussian, so compared with the standard normal even an exact Gaussian scores far above the plain
sampling floor, and a wrong potential whose distortion adds tails can score lower than the right one.

The remedy follows from an exact property: the correction is invariant to any row and column
rescaling, so under the model (Gaussian entries with a factorised spread) the corrected change has
*exactly* the distribution of a corrected standard Gaussian matrix of the same shape and mask. The
corrected statistic therefore compares the corrected change with that distribution (simulated,
``reference="corrected_gaussian"``, the default) instead of with the standard normal
(``reference="normal"``): the same area between distribution functions (a Wasserstein-1
distance), against the right null. Its own floor is computed the same way
(:func:`corrected_gaussian_floor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from synaptic_geometry.gaussianity import _candidate_potentials, _domain_problems, delta_cdf
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, Potential

__all__ = [
    "corrected_change",
    "corrected_delta_cdf",
    "corrected_gaussian_floor",
    "identify_corrected",
    "REFERENCES",
    "layer_matrix",
    "rowcol_normalize",
    "scale_mixture",
]


REFERENCES = ("corrected_gaussian", "normal")
REFERENCE_SIZE = 200_000  # at least this many simulated values in the corrected-Gaussian reference


def layer_matrix(values: np.ndarray) -> np.ndarray:
    """A layer's weights (or change) as a matrix: one row per output unit, the rest flattened.

    ``(out, in)`` stays as it is; a convolution ``(out, in, k1, k2, ...)`` becomes
    ``(out, in * k1 * k2 * ...)``, so a column is one (input channel, kernel position).
    """
    values = np.asarray(values)
    if values.ndim < 2:
        raise ValueError(f"a layer's weights need at least 2 dimensions (output units x inputs); got shape "
                         f"{values.shape}")
    return values.reshape(values.shape[0], -1)


def _rms(x: np.ndarray, count: np.ndarray, axis: int) -> np.ndarray:
    """Root mean square along ``axis`` over ``count`` masked-in entries (``x`` is zero outside the mask)."""
    rms = np.sqrt(np.square(x).sum(axis=axis) / count)
    return np.where(rms > 0, rms, 1.0)  # an empty or all-zero row/column is left as it is


def rowcol_normalize(matrix: np.ndarray, mask: np.ndarray | None = None, max_iter: int = 100,
                     tol: float = 1e-6) -> np.ndarray:
    """Divide rows and columns alternately by their root mean square until both are 1.

    Parameters
    ----------
    matrix
        A 2-D array (see :func:`layer_matrix`); float64 is used throughout.
    mask
        Boolean array of the same shape: the entries to use (others are ignored when estimating
        scales and returned as NaN). Default: all finite entries.
    max_iter, tol
        Stop after ``max_iter`` rounds or when every row and column scale is within ``tol`` of 1.

    Returns
    -------
    numpy.ndarray
        The normalised matrix (NaN outside the mask).
    """
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"rowcol_normalize needs a 2-D matrix; got shape {x.shape} (use layer_matrix)")
    if mask is not None and np.shape(mask) != x.shape:
        raise ValueError(f"mask shape {np.shape(mask)} differs from the matrix shape {x.shape}")
    mask = np.isfinite(x) if mask is None else np.asarray(mask, dtype=bool) & np.isfinite(x)
    if max_iter < 1 or not tol > 0:
        raise ValueError(f"need max_iter >= 1 and tol > 0; got {max_iter}, {tol}")
    x = np.where(mask, x, 0.0)  # stays zero outside the mask, so sums over all entries are sums over the mask
    row_count, col_count = np.maximum(mask.sum(axis=1), 1), np.maximum(mask.sum(axis=0), 1)
    for _ in range(max_iter):
        rows = _rms(x, row_count, axis=1)
        x = x / rows[:, None]
        cols = _rms(x, col_count, axis=0)
        x = x / cols[None, :]
        if max(np.abs(rows - 1).max(), np.abs(cols - 1).max()) < tol:
            break
    return np.where(mask, x, np.nan)


def _layers(values: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(values, Mapping):
        values = list(values.values())
    elif isinstance(values, np.ndarray):
        return [values]
    return [None if v is None else np.asarray(v) for v in values]


def corrected_change(changes, masks=None, max_iter: int = 100, tol: float = 1e-6) -> np.ndarray:
    """Every layer's change normalised by :func:`rowcol_normalize`, pooled into one flat array.

    ``changes`` is one layer (an array), a list of layers or a dict name -> layer (each with at
    least 2 dimensions); ``masks`` the same structure of booleans (entries to use) or None.
    Entries outside a mask are left out of the result.
    """
    changes, masks = _shapes_and_masks(changes, masks)
    pooled = []
    for change, mask in zip(changes, masks):
        matrix = layer_matrix(change)
        m = None if mask is None else layer_matrix(np.asarray(mask, dtype=bool))
        normalised = rowcol_normalize(matrix, m, max_iter, tol)
        pooled.append(normalised[np.isfinite(normalised)])
    return np.concatenate(pooled)


def _standardise(values: np.ndarray, centered: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if centered:
        values = values - values.mean()
    scale = np.sqrt(np.mean(values * values))
    if not scale > 0:
        raise ValueError("the change is zero everywhere; its Delta-CDF is undefined")
    return np.sort(values / scale)


def distance_between(a_sorted: np.ndarray, b_sorted: np.ndarray) -> float:
    """Area between the empirical distribution functions of two sorted samples (Wasserstein-1), exact."""
    points = np.sort(np.concatenate([a_sorted, b_sorted]))
    fa = np.searchsorted(a_sorted, points[:-1], side="right") / a_sorted.size
    fb = np.searchsorted(b_sorted, points[:-1], side="right") / b_sorted.size
    return float(np.sum(np.abs(fa - fb) * np.diff(points)))


def _shapes_and_masks(changes, masks):
    changes = _layers(changes)
    masks = [None] * len(changes) if masks is None else _layers(masks)
    if len(masks) != len(changes):
        raise ValueError(f"{len(masks)} masks for {len(changes)} layers")
    return changes, masks


def corrected_reference(shapes: Sequence[tuple[int, ...]], masks=None, seed: int = 0,
                        size: int = REFERENCE_SIZE, centered: bool = False) -> np.ndarray:
    """Sorted, standardised values of corrected standard Gaussian layers of the given shapes and masks,
    repeated until at least ``size`` values (the null distribution of the corrected change)."""
    shapes = [tuple(int(k) for k in s) for s in shapes]
    masks = [None] * len(shapes) if masks is None else _layers(masks)
    rng = np.random.default_rng(seed)
    pooled, total = [], 0
    while total < size or not pooled:
        values = corrected_change([rng.standard_normal(shape) for shape in shapes], masks)
        pooled.append(values)
        total += values.size
    return _standardise(np.concatenate(pooled), centered)


def corrected_delta_cdf(changes, masks=None, centered: bool = False, reference: str = "corrected_gaussian",
                        seed: int = 0, reference_size: int = REFERENCE_SIZE) -> float:
    """The Delta-CDF of :func:`corrected_change`, against the corrected-Gaussian null or the standard normal.

    ``reference="corrected_gaussian"`` (default): the area between the distribution function of the
    standardised corrected change and that of corrected standard Gaussian layers of the same
    shapes and masks (:func:`corrected_reference`, seeded by ``seed``); ``"normal"``: the plain
    :func:`~synaptic_geometry.gaussianity.delta_cdf` of the corrected change.
    """
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; known: {', '.join(REFERENCES)}")
    changes, masks = _shapes_and_masks(changes, masks)
    values = corrected_change(changes, masks)
    if reference == "normal":
        return delta_cdf(values, centered=centered)
    null = corrected_reference([c.shape for c in changes], masks, seed, reference_size, centered)
    return distance_between(_standardise(values, centered), null)


def corrected_gaussian_floor(shapes: Sequence[tuple[int, ...]], masks=None, n_samples: int = 30, seed: int = 0,
                             spread: float = 0.0, centered: bool = False, reference: str = "corrected_gaussian",
                             reference_size: int = REFERENCE_SIZE, null: np.ndarray | None = None) -> np.ndarray:
    """The null of :func:`corrected_delta_cdf`: Gaussian layers of the given shapes (and masks),
    scored the same way (same correction, same reference).

    ``spread`` > 0 multiplies each Gaussian layer by log-normal row and column scales
    (:func:`scale_mixture`), a row/column scale mixture of Gaussians; the correction makes it score
    exactly like ``spread = 0``. Returns ``n_samples`` values; the same ``seed`` gives the same values.
    ``null``: the reference already computed by :func:`corrected_reference` for these shapes, masks
    and centring (e.g. the one the statistic was scored against), so it is not simulated again.
    """
    if n_samples < 1 or spread < 0:
        raise ValueError(f"need n_samples >= 1 and spread >= 0; got {n_samples}, {spread}")
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; known: {', '.join(REFERENCES)}")
    shapes = [tuple(int(k) for k in s) for s in shapes]
    masks = [None] * len(shapes) if masks is None else _layers(masks)
    null = _checked_null(null, reference)
    if null is None and reference != "normal":
        null = corrected_reference(shapes, masks, seed, reference_size, centered)
    rng = np.random.default_rng([seed, 1])
    values = []
    for _ in range(int(n_samples)):
        change = corrected_change([scale_mixture(shape, spread, rng) for shape in shapes], masks)
        values.append(delta_cdf(change, centered) if null is None
                      else distance_between(_standardise(change, centered), null))
    return np.asarray(values)


def _checked_null(null: np.ndarray | None, reference: str) -> np.ndarray | None:
    """A caller's precomputed reference (sorted values of :func:`corrected_reference`), checked."""
    if null is None:
        return None
    if reference == "normal":
        raise ValueError("a precomputed null goes with reference='corrected_gaussian', not 'normal'")
    null = np.asarray(null, dtype=np.float64)
    if null.ndim != 1 or null.size < 2 or np.any(np.diff(null) < 0):
        raise ValueError("null must be the sorted 1-D output of corrected_reference")
    return null


def scale_mixture(shape: tuple[int, ...], spread: float, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian array whose spread factorises: ``N(0, 1) * exp(spread * a_i) * exp(spread * b_j)``
    over rows ``i`` and columns ``j`` of :func:`layer_matrix` (``a``, ``b`` standard normal)."""
    rows, cols = shape[0], int(np.prod(shape[1:]))
    matrix = rng.standard_normal((rows, cols))
    matrix *= np.exp(spread * rng.standard_normal(rows))[:, None] * np.exp(spread * rng.standard_normal(cols))[None, :]
    return matrix.reshape(shape)


def identify_corrected(w_before, w_after, candidates: Sequence[str | Potential] = CANDIDATE_POTENTIALS,
                       masks=None, centered: bool = False, reference: str = "corrected_gaussian",
                       seed: int = 0, null: np.ndarray | None = None) -> pd.DataFrame:
    """Corrected Delta-CDF of the dual change under each candidate, best first.

    ``w_before`` and ``w_after`` are one layer, a list of layers or a dict name -> layer (each at
    least 2-D: output units first); ``masks`` the entries to analyse (e.g. weights that received a
    gradient and kept their sign; every masked-in entry must be inside every candidate's domain).
    ``null``: the corrected-Gaussian reference already computed (:func:`corrected_reference` with the
    same shapes, masks, ``seed`` and centring), to share it with :func:`corrected_gaussian_floor`.
    Returns columns ``candidate``, ``delta_cdf`` (of the corrected change, against ``reference``;
    every candidate is compared with the same simulated null), ``n_weights``.
    """
    potentials = _candidate_potentials(candidates)
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; known: {', '.join(REFERENCES)}")
    before, after = _layers(w_before), _layers(w_after)
    if len(before) != len(after) or any(b.shape != a.shape for b, a in zip(before, after)):
        raise ValueError("w_before and w_after must hold the same layers with the same shapes")
    masks = [np.ones(b.shape, dtype=bool) for b in before] if masks is None else \
        [np.asarray(m, dtype=bool) for m in _layers(masks)]
    null = _checked_null(null, reference)
    if null is None and reference != "normal":
        null = corrected_reference([b.shape for b in before], masks, seed, centered=centered)
    rows = []
    for potential in potentials:
        changes = []
        for b, a, m in zip(before, after, masks):
            b64, a64 = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
            problems = _domain_problems(b64[m], a64[m], potential)
            if problems:
                raise ValueError(f"candidate {potential.name}: {problems}")
            change = np.zeros_like(b64)
            change[m] = potential.grad(a64[m]) - potential.grad(b64[m])
            changes.append(change)
        values = corrected_change(changes, masks)
        score = delta_cdf(values, centered) if null is None else distance_between(_standardise(values, centered), null)
        rows.append({"candidate": potential.name, "delta_cdf": score,
                     "n_weights": int(sum(m.sum() for m in masks))})
    table = pd.DataFrame(rows, columns=["candidate", "delta_cdf", "n_weights"])
    return table.sort_values("delta_cdf", kind="stable").reset_index(drop=True)
