"""How Gaussian is a weight change in a given geometry? Delta-CDF, change magnitude, identification.

The paper's test (Pogodin et al., ICLR 2024): under mirror descent with potential ``phi``, the
total change in the *dual* space, ``grad phi(w_after) - grad phi(w_before)``, is close to
Gaussian. So for each candidate potential we compute that change and measure how far it is from
a Gaussian; the candidate with the most Gaussian change is the inferred geometry.

Delta-CDF
    The change is divided by its standard deviation, ``z = change / std(change)`` (``std`` is
    ``np.std``: about the mean, dividing by n; the mean itself is *not* subtracted, as in the
    published code; ``centered=True`` subtracts it first). Delta-CDF is then::

        integral over the real line of |F_n(x) - Phi(x)| dx

    with ``F_n`` the empirical CDF of ``z`` and ``Phi`` the standard normal CDF. It is the
    Wasserstein-1 distance between the sample and N(0, 1).

    :func:`delta_cdf` computes it exactly from the sorted values in O(n log n);
    :func:`delta_cdf_grid` is the published discretisation (1000 points on [-5, 5]) for
    comparison.

Inputs
    Changes and weights may be numpy arrays, torch tensors (detached and moved to the CPU), or
    lists/tuples of them (each flattened, then concatenated in order). Everything is computed in
    float64.

Weights outside a potential's domain
    Negative entropy has no dual coordinate at an exact zero (it is ``-inf``) and exponentiated
    gradient never changes a weight's sign. :func:`dual_change` (and so :func:`identify`)
    therefore refuses zeros and sign changes under ``negative_entropy`` with an error that counts
    them; :func:`domain_mask` gives the weights that every candidate can analyse, so that all
    candidates are compared on the same weights. It is the package's one sign/domain mask: a zero
    has no sign, so a weight that is zero before or after (even one that stays at zero) is outside
    a sign-keeping domain, and ``~domain_mask(w_before, w_after)`` counts the weights that changed
    sign or touched zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtr, ndtri

from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, Potential, get_potential, require_finite

__all__ = [
    "as_flat_array",
    "change_magnitude",
    "delta_cdf",
    "delta_cdf_batch",
    "delta_cdf_grid",
    "domain_mask",
    "dual_change",
    "gaussian_floor",
    "identify",
]


ACCEPTED = "a numpy array, a torch tensor, or a list/tuple of them"
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_ROUNDING = 1e-13  # a spread below this fraction of the largest |value| is rounding noise

Weights = Any  # np.ndarray | torch.Tensor | list/tuple of them


# ---------------------------------------------------------------------------------------------
# input handling


def _is_container(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor)) or _is_container(x)


def as_flat_array(x: Weights, what: str = "values") -> np.ndarray:
    """``x`` as a flat float64 numpy array (lists/tuples of arrays are concatenated in order).

    No copy is made when ``x`` already is a contiguous float64 numpy array.
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{what} must be real numbers, got a tensor of dtype {x.dtype}")
        return x.detach().cpu().to(torch.float64).numpy().ravel()
    if _is_container(x):
        if any(_is_array(part) for part in x):
            parts = [as_flat_array(part, what) for part in x]
            return np.concatenate(parts) if parts else np.empty(0)
    try:
        arr = np.asarray(x)
    except ValueError as err:  # ragged nested lists of numbers
        raise TypeError(f"{what} must be {ACCEPTED}; could not read it as an array: {err}") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{what} must be real numbers ({ACCEPTED}), got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float64).ravel()


def _shape_of(x: Weights) -> Any:
    """A comparable description of the shape(s) of ``x``: a tuple, or a list of them."""
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if _is_container(x) and any(_is_array(part) for part in x):
        return [_shape_of(part) for part in x]
    return np.shape(x)


def _describe_shape(shape: Any) -> str:
    return f"a list of {len(shape)} arrays" if isinstance(shape, list) else f"shape {shape}"


def _check_same_shape(w_before: Weights, w_after: Weights) -> None:
    before, after = _shape_of(w_before), _shape_of(w_after)
    if before == after:
        return
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        i = next(i for i, (b, a) in enumerate(zip(before, after)) if b != a)
        detail = f"element {i} has shape {before[i]} before and {after[i]} after"
    else:
        detail = f"w_before is {_describe_shape(before)}, w_after is {_describe_shape(after)}"
    raise ValueError(
        f"w_before and w_after must have the same shape(s) (the same weights before and after "
        f"learning): {detail}"
    )


