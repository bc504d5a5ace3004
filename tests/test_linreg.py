"""Tests for synaptic_geometry.experiments.linreg: inputs, the exact limit, the iterative protocol, sweeps."""

import numpy as np
import pytest
import scipy.linalg
import torch

from synaptic_geometry.experiments import linreg
from synaptic_geometry.experiments.linreg import ProjectionError, bregman_projection
from synaptic_geometry.optim import MirrorDescent
from synaptic_geometry.potentials import get_potential


def small_problem(n=6, d=40, seed=0, q=2.0):
    (_, _, X, y, w0), = linreg.nested_draws([d], [np.log(n) / np.log(d) + 1e-9], 1.0, q, seed)
    return X, y, w0


# ---------------------------------------------------------------- inputs


@pytest.mark.parametrize("q", [1.0, 2.0])
def test_sample_covariance_matches_target(q):
    rng = np.random.default_rng(1)
    X = linreg.sample_inputs(40_000, 12, 1.0, q, rng=rng)
    target = scipy.linalg.toeplitz(linreg.correlation(12, 1.0, q)) + np.eye(12) / 12  # + var of U
    assert np.abs(np.cov(X.T) - target).max() < 0.03
    assert np.abs(X.mean(0)).max() < 0.03


def test_correlation_values():
    c = linreg.correlation(4, s=1.0, q=2.0)
    np.testing.assert_allclose(c, [1.0, -0.5, 0.2, -0.1])


def test_negative_embedding_spectrum_raises():
    with pytest.raises(ValueError, match="negative eigenvalue"):
        linreg.circulant_spectrum(np.array([1.0, 0.95, 0.9, -0.9]))


def test_spectrum_nonnegative_at_paper_width():
    for q in (1.0, 2.0):
        assert linreg.circulant_spectrum(linreg.correlation(20_000, 1.0, q)).min() >= 0


def test_smaller_widths_are_leading_coordinates_of_widest_draw():
    draws = list(linreg.nested_draws([30, 80], [0.5, 0.75], 1.0, 1.0, seed=3))
    widest = [d for d in draws if d[0] == 0.75 and d[1] == 80][0]
    for a, width, X, y, w0 in draws:
        n = linreg.n_points(width, a)
        assert X.shape == (n, width) and y.shape == (n,)
        np.testing.assert_array_equal(X, widest[2][:n, :width])
        np.testing.assert_allclose(w0 * np.sqrt(width), widest[4][:width] * np.sqrt(80), rtol=1e-14)
    again = list(linreg.nested_draws([30, 80], [0.5, 0.75], 1.0, 1.0, seed=3))
    np.testing.assert_array_equal(again[-1][2], draws[-1][2])  # same seed, same numbers


def test_paper_widths():
    widths = linreg.paper_widths()
    assert len(widths) == 10 and widths[0] == 100 and widths[-1] == 20000 and 6161 in widths
    assert linreg.n_points(10_000, 0.5) == 100


# ---------------------------------------------------------------- exact limit


