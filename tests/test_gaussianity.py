"""Tests for synaptic_geometry.gaussianity: exact Delta-CDF, the published grid, identification."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import quad
from scipy.special import ndtr, ndtri

from synaptic_geometry import (
    CANDIDATE_POTENTIALS,
    change_magnitude,
    delta_cdf,
    delta_cdf_batch,
    domain_mask,
    dual_change,
    gaussian_floor,
    get_potential,
)
# identify from its module: importing the subpackage synaptic_geometry.identify shadows the public name
from synaptic_geometry.gaussianity import as_flat_array, delta_cdf_grid, identify


def quad_delta_cdf(change: np.ndarray, centered: bool, ddof: int = 0) -> float:
    """Independent reference: adaptive quadrature of |F_n - Phi| between the sample points."""
    x = np.asarray(change, dtype=np.float64)
    z = np.sort((x - x.mean() if centered else x) / np.std(x, ddof=ddof))
    n = z.size

    def gap(t: float) -> float:
        return abs(np.searchsorted(z, t, side="right") / n - ndtr(t))

    edges = np.concatenate([[-np.inf], np.unique(z), [np.inf]])
    return sum(
        quad(gap, a, b, epsabs=1e-14, epsrel=1e-12, limit=200)[0] for a, b in zip(edges[:-1], edges[1:])
    )


def primal_delta_cdf(change: np.ndarray, centered: bool) -> float:
    """Independent reference at scale: integrate |k/n - Phi| between order statistics in x.

    Uses the antiderivative G(x) = x Phi(x) + phi(x) of Phi; each interval [z_k, z_k+1] is split
    where Phi = k/n (clipped into the interval); the two unbounded tails are G(z_1) and G(-z_n).
    """
    x = np.asarray(change, dtype=np.float64)
    z = np.sort((x - x.mean() if centered else x) / np.std(x))
    n = z.size
    G = lambda t: t * ndtr(t) + np.exp(-t * t / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    c = np.arange(1, n) / n
    a, b = z[:-1], z[1:]
    m = np.clip(ndtri(c), a, b)
    inner = c * (2 * m - a - b) - 2 * G(m) + G(a) + G(b)
    return float(inner.sum() + G(z[0]) + G(-z[-1]))


def published_grid(change: np.ndarray, centered: bool) -> float:
    """The published formula, written as published: compare every value with every grid point."""
    x = np.asarray(change, dtype=np.float64)
    z = (x - x.mean() if centered else x) / np.std(x)
    grid = np.linspace(-5, 5, 1000)
    ecdf = (grid[:, None] > z[None, :]).mean(axis=-1)
    return float(np.abs(ecdf - ndtr(grid)).sum() * (grid[1] - grid[0]))


SMALL_SAMPLES = {
    "two values": np.array([0.3, -1.2]),
    "normal 7": np.random.default_rng(1).standard_normal(7),
    "ties": np.array([0.5, 0.5, 0.5, -1.0, 2.0, 2.0, 0.1]),
    "mostly tied": np.array([0.0, 0.0, 0.0, 0.0, 1.0]),
    "exponential 20": np.random.default_rng(2).exponential(size=20),
    "shifted normal 50": np.random.default_rng(3).standard_normal(50) + 0.4,
}


# --- exact value -------------------------------------------------------------------------------


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("name", list(SMALL_SAMPLES))
def test_delta_cdf_matches_quadrature(name: str, centered: bool) -> None:
    change = SMALL_SAMPLES[name]
    assert delta_cdf(change, centered=centered) == pytest.approx(quad_delta_cdf(change, centered), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("centered", [False, True])
def test_delta_cdf_matches_primal_formula_at_scale(centered: bool) -> None:
    rng = np.random.default_rng(13)
    samples = [
        rng.standard_normal(100_000) + 0.1,
        rng.standard_t(3, 100_000),
        np.round(rng.standard_normal(100_000), 1),  # heavy ties: only ~80 distinct values
    ]
    for x in samples:
        assert delta_cdf(x, centered=centered) == pytest.approx(primal_delta_cdf(x, centered), rel=1e-10)


def test_delta_cdf_known_value() -> None:
    # Centred, [3, 5] becomes z = (-1, 1) and F_n = 1/2 on [-1, 1). With G(x) = x Phi(x) + phi(x)
    # (an antiderivative of Phi) and symmetry about 0, the area is 2 (G(-1) + 1/2 - (G(0) - G(-1))).
    G = lambda x: x * ndtr(x) + np.exp(-x * x / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    expected = 2 * (G(-1.0) + 0.5 - (G(0.0) - G(-1.0)))
    assert delta_cdf([3.0, 5.0], centered=True) == pytest.approx(expected, rel=1e-13)


def test_uncentred_divides_by_np_std_and_keeps_the_mean() -> None:
    x = np.random.default_rng(4).normal(1.0, 2.0, size=30)
    value = delta_cdf(x)
    assert value == pytest.approx(quad_delta_cdf(x, centered=False), rel=1e-9)
    # np.std divides by n, not n - 1 (torch's default): the two differ visibly at n = 30
    assert abs(value - quad_delta_cdf(x, centered=False, ddof=1)) > 1e-4
    assert value > delta_cdf(x, centered=True) + 0.1  # a mean of ~0.5 std is far from N(0, 1)


@pytest.mark.parametrize("centered", [False, True])
def test_scale_invariance(centered: bool) -> None:
    x = np.random.default_rng(5).standard_t(df=4, size=2000)
    value = delta_cdf(x, centered=centered)
    for c in (1e-6, 0.37, 3.0, 1e5):
        assert delta_cdf(c * x, centered=centered) == pytest.approx(value, rel=1e-12)


def test_centred_is_shift_invariant_uncentred_is_not() -> None:
    x = np.random.default_rng(6).standard_normal(1000)
    assert delta_cdf(x + 7.5, centered=True) == pytest.approx(delta_cdf(x, centered=True), rel=1e-9)
    assert delta_cdf(x + 0.5) > delta_cdf(x) + 0.1


def test_gaussian_sample_shrinks_like_inverse_sqrt_n() -> None:
    # E[Delta-CDF] ~ C / sqrt(n), so the ratio of means at n = 1e3 and 1e5 tends to 10.
    # Measured spread of a single value: coefficient of variation about 0.4 at both sizes, so with
    # 400 and 100 seeds the ratio has a relative standard error of about
    # sqrt(0.4^2/400 + 0.4^2/100) = 4.5%. The finite-n bias at n = 1e3 lowers the ratio by about
    # 4% (C is ~1.17 at 1e3 and ~1.23 at 1e5). [8.5, 11.5] is ~10 +- 3 standard errors; an
    # exponent of 0.4 (ratio 6.3) or 0.6 (ratio 15.8) would fail.
    small = np.mean([delta_cdf(np.random.default_rng(s).standard_normal(1000)) for s in range(400)])
    large = np.mean([delta_cdf(np.random.default_rng(s).standard_normal(100_000)) for s in range(100)])
    assert 8.5 < small / large < 11.5


def test_delta_cdf_does_not_modify_input_and_accepts_containers() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(5)
    a_copy = a.copy()
    flat = np.concatenate([a.ravel(), b])
    expected = delta_cdf(flat)
    assert np.array_equal(a, a_copy)
    assert delta_cdf([a, b]) == expected
    assert delta_cdf((torch.tensor(a, requires_grad=True), torch.tensor(b))) == expected
    assert delta_cdf(list(flat)) == expected
    assert delta_cdf(flat.astype(np.float32)) == pytest.approx(delta_cdf(flat.astype(np.float32).astype(np.float64)), rel=1e-15)


# --- the published grid ------------------------------------------------------------------------


@pytest.mark.parametrize("centered", [False, True])
def test_grid_reproduces_published_formula(centered: bool) -> None:
    x = np.random.default_rng(8).standard_normal(3000) * 2 + 0.3
    assert delta_cdf_grid(x, centered=centered) == pytest.approx(published_grid(x, centered), rel=1e-12)


def test_grid_counts_values_strictly_below_each_grid_point() -> None:
    # z = (-1, 1) exactly (np.std is 1); on the grid (-1, 0) (dx = 1) the published ECDF is (0, 1/2)
    assert delta_cdf_grid([-1.0, 1.0], lo=-1, hi=0, n=2) == pytest.approx(ndtr(-1.0), rel=1e-14)


def test_grid_is_close_to_exact_for_gaussian_samples() -> None:
    # 1000 grid points on [-5, 5]: the rectangle sum of a step function misplaces up to one grid
    # cell per ECDF step and per crossing; over 200 seeds at n = 1e3 and 1e5 the largest relative
    # difference measured was 1.2% with mean below 0.03%. Tolerances: 4% per sample, 0.5% on the
    # mean over 20 samples.
    rel = []
    for seed in range(20):
        x = np.random.default_rng(seed).standard_normal(10_000)
        exact = delta_cdf(x)
        rel.append((delta_cdf_grid(x) - exact) / exact)
    assert np.max(np.abs(rel)) < 0.04
    assert abs(np.mean(rel)) < 0.005


@pytest.mark.parametrize("centered", [False, True])
def test_fine_grid_converges_to_exact(centered: bool) -> None:
    # Rectangle rule error <= dx * total variation of |F_n - Phi| (<= 2) + dx * max|F_n - Phi|
    # for the extra half cell at each end, so <= 3 dx; the tails beyond +-10 are < 1e-20.
    x = np.random.default_rng(9).standard_normal(1000)
    n = 2_000_001
    dx = 20 / (n - 1)
    assert abs(delta_cdf_grid(x, centered=centered, lo=-10, hi=10, n=n) - delta_cdf(x, centered=centered)) < 3 * dx


def test_grid_misses_mass_outside_its_range_exact_does_not() -> None:
    x = np.concatenate([np.random.default_rng(10).standard_normal(1000), [60.0]])  # z of the outlier ~ 23
    assert delta_cdf(x, centered=True) > delta_cdf_grid(x, centered=True) + 0.01


# --- dual change, magnitude, identification ------------------------------------------------------


def lognormal_weights(rng: np.random.Generator, d: int) -> np.ndarray:
    return np.exp(rng.normal(-2.5, 0.5, d)) * rng.choice([-1.0, 1.0], d)


def test_dual_change_and_magnitude() -> None:
    rng = np.random.default_rng(11)
    before = lognormal_weights(rng, 500)
    xi = rng.standard_normal(500)
    ne = get_potential("negative_entropy")
    after = ne.inv_grad(ne.grad(before) + 0.1 * xi, sign=np.sign(before))
    np.testing.assert_allclose(dual_change(before, after, "negative_entropy"), 0.1 * xi, atol=1e-12)
    np.testing.assert_array_equal(dual_change(before, after, "2-norm"), after - before)
    assert change_magnitude(before, after, "2-norm") == pytest.approx(
        np.linalg.norm(after - before) / np.linalg.norm(before), rel=1e-12
    )
    assert change_magnitude(before, after, ne) == pytest.approx(
        np.linalg.norm(0.1 * xi) / np.linalg.norm(ne.grad(before)), rel=1e-10
    )
    # torch tensors and lists of tensors give the same numbers
    halves = lambda w: [torch.tensor(w[:200].reshape(10, 20)), torch.tensor(w[200:])]  # noqa: E731
    np.testing.assert_array_equal(dual_change(halves(before), halves(after), "3-norm"), dual_change(before, after, "3-norm"))
    assert dual_change(before, after, "2-norm").dtype == np.float64


def test_identify_picks_negative_entropy_when_change_is_gaussian_in_its_dual_space() -> None:
    # Measured over seeds 0-5: negative_entropy ~0.005-0.011, the next candidate (1.5-norm) ~0.055.
    rng = np.random.default_rng(0)
    before = lognormal_weights(rng, 20_000)
    ne = get_potential("negative_entropy")
    after = ne.inv_grad(ne.grad(before) + 0.3 * rng.standard_normal(before.size), sign=np.sign(before))
    table = identify(before, after)
    assert list(table.columns) == ["candidate", "delta_cdf", "magnitude"]
    assert list(table.index) == list(range(len(CANDIDATE_POTENTIALS)))
    assert sorted(table.candidate) == sorted(CANDIDATE_POTENTIALS)
    assert table.delta_cdf.is_monotonic_increasing
    assert table.candidate[0] == "negative_entropy"
    assert table.delta_cdf[1] > 3 * table.delta_cdf[0]


def test_identify_picks_2_norm_when_change_is_gaussian_in_the_primal() -> None:
    # Measured over seeds 0-5: 2-norm ~0.005-0.011, the next candidate (2.5-norm) ~0.045.
    rng = np.random.default_rng(0)
    before = lognormal_weights(rng, 20_000)
    after = before + 0.01 * rng.standard_normal(before.size)  # a few weights cross zero
    with pytest.raises(ValueError, match=r"candidate negative_entropy: .*sign change"):
        identify(before, after)
    keep = domain_mask(before, after)
    assert 0 < np.count_nonzero(~keep) < 50
    table = identify(before[keep], after[keep], candidates=["3-norm", "2-norm", "negative_entropy", "1.5-norm"])
    assert table.candidate[0] == "2-norm"
    assert table.delta_cdf[1] > 3 * table.delta_cdf[0]
    assert table.magnitude[0] == pytest.approx(change_magnitude(before[keep], after[keep], "2-norm"))


def test_identify_accepts_potential_objects_and_centred() -> None:
    rng = np.random.default_rng(12)
    before = lognormal_weights(rng, 2000)
    after = before * 1.01 + 0.001 * rng.standard_normal(2000)
    table = identify(before, after, candidates=[get_potential("2-norm"), "3-norm"], centered=True)
    expected = delta_cdf(after - before, centered=True)
    assert table.set_index("candidate").delta_cdf["2-norm"] == pytest.approx(expected, rel=1e-12)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("func", [delta_cdf, delta_cdf_grid])
def test_errors_on_bad_change(func) -> None:
    with pytest.raises(ValueError, match="0 value"):
        func([])
    with pytest.raises(ValueError, match="0 value"):
        func(np.array([]))
    with pytest.raises(ValueError, match="1 value"):
        func([1.5])
    with pytest.raises(ValueError, match="constant"):
        func(np.full(10, 2.0))
    with pytest.raises(ValueError, match="constant"):
        func(np.zeros(10), centered=True)
    with pytest.raises(ValueError, match="constant"):
        func(1.0 + np.arange(10) * 1e-15)
    with pytest.raises(ValueError, match="1 non-finite"):
        func([0.0, 1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="2 non-finite"):
        func([-np.inf, 1.0, np.inf, 2.0])
    with pytest.raises(TypeError, match="real numbers"):
        func(["a", "b"])
    with pytest.raises(TypeError, match="real numbers"):
        func(np.array([1 + 1j, 2.0]))


def test_grid_errors() -> None:
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="lo < hi"):
        delta_cdf_grid(x, lo=5, hi=-5)
    with pytest.raises(ValueError, match="integer >= 2"):
        delta_cdf_grid(x, n=1)
    with pytest.raises(ValueError, match="integer >= 2"):
        delta_cdf_grid(x, n=10.5)


def test_shape_mismatch_errors() -> None:
    a, b = np.ones((3, 4)), np.ones((4, 3))
    with pytest.raises(ValueError, match=r"same shape.*\(3, 4\).*\(4, 3\)"):
        dual_change(a, b, "2-norm")
    with pytest.raises(ValueError, match="element 1 has shape"):
        identify([a, a], [a, b])
    with pytest.raises(ValueError, match="list of 2 arrays"):
        change_magnitude([a, a], a, "2-norm")
    with pytest.raises(ValueError, match="same shape"):
        domain_mask(np.ones(5), np.ones(6))


def test_weight_errors() -> None:
    w = np.linspace(0.1, 1.0, 10)
    with pytest.raises(ValueError, match="empty"):
        dual_change([], [], "2-norm")
    with pytest.raises(ValueError, match="w_after contain 1 non-finite"):
        dual_change(w, np.r_[w[:-1], np.nan], "2-norm")
    with pytest.raises(ValueError, match="w_before contain 1 non-finite"):
        change_magnitude(np.r_[w[:-1], np.inf], w, "3-norm")
    with pytest.raises(ValueError, match="magnitude is undefined"):
        change_magnitude(np.zeros(10), w, "2-norm")


def test_negative_entropy_domain_errors_count_and_suggest_dropping() -> None:
    before = np.array([0.1, -0.2, 0.0, 0.3, 0.4, -0.5])
    after = np.array([0.2, 0.1, 0.1, 0.0, 0.5, -0.4])  # 1 zero before, 1 zero after, 1 sign change
    with pytest.raises(ValueError, match=r"1 exact zero\(s\) in w_before, 1 in w_after and 1 sign change") as info:
        dual_change(before, after, "negative_entropy")
    assert "domain_mask" in str(info.value)
    with pytest.raises(ValueError, match="negative_entropy"):
        change_magnitude(before, after, "negative_entropy")
    keep = domain_mask(before, after)
    np.testing.assert_array_equal(keep, [True, False, False, False, True, True])
    assert np.isfinite(dual_change(before[keep], after[keep], "negative_entropy")).all()
    # without a sign-keeping candidate nothing is dropped, and the 2-norm analyses everything
    assert domain_mask(before, after, candidates=["2-norm"]).all()
    assert np.isfinite(dual_change(before, after, "2-norm")).all()


def test_domain_mask_convention_for_zeros_sign_changes_and_non_finite() -> None:
    before = np.array([0.5, -0.5, 0.5, 0.0, 0.0, 0.5, -0.5, np.nan, 0.5, np.inf, 0.5, -0.0])
    after = np.array([0.7, -0.1, -0.2, 0.0, 0.3, 0.0, 0.4, 0.5, np.nan, 1.0, -np.inf, -0.0])
    # kept, kept, sign change, zero stays zero, zero left, became zero, sign change, nan, nan, inf, -inf, -0.0 stays
    sign_rule = [True, True, False, False, False, False, False, False, False, False, False, False]
    finite = [True] * 7 + [False] * 4 + [True]
    np.testing.assert_array_equal(domain_mask(before, after), sign_rule)
    np.testing.assert_array_equal(domain_mask(before, after, ["negative_entropy"]), sign_rule)
    # without a sign-keeping candidate only finiteness counts: zeros and sign changes are kept
    np.testing.assert_array_equal(domain_mask(before, after, ["2-norm", "3-norm"]), finite)
    # flat over any input form: a 2-D array, a list of arrays, torch tensors
    assert domain_mask(before.reshape(3, 4), after.reshape(3, 4)).shape == (12,)
    np.testing.assert_array_equal(domain_mask(before.reshape(3, 4), after.reshape(3, 4)), sign_rule)
    np.testing.assert_array_equal(domain_mask([before[:5], before[5:]], [after[:5], after[5:]]), sign_rule)
    np.testing.assert_array_equal(domain_mask(torch.from_numpy(before), torch.from_numpy(after)), sign_rule)
    # what it keeps is what negative entropy can analyse
    keep = domain_mask(before, after)
    assert np.isfinite(dual_change(before[keep], after[keep], "negative_entropy")).all()
    with pytest.raises(ValueError, match="unknown candidate"):
        domain_mask(before, after, ["entropy"])


def test_candidate_errors() -> None:
    w = np.linspace(0.1, 1.0, 10)
    with pytest.raises(ValueError, match=r"unknown candidate 'entropy'.*negative_entropy"):
        identify(w, w * 1.1, candidates=["2-norm", "entropy"])
    with pytest.raises(ValueError, match="unknown candidate '1-norm'"):
        identify(w, w * 1.1, candidates=["1-norm"])
    with pytest.raises(ValueError, match="no candidates"):
        identify(w, w * 1.1, candidates=[])
    with pytest.raises(ValueError, match="duplicate"):
        identify(w, w * 1.1, candidates=["2-norm", "2.0-norm"])
    with pytest.raises(ValueError, match="unknown potential"):
        dual_change(w, w, "entropy")


def test_identify_reports_constant_change_with_candidate() -> None:
    w = np.arange(1.0, 11.0)
    with pytest.raises(ValueError, match="candidate 2-norm: change is constant"):
        identify(w, w + 0.5, candidates=["2-norm"])  # exactly constant
    w = np.linspace(0.1, 1.0, 10)
    assert np.std((w + 0.5) - w) > 0  # constant up to rounding only
    with pytest.raises(ValueError, match="candidate 2-norm: change is constant.*rounding"):
        identify(w, w + 0.5, candidates=["2-norm"])


def test_as_flat_array() -> None:
    x = np.arange(6.0).reshape(2, 3)
    assert np.shares_memory(as_flat_array(x), x)  # no copy for float64 arrays
    np.testing.assert_array_equal(as_flat_array([x, [6, 7], torch.arange(8, 10)]), np.arange(10.0))
    with pytest.raises(TypeError, match="real numbers"):
        as_flat_array(torch.tensor([True, False]))
    assert isinstance(identify(x + 1, (x + 1) * np.linspace(1, 2, 6).reshape(2, 3), candidates=["2-norm"]), pd.DataFrame)


def test_gaussian_floor_is_the_sampling_floor_and_is_seeded():
    floor = gaussian_floor(10_000, n_samples=20, seed=3)
    assert floor.shape == (20,)
    assert 0.8 < np.median(floor) * np.sqrt(10_000) < 1.5  # about 1.1 / sqrt(n)
    np.testing.assert_array_equal(floor, gaussian_floor(10_000, n_samples=20, seed=3))
    assert not np.array_equal(floor, gaussian_floor(10_000, n_samples=20, seed=4))
    assert np.median(gaussian_floor(100, 20)) > 3 * np.median(gaussian_floor(10_000, 20))
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        gaussian_floor(1)
    with pytest.raises(ValueError, match="n_samples"):
        gaussian_floor(100, n_samples=0)


# ---------------------------------------------------------------- the batched Delta-CDF


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("n", [2, 3, 50, 1001])
def test_delta_cdf_batch_equals_the_scalar(n: int, centered: bool) -> None:
    """Rows of different laws (normal, shifted, heavy-tailed, with ties): each the scalar value."""
    rng = np.random.default_rng(n)
    rows = np.stack([rng.standard_normal(n), rng.standard_normal(n) + 0.7, rng.standard_t(2, n),
                     np.round(rng.standard_normal(n), 1), rng.lognormal(0, 1, n)])
    if n == 2:
        rows[3] = [0.0, 1.0]  # rounding may tie both values: keep the row valid
    batch = delta_cdf_batch(rows, centered=centered)
    scalar = np.array([delta_cdf(r, centered) for r in rows])
    np.testing.assert_allclose(batch, scalar, rtol=1e-13, atol=0)
    if n > 2:  # two values always standardise to -1 and 1 (uncentred: nearly)
        assert len(set(np.round(scalar, 12))) == len(scalar)  # the rows really differ


def test_delta_cdf_batch_with_mask_equals_the_scalar_on_the_kept_values() -> None:
    rng = np.random.default_rng(3)
    changes = rng.standard_t(4, (40, 300))
    mask = rng.random(changes.shape) < rng.uniform(0.02, 1.0, (40, 1))  # rows keep 2..300 values
    mask[:, :2] = True
    mask[5] = True  # a full row, and rows sharing a count
    mask[6] = mask[7]
    changes[~mask] = np.nan  # ignored, whatever they hold
    batch = delta_cdf_batch(changes, mask)
    scalar = np.array([delta_cdf(c[m]) for c, m in zip(changes, mask)])
    np.testing.assert_allclose(batch, scalar, rtol=1e-13, atol=0)
    assert mask[6].sum() == mask[7].sum() and len(np.unique(mask.sum(axis=1))) > 20


def test_gaussian_floor_rows_are_the_sequential_samples() -> None:
    """The batched floor scores exactly the samples that successive draws of n values give."""
    rng = np.random.default_rng(9)
    sequential = np.array([delta_cdf(rng.standard_normal(200)) for _ in range(6)])
    np.testing.assert_allclose(gaussian_floor(200, 6, seed=9), sequential, rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    "changes, mask, message",
    [
        (np.ones((2, 5)), None, r"change row 0 is constant"),
        (np.array([[0.0, 1.0, 2.0], [1.0, np.inf, 0.0]]), None, r"change row 1 contain 1 non-finite"),
        (np.array([[0.0, 1.0, 2.0], [1.0, np.nan, 0.0]]), np.array([[1, 1, 1], [1, 1, 0]], bool), r"change row 1 contain 1 non-finite"),
        (np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 0.0]]), np.array([[1, 1, 1], [1, 0, 0]], bool), r"change row 1 has 1 value"),
        (np.array([[0.0, 1.0, 2.0], [3.0, 3.0, 0.0]]), np.array([[1, 1, 1], [1, 1, 0]], bool), r"change row 1 is constant"),
        (np.zeros(4), None, r"2-D array"),
        (np.zeros((2, 1)), None, r"at least 2 values"),
        (np.zeros((2, 3)), np.ones((2, 2), bool), r"mask must be a boolean array"),
    ],
)
def test_delta_cdf_batch_bad_input_raises(changes, mask, message) -> None:
    with pytest.raises(ValueError, match=message):
        delta_cdf_batch(changes, mask)