def _paired(w_before: Weights, w_after: Weights) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 copies-or-views of both weight sets, checked for shape, size and finiteness."""
    _check_same_shape(w_before, w_after)
    before = as_flat_array(w_before, "w_before")
    after = as_flat_array(w_after, "w_after")
    if before.size == 0:
        raise ValueError("w_before and w_after are empty; need weights to compare")
    require_finite(before, "w_before")
    require_finite(after, "w_after")
    return before, after


# ---------------------------------------------------------------------------------------------
# dual change and magnitude


def _domain_problems(before: np.ndarray, after: np.ndarray, potential: Potential) -> str:
    """Empty if every weight is inside the potential's domain, else what is wrong (with counts)."""
    if not potential.keeps_sign:
        return ""
    outside = ~_in_domain(before, after, keeps_sign=True)
    if not outside.any():
        return ""
    zeros_before = int(np.count_nonzero(before == 0))
    zeros_after = int(np.count_nonzero(after == 0))
    flips = int(np.count_nonzero(outside & (before != 0) & (after != 0)))
    return (
        f"{zeros_before} exact zero(s) in w_before, {zeros_after} in w_after and {flips} sign "
        f"change(s) out of {before.size} weights are outside the domain of {potential.name} "
        "(a zero has dual coordinate -inf; this geometry never changes a weight's sign). "
        "Accepted: non-zero weights with the same sign before and after. Drop the others first, "
        "e.g. keep = domain_mask(w_before, w_after) and analyse as_flat_array(w_before)[keep], "
        "as_flat_array(w_after)[keep]"
    )


def _dual_change_flat(before: np.ndarray, after: np.ndarray, potential: Potential) -> np.ndarray:
    problems = _domain_problems(before, after, potential)
    if problems:
        raise ValueError(problems)
    return potential.grad(after) - potential.grad(before)


def dual_change(w_before: Weights, w_after: Weights, potential: str | Potential) -> np.ndarray:
    """``grad phi(w_after) - grad phi(w_before)``, flattened, float64."""
    potential = get_potential(potential)
    before, after = _paired(w_before, w_after)
    return _dual_change_flat(before, after, potential)


def _magnitude_flat(change: np.ndarray, before: np.ndarray, potential: Potential) -> float:
    reference = float(np.linalg.norm(potential.grad(before)))
    if reference == 0:
        raise ValueError(
            f"grad phi(w_before) is zero under {potential.name} (all weights at the potential's "
            "minimum), so the relative change magnitude is undefined"
        )
    return float(np.linalg.norm(change)) / reference


def change_magnitude(w_before: Weights, w_after: Weights, potential: str | Potential) -> float:
    """Relative size of the dual change: ``||grad phi(w_after) - grad phi(w_before)|| / ||grad phi(w_before)||``."""
    potential = get_potential(potential)
    before, after = _paired(w_before, w_after)
    return _magnitude_flat(_dual_change_flat(before, after, potential), before, potential)


# ---------------------------------------------------------------------------------------------
# Delta-CDF


def _standardized_sorted(change: Weights, centered: bool) -> np.ndarray:
    """The sorted change divided by its standard deviation (minus its mean first if centred)."""
    z = np.sort(as_flat_array(change, "change"))  # a fresh array we may modify in place
    if z.size < 2:
        raise ValueError(f"change has {z.size} value(s); Delta-CDF needs at least 2")
    return _standardize_sorted_rows(z[None, :], centered, "change")[0]