def test_two_norm_equals_closed_form():
    X, y, w0 = small_problem(n=8, d=50)
    result = bregman_projection(X, y, w0, "2-norm")
    closed = w0 + X.T @ np.linalg.solve(X @ X.T, y - X @ w0)
    np.testing.assert_allclose(result.w, closed, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(X.T @ result.alpha, result.w - w0, atol=1e-10)
    assert result.converged and result.residual <= 1e-8


def long_mirror_descent(X, y, w0, potential, steps=4000, lr=0.005):
    Xt, yt = torch.tensor(X), torch.tensor(y)
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = MirrorDescent([w], lr=lr, momentum=0.9, potential=potential)
    for _ in range(steps):
        opt.zero_grad()
        torch.sum((Xt @ w - yt) ** 2).backward()
        opt.step()
    return w.detach().numpy()


@pytest.mark.parametrize("potential", ["negative_entropy", "3-norm"])
def test_equals_long_mirror_descent(potential):
    X, y, w0 = small_problem(n=5, d=30, seed=2)
    w0 = w0 * 10  # O(1) weights: a well-conditioned problem for mirror descent
    exact = bregman_projection(X, y, w0, potential)
    w_md = long_mirror_descent(X, y, w0, potential)
    assert np.linalg.norm(X @ w_md - y) / np.linalg.norm(y) < 1e-6  # mirror descent converged
    np.testing.assert_allclose(w_md, exact.w, atol=1e-8)
    phi = get_potential(potential)
    np.testing.assert_allclose(phi.grad(exact.w) - phi.grad(w0), X.T @ exact.alpha, atol=1e-7)


@pytest.mark.parametrize("potential", ["negative_entropy", "2-norm", "3-norm", "1.5-norm", "hypentropy:0.1"])
def test_residual_small_on_correlated_problem(potential):
    (_, _, X, y, w0), = linreg.nested_draws([600], [0.75], 1.0, 1.0, seed=4)
    result = bregman_projection(X, y, w0, potential)
    assert result.converged and result.residual <= 1e-8
    assert np.linalg.norm(X @ result.w - y) / np.linalg.norm(y) <= 1e-8
    if potential == "negative_entropy":
        assert np.all(np.sign(result.w) == np.sign(w0))  # signs kept


def test_bad_inputs_raise_clear_errors():
    X, y, w0 = small_problem()
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains non-finite"):
        bregman_projection(bad, y, w0, "2-norm")
    with pytest.raises(ValueError, match="y contains non-finite"):
        bregman_projection(X, np.full_like(y, np.inf), w0, "2-norm")
    with pytest.raises(ValueError, match="not underdetermined"):
        bregman_projection(X[:, :5], y, w0[:5], "2-norm")
    zero_start = w0.copy()
    zero_start[3] = 0.0
    with pytest.raises(ValueError, match="start w0 contain 1 exact zero"):
        bregman_projection(X, y, zero_start, "negative_entropy")
    with pytest.raises(ValueError, match="shape"):
        bregman_projection(X, y[:-1], w0, "2-norm")
    with pytest.raises(ValueError, match="full row rank"):
        bregman_projection(np.vstack([X, X[:1]]), np.append(y, y[0]), w0, "2-norm")
    with pytest.raises(ValueError, match="unknown potential"):
        bregman_projection(X, y, w0, "entropy")


@pytest.mark.parametrize("potential", ["negative_entropy", "3-norm"])
def test_no_convergence_is_an_error(potential):
    X, y, w0 = small_problem()
    with pytest.raises(ProjectionError, match="did not converge"):
        bregman_projection(X, y, w0, potential, max_iter=1)
    result = bregman_projection(X, y, w0, potential, max_iter=1, raise_on_failure=False)
    assert not result.converged and result.residual > 1e-9


def test_coordinate_leverage_sums_to_n():
    X, y, w0 = small_problem(n=7, d=60)
    result = bregman_projection(X, y, w0, "negative_entropy")
    h = linreg.coordinate_leverage(X, result.w, "negative_entropy")
    assert np.all((h >= 0) & (h <= 1 + 1e-12))
    assert h.sum() == pytest.approx(7)


# ---------------------------------------------------------------- iterative protocol


def test_protocol_picks_an_lr_and_converges():
    X, y, w0 = small_problem(n=6, d=60, seed=5)
    heldout = small_problem(n=6, d=60, seed=6)
    result = linreg.published_protocol(X, y, w0, "2-norm", heldout)
    assert result.lr in result.lrs and len(result.lrs) == 16
    assert result.search_losses.shape[1] == 16
    best = np.argmin(result.search_losses[-1])
    assert result.lr == result.lrs[best]
    assert result.converged and result.final_loss < 1e-3 and result.failures == []
    exact = bregman_projection(X, y, w0, "2-norm")
    assert np.linalg.norm(result.w - exact.w) < 0.1 * np.linalg.norm(exact.w - w0)


def test_protocol_records_failures():
    X, y, w0 = small_problem(n=6, d=60, seed=5)
    heldout = small_problem(n=6, d=60, seed=6)
    result = linreg.published_protocol(X, y, w0, "3-norm", heldout, lrs=[1e-7, 1e-6], steps=10, extra_steps=10)
    assert not result.converged
    assert result.steps == 10 + 4 * 10 and result.search_losses.shape == (5, 2)
    assert len(result.failures) == 6  # five searches and the final run
    assert "giving up" in result.failures[4] and "final run" in result.failures[5]


# ---------------------------------------------------------------- sweeps


def test_figure_grid_caches_and_has_expected_shape(tmp_path):
    kwargs = dict(widths=[40, 90], seeds=[0, 1], root=tmp_path, progress=False)
    table = linreg.figure_grid(**kwargs)
    assert len(table) == 2 * 2 * 3 * 2 * 2  # q x seeds x potentials x exponents x widths
    assert table.residual.max() <= 1e-8 and table.delta_cdf.between(0, 1).all()
    files = sorted(tmp_path.rglob("*.npz"))
    assert len(files) == 4  # one per (q, seed)
    stamp = [f.stat().st_mtime_ns for f in files]
    again = linreg.figure_grid(**kwargs)
    assert [f.stat().st_mtime_ns for f in files] == stamp  # loaded, not recomputed
    assert again.equals(table)


def test_robustness_sweep_small(tmp_path):
    table = linreg.robustness_sweep(seeds=[0, 1], root=tmp_path)
    assert set(table.candidate) == set(linreg.ROBUSTNESS_CANDIDATES) and len(linreg.ROBUSTNESS_CANDIDATES) == 21
    assert table.delta_cdf.notna().all()
    # only the sign-keeping candidate ever drops weights
    assert (table[table.candidate != "negative_entropy"].dropped == 0).all()


def test_failure_sweep_needs_one_growth_rule(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        linreg.failure_sweep([50], ratio=0.2, exponent=0.5, root=tmp_path)


def test_sample_shapes_and_bad_arguments():
    rng = np.random.default_rng(0)
    assert linreg.sample_inputs(5, 7, rng=rng).shape == (5, 7)  # odd number of rows
    assert linreg.sample_inputs(3, 1, rng=rng).shape == (3, 1)
    with pytest.raises(ValueError, match="s > 0 and q > 0"):
        linreg.correlation(10, s=0.0)
    with pytest.raises(ValueError, match="unknown inputs"):
        next(linreg.nested_draws([20], [0.5], 1.0, 2.0, 0, inputs="cauchy"))
    heavy = next(linreg.nested_draws([50], [0.5], 1.0, 2.0, 0, inputs="student_t:1.5"))[2]
    assert heavy.shape == (7, 50) and np.isfinite(heavy).all()
