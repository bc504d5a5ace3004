"""The scale-structure-aware statistic: row/column normalisation of a layer's dual change."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synaptic_geometry import (
    corrected_delta_cdf,
    corrected_gaussian_floor,
    delta_cdf,
    domain_mask,
    gaussian_floor,
    get_potential,
    identify_corrected,
    layer_matrix,
    rowcol_normalize,
    scale_mixture,
)
from synaptic_geometry.experiments.linreg import ROBUSTNESS_CANDIDATES, _robustness_start


def test_normalisation_sets_every_row_and_column_rms_to_one():
    rng = np.random.default_rng(0)
    x = scale_mixture((40, 60), 1.0, rng)
    mask = rng.random(x.shape) > 0.2
    z = rowcol_normalize(x, mask)
    assert np.all(np.isnan(z[~mask])) and np.all(np.isfinite(z[mask]))
    squared = np.where(mask, z, 0.0) ** 2
    np.testing.assert_allclose(squared.sum(1) / mask.sum(1), 1.0, atol=1e-4)
    np.testing.assert_allclose(squared.sum(0) / mask.sum(0), 1.0, atol=1e-4)
    # an exact row/column rescaling is removed entirely
    r, c = np.exp(rng.standard_normal(40)), np.exp(rng.standard_normal(60))
    np.testing.assert_allclose(rowcol_normalize(x * r[:, None] * c[None, :]), rowcol_normalize(x), rtol=1e-5)


def test_layer_matrix_reads_output_units_as_rows():
    conv = np.arange(8 * 4 * 3 * 3).reshape(8, 4, 3, 3)
    assert layer_matrix(conv).shape == (8, 36)
    np.testing.assert_array_equal(layer_matrix(conv)[2], conv[2].ravel())
    with pytest.raises(ValueError, match="2 dimensions"):
        layer_matrix(np.zeros(5))
    with pytest.raises(ValueError, match="mask shape"):
        rowcol_normalize(np.ones((2, 3)), np.ones((3, 2), dtype=bool))


def test_row_column_scale_mixture_scores_gaussian_after_correction_and_not_before():
    shape = (200, 300)
    n = shape[0] * shape[1]
    floor = gaussian_floor(n, n_samples=10, seed=1)
    corrected_floor = corrected_gaussian_floor([shape], n_samples=10, seed=1)
    rng = np.random.default_rng(2)
    mixtures = [scale_mixture(shape, 0.7, rng) for _ in range(5)]
    raw = [delta_cdf(m.ravel()) for m in mixtures]
    corrected = [corrected_delta_cdf(m) for m in mixtures]
    assert min(raw) > 10 * floor.max()  # heavy tails before
    assert max(corrected) < 2 * corrected_floor.max()  # at the floor after
    # with many entries per row and column, the corrected null is the plain one
    assert corrected_floor.mean() < 1.5 * floor.mean()


def test_wrong_potential_stays_non_gaussian_after_correction():
    rng = np.random.default_rng(3)
    shape = (100, 150)
    w0 = rng.normal(0.0, 0.1, shape)
    true = get_potential("2-norm")
    w1 = true.inv_grad(true.grad(w0) + 0.01 * scale_mixture(shape, 0.7, rng))
    table = identify_corrected(w0, w1, ["2-norm", "3-norm", "1.5-norm"])
    assert table["candidate"].iloc[0] == "2-norm"
    floor = corrected_gaussian_floor([shape], n_samples=10, seed=4)
    scores = dict(zip(table["candidate"], table["delta_cdf"]))
    assert scores["2-norm"] < 2 * floor.max()
    assert scores["3-norm"] > 5 * floor.max() and scores["1.5-norm"] > 5 * floor.max()


@pytest.mark.parametrize("true", ["negative_entropy", "2-norm", "3-norm"])
@pytest.mark.parametrize("start", ["lognormal", "normal"])
def test_linear_regression_robustness_minimum_stays_at_the_true_potential(true, start):
    # the robustness setup of the linear-regression chapter (1000 synapses, nominal width 100),
    # read as a 25 x 40 matrix; the mean over seeds of the corrected Delta-CDF is lowest at the truth
    # or at its neighbour on the grid of 21 candidates (p in steps of 0.1), as for the raw statistic
    phi = get_potential(true)
    size = 0.1 * abs(float(phi.grad(np.array([1 / math.sqrt(100)]))[0]))
    candidates = list(ROBUSTNESS_CANDIDATES)
    totals = np.zeros(len(candidates))
    for seed in range(10):
        rng = np.random.default_rng([seed, 7])
        w0 = _robustness_start(start, 1000, rng)
        sign = np.sign(w0) if phi.keeps_sign else None
        w1 = phi.inv_grad(phi.grad(w0) + size * rng.standard_normal(1000), sign=sign)
        keep = domain_mask(w0, w1, candidates).reshape(25, 40)  # every candidate's common domain
        table = identify_corrected(w0.reshape(25, 40), w1.reshape(25, 40), candidates, masks=keep)
        scores = dict(zip(table["candidate"], table["delta_cdf"]))
        totals += [scores[c] for c in candidates]
    assert abs(int(np.argmin(totals)) - candidates.index(phi.name)) <= 1
    far = [i for i in range(len(candidates)) if abs(i - candidates.index(phi.name)) >= 4]
    assert totals[candidates.index(phi.name)] < totals[far].min()


def test_small_layers_need_the_corrected_null():
    # few entries per column (8 output channels): compared with the standard normal, a corrected
    # exact Gaussian scores well above the plain floor (the values are bounded, light-tailed) ...
    plain = gaussian_floor(8 * 72, n_samples=20, seed=0)
    against_normal = corrected_gaussian_floor([(8, 72)], n_samples=20, seed=0, reference="normal")
    assert against_normal.mean() > 1.3 * plain.mean()
    # ... and compared with corrected Gaussians of the same shape it scores like the plain floor
    calibrated = corrected_gaussian_floor([(8, 72)], n_samples=20, seed=0)
    assert calibrated.mean() < 1.2 * plain.mean()
    # a row/column mixture scores like a pure Gaussian after the correction (it is invariant to rescaling)
    mixed = corrected_gaussian_floor([(8, 72)], n_samples=20, seed=0, spread=1.0)
    assert mixed.mean() < 1.2 * plain.mean()
    z = rowcol_normalize(np.random.default_rng(0).standard_normal((8, 72)))
    assert np.abs(z).max() <= math.sqrt(8) + 1e-9  # a column of 8 values with RMS 1 is bounded by sqrt(8)
    np.testing.assert_array_equal(corrected_gaussian_floor([(8, 72)], n_samples=3, seed=5),
                                  corrected_gaussian_floor([(8, 72)], n_samples=3, seed=5))
    with pytest.raises(ValueError, match="n_samples"):
        corrected_gaussian_floor([(8, 72)], n_samples=0)
    with pytest.raises(ValueError, match="reference"):
        corrected_delta_cdf(np.ones((3, 3)), reference="student")


def test_a_precomputed_reference_gives_the_same_scores_and_floor():
    """Passing the reference (``null``) that the functions would simulate changes nothing; a bad one is refused."""
    from synaptic_geometry.scale_correction import corrected_reference

    rng = np.random.default_rng(3)
    shapes = [(12, 30), (8, 12)]
    before = [rng.uniform(0.5, 1.5, s) for s in shapes]
    after = [b + 0.01 * rng.standard_normal(b.shape) for b in before]
    masks = [rng.random(s) > 0.2 for s in shapes]
    null = corrected_reference(shapes, masks, seed=4)
    plain = identify_corrected(before, after, ["2-norm", "3-norm"], masks=masks, seed=4)
    shared = identify_corrected(before, after, ["2-norm", "3-norm"], masks=masks, null=null)
    np.testing.assert_array_equal(plain["delta_cdf"], shared["delta_cdf"])
    np.testing.assert_array_equal(corrected_gaussian_floor(shapes, masks, n_samples=3, seed=4),
                                  corrected_gaussian_floor(shapes, masks, n_samples=3, seed=4, null=null))
    other = identify_corrected(before, after, ["2-norm", "3-norm"], masks=masks, seed=5)
    assert not np.array_equal(other["delta_cdf"], plain["delta_cdf"])  # the reference matters, so the test can fail
    with pytest.raises(ValueError, match="sorted"):
        identify_corrected(before, after, ["2-norm"], masks=masks, null=null[::-1])
    with pytest.raises(ValueError, match="normal"):
        corrected_gaussian_floor(shapes, masks, n_samples=2, reference="normal", null=null)


def test_fast_normalisation_matches_the_masked_definition():
    """rowcol_normalize equals the definition written out (masked RMS of rows, then columns, repeated)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((9, 14)) * np.exp(rng.standard_normal(9))[:, None]
    mask = rng.random(x.shape) > 0.3
    y = np.where(mask, x, 0.0)
    for _ in range(100):
        rows = np.sqrt(np.array([np.mean(y[i][mask[i]] ** 2) for i in range(9)]))
        y = y / rows[:, None]
        cols = np.sqrt(np.array([np.mean(y[:, j][mask[:, j]] ** 2) for j in range(14)]))
        y = y / cols[None, :]
        if max(abs(rows - 1).max(), abs(cols - 1).max()) < 1e-6:
            break
    np.testing.assert_allclose(rowcol_normalize(x, mask)[mask], y[mask], rtol=1e-10)
    assert np.isnan(rowcol_normalize(x, mask)[~mask]).all()