def _standardize_sorted_rows(z: np.ndarray, centered: bool, what: str, row_ids: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``z`` (each sorted, at least 2 values) divided by their standard deviations, in place.

    Raises ValueError, naming ``what`` (and the row when there are several), for a row with a
    non-finite value, a constant row, or one that overflows when divided. ``row_ids`` number the
    rows in messages (default 0, 1, ...).
    """
    rows = z.shape[0]

    def name(r: int) -> str:
        if row_ids is not None:
            return f"{what} row {int(row_ids[r])}"
        return what if rows == 1 else f"{what} row {r}"

    finite = np.isfinite(z[:, 0]) & np.isfinite(z[:, -1])  # sorting puts -inf first, inf and nan last
    if not finite.all():
        r = int(np.flatnonzero(~finite)[0])
        require_finite(z[r], f"values of {name(r)}")
    std = np.std(z, axis=1)
    constant = std <= _ROUNDING * np.maximum(-z[:, 0], z[:, -1])
    if constant.any():
        r = int(np.flatnonzero(constant)[0])
        raise ValueError(
            f"{name(r)} is constant (all {z.shape[1]} values equal {z[r, 0]!r}, up to a spread of {std[r]:.3g} "
            "at the level of rounding), so it cannot be divided by its standard deviation; "
            "Delta-CDF needs values that differ"
        )
    if centered:
        z -= z.mean(axis=1, keepdims=True)
    z /= std[:, None]
    finite = np.isfinite(z[:, 0]) & np.isfinite(z[:, -1])
    if not finite.all():
        r = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{name(r)} is too large relative to its spread: change / std overflowed")
    return z


def _normal_quantiles(n: int) -> np.ndarray:
    """``t_k = Phi^{-1}(k / n)`` for k = 0..n (t_0 = -inf, t_n = inf), using t_{n-k} = -t_k."""
    t = np.empty(n + 1)
    half = n // 2
    lower = ndtri(np.arange(1, half + 1) / n)
    t[1 : half + 1] = lower
    t[n - half : n] = -lower[::-1]
    t[0], t[n] = -np.inf, np.inf
    return t


def _cell_terms(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For samples of size n: the normal quantiles ``t`` (n + 1), ``h_k = phi(t_k)`` (n + 1) and
    the mean normal quantile of each cell, ``m_k = n (h_{k-1} - h_k)`` (n)."""
    t = _normal_quantiles(n)
    h = np.square(t)
    h *= -0.5
    np.exp(h, out=h)
    h *= _INV_SQRT_2PI
    mean = np.subtract(h[:-1], h[1:])
    mean *= n
    return t, h, mean


def _delta_cdf_sorted(z: np.ndarray) -> float:
    """Exact Delta-CDF of sorted values ``z`` (already standardised).

    In quantile space the same area is ``integral_0^1 |Q_n(u) - Phi^{-1}(u)| du`` with ``Q_n = z_k``
    on the cell ``((k-1)/n, k/n]``. Since ``-phi(Phi^{-1}(u))`` is an antiderivative of
    ``Phi^{-1}(u)``, the integral of ``z_k - Phi^{-1}`` over cell k is ``(z_k - m_k) / n`` with
    ``m_k = n (phi(t_{k-1}) - phi(t_k))``, the mean normal quantile over the cell. When the sign
    of the integrand is constant on the cell (``z_k`` outside ``(t_{k-1}, t_k)``), the cell
    contributes ``|z_k - m_k| / n``; otherwise the cell is split at ``u* = Phi(z_k)``. The
    unbounded tails are the first and last cells and need no special case; ties just give
    neighbouring cells with equal ``z_k``.
    """
    return float(_delta_cdf_sorted_rows(z[None, :], _cell_terms(z.size))[0])


def _delta_cdf_sorted_rows(z: np.ndarray, terms: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """:func:`_delta_cdf_sorted` of every row of ``z`` (rows x n), with ``terms = _cell_terms(n)``."""
    rows, n = z.shape
    t, h, mean = terms
    crossing_rows, crossing = np.nonzero((z > t[:-1]) & (z < t[1:]))
    gap = mean - z  # m_k - z_k
    np.abs(gap, out=gap)
    total = gap.sum(axis=1)
    if crossing.size:
        zc = z[crossing_rows, crossing]
        k = crossing + 1.0
        nu = np.clip(n * ndtr(zc), k - 1, k)  # n u*, kept inside the cell against rounding
        phi_z = np.exp(-0.5 * zc * zc) * _INV_SQRT_2PI
        split = zc * (2 * nu - (2 * k - 1)) + n * (2 * phi_z - h[crossing] - h[crossing + 1])
        total += np.bincount(crossing_rows, weights=split - gap[crossing_rows, crossing], minlength=rows)
    return total / n


def delta_cdf(change: Weights, centered: bool = False) -> float:
    """Exact Delta-CDF: integral over the real line of ``|F_n(x) - Phi(x)|`` for ``z = change / std``.

    ``std`` is ``np.std(change)`` (about the mean, dividing by n). The mean is not subtracted
    unless ``centered=True``: the uncentred form is what the published code reports. (The
    published code used torch's ``std``, which divides by n - 1; that rescales z by
    ``sqrt((n - 1) / n)``, an O(1/n) difference.) Computed from the sorted values in
    O(n log n), with no truncation of the tails and no grid; see ``_delta_cdf_sorted``.
    For many changes at once, :func:`delta_cdf_batch`.
    """
    return _delta_cdf_sorted(_standardized_sorted(change, centered))


def delta_cdf_batch(changes: np.ndarray, mask: np.ndarray | None = None, centered: bool = False) -> np.ndarray:
    """:func:`delta_cdf` of every row of ``changes`` (rows x n), with one sort of all rows.

    Parameters
    ----------
    changes
        A 2-D array; each row is one change (float64 is used).
    mask
        Optional boolean array of the same shape: the values of a row that belong to its change
        (rows may then hold different numbers of values, at least 2 each; the other entries are
        ignored, whatever they hold). None: every value counts.
    centered
        As for :func:`delta_cdf`.

    Returns
    -------
    numpy.ndarray
        One Delta-CDF per row, equal (to rounding) to ``delta_cdf(row[row_mask])``. Rows with equal
        numbers of values share the normal quantiles, so many rows cost little more than their
        sort. Errors as for :func:`delta_cdf`, naming the row.
    """
    changes = np.asarray(changes)
    if changes.ndim != 2 or changes.dtype.kind not in "iuf":
        raise ValueError(f"changes must be a 2-D array of real numbers (rows x values), got shape {changes.shape} "
                         f"and dtype {changes.dtype}")
    rows, n = changes.shape
    if mask is None:
        if n < 2:
            raise ValueError(f"each change needs at least 2 values for Delta-CDF, got {n}")
        z = np.sort(changes.astype(np.float64), axis=1)
        return _delta_cdf_sorted_rows(_standardize_sorted_rows(z, centered, "change", np.arange(rows)), _cell_terms(n))
    mask = np.asarray(mask)
    if mask.shape != changes.shape or mask.dtype != bool:
        raise ValueError(f"mask must be a boolean array of the changes' shape {changes.shape}, got "
                         f"{mask.dtype} {mask.shape}")
    counts = mask.sum(axis=1)
    if rows and counts.min() < 2:
        r = int(np.argmin(counts))
        raise ValueError(f"change row {r} has {int(counts[r])} value(s) in the mask; Delta-CDF needs at least 2")
    # values outside the mask sort after every value inside it; a non-finite value inside is reported
    z = np.where(mask, changes, np.inf)
    inside_bad = mask & ~np.isfinite(changes)
    if inside_bad.any():
        r = int(np.flatnonzero(inside_bad.any(axis=1))[0])
        require_finite(changes[r][mask[r]], f"values of change row {r}")
    z.sort(axis=1)
    out = np.empty(rows)
    for m in np.unique(counts):
        members = np.flatnonzero(counts == m)
        block = np.ascontiguousarray(z[members, :m])
        standardized = _standardize_sorted_rows(block, centered, "change", row_ids=members)
        out[members] = _delta_cdf_sorted_rows(standardized, _cell_terms(int(m)))
    return out


def gaussian_floor(n: int, n_samples: int = 30, seed: int = 0, centered: bool = False) -> np.ndarray:
    """The null of the Delta-CDF: its values on ``n_samples`` exact Gaussian samples of size ``n``.

    A change of ``n`` values that is truly Gaussian still scores about ``1.1 / sqrt(n)`` (the
    sampling floor), so a Delta-CDF means something only beside this distribution. The same
    ``seed`` gives the same samples.

    Parameters
    ----------
    n
        Size of each sample (the number of values in the change being judged), at least 2.
    n_samples
        Number of independent Gaussian samples, at least 1.
    seed
        Seed of ``numpy.random.default_rng``.
    centered
        Score with the centred statistic, as :func:`delta_cdf` does when asked.

    Returns
    -------
    numpy.ndarray
        ``n_samples`` Delta-CDF values, in the order drawn.
    """
    for name, value, least in (("n", n, 2), ("n_samples", n_samples, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    rng = np.random.default_rng(seed)  # the rows are the samples one standard_normal(n) call at a time gives
    return delta_cdf_batch(rng.standard_normal((int(n_samples), int(n))), centered=centered)


def delta_cdf_grid(
    change: Weights, centered: bool = False, lo: float = -5.0, hi: float = 5.0, n: int = 1000
) -> float:
    """The published discretisation of Delta-CDF, for comparison with :func:`delta_cdf`.

    The empirical CDF (fraction of values strictly below x, as published) is evaluated on
    ``np.linspace(lo, hi, n)`` and ``sum(|F_n - Phi|) * dx`` is returned, exactly the published
    rectangle sum (not the trapezoid rule). Values outside [lo, hi] are ignored. Standardisation
    as in :func:`delta_cdf`.
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"need finite lo < hi for the grid, got lo={lo}, hi={hi}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n (number of grid points) must be an integer >= 2, got {n!r}")
    z = _standardized_sorted(change, centered)
    grid = np.linspace(lo, hi, n)
    ecdf = np.searchsorted(z, grid, side="left") / z.size
    return float(np.abs(ecdf - ndtr(grid)).sum() * (grid[1] - grid[0]))


# ---------------------------------------------------------------------------------------------
# identification


def _candidate_potentials(candidates: Sequence[str | Potential]) -> list[Potential]:
    if isinstance(candidates, (str, Potential)):
        candidates = [candidates]
    potentials = []
    for spec in candidates:
        try:
            potentials.append(get_potential(spec))
        except (ValueError, TypeError) as err:
            raise ValueError(f"unknown candidate {spec!r}: {err}") from None
    if not potentials:
        raise ValueError(f"no candidates given; e.g. candidates={CANDIDATE_POTENTIALS}")
    names = [p.name for p in potentials]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate candidate(s) {duplicates}; give each potential once")
    return potentials


def _in_domain(before: np.ndarray, after: np.ndarray, keeps_sign: bool) -> np.ndarray:
    """:func:`domain_mask` of flat float arrays: finite, and if ``keeps_sign`` non-zero with one sign."""
    keep = np.isfinite(before) & np.isfinite(after)
    if keeps_sign:  # sign(before) is +-1 here, so an equal sign(after) is non-zero too
        keep &= (before != 0) & (np.sign(before) == np.sign(after))
    return keep


def domain_mask(
    w_before: Weights, w_after: Weights, candidates: Sequence[str | Potential] = CANDIDATE_POTENTIALS
) -> np.ndarray:
    """Boolean mask over the flattened weights: True where every candidate can analyse the weight.

    The package's one sign/domain mask. Apply it to ``as_flat_array(w_before)`` and
    ``as_flat_array(w_after)`` (for a single array, ``.reshape(w_before.shape)`` gives the
    array's shape).

    Parameters
    ----------
    w_before, w_after
        The same weights before and after learning (same shape(s)).
    candidates
        The potentials to be compared. With a sign-keeping one among them (negative entropy,
        as in the default :data:`~synaptic_geometry.potentials.CANDIDATE_POTENTIALS`) the sign
        rule below applies; otherwise only finiteness counts.

    Returns
    -------
    numpy.ndarray
        Flat boolean array. A weight is True when it is finite before and after (NaN and
        infinities are False) and, under the sign rule, non-zero before and after with the same
        sign. A zero has no sign: a weight that is zero before or after is False, even one that
        stays at zero. So ``~domain_mask(w_before, w_after)`` marks the weights that changed sign
        or touched zero (or are not finite); the book counts these as sign changes.
    """
    potentials = _candidate_potentials(candidates)
    _check_same_shape(w_before, w_after)
    before = as_flat_array(w_before, "w_before")
    after = as_flat_array(w_after, "w_after")
    return _in_domain(before, after, any(p.keeps_sign for p in potentials))


def identify(
    w_before: Weights,
    w_after: Weights,
    candidates: Sequence[str | Potential] = CANDIDATE_POTENTIALS,
    centered: bool = False,
) -> pd.DataFrame:
    """Delta-CDF and change magnitude of the dual change under each candidate potential.

    Returns a DataFrame with columns ``candidate`` (canonical potential name), ``delta_cdf`` and
    ``magnitude``, sorted best first (lowest Delta-CDF; ties keep the candidates' order), with a
    fresh index. The first row is the inferred geometry. All weights must be inside every
    candidate's domain (see :func:`domain_mask`).
    """
    potentials = _candidate_potentials(candidates)
    before, after = _paired(w_before, w_after)
    rows = []
    for potential in potentials:
        try:
            change = _dual_change_flat(before, after, potential)
            rows.append(
                {
                    "candidate": potential.name,
                    "delta_cdf": delta_cdf(change, centered=centered),
                    "magnitude": _magnitude_flat(change, before, potential),
                }
            )
        except ValueError as err:
            raise ValueError(f"candidate {potential.name}: {err}") from None
    table = pd.DataFrame(rows, columns=["candidate", "delta_cdf", "magnitude"])
    return table.sort_values("delta_cdf", kind="stable").reset_index(drop=True)
