"""Tests for synaptic_geometry.experiments.linreg: inputs, the exact limit, the iterative protocol, sweeps."""

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

from synaptic_geometry import MirrorDescent, gaussian_floor, get_potential
from synaptic_geometry.experiments import linreg
from synaptic_geometry.experiments.linreg import ProjectionError, bregman_projection


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
    with pytest.raises(ValueError, match="entries of X contain 1 non-finite"):
        bregman_projection(bad, y, w0, "2-norm")
    with pytest.raises(ValueError, match=f"entries of y contain {y.size} non-finite"):
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
    assert set(table.candidate) == set(linreg.ROBUSTNESS_CANDIDATES) and len(linreg.ROBUSTNESS_CANDIDATES) == 31
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


# ---------------------------------------------------------------- the floor, the grid, the assumption checks


def test_floor_reference_is_the_gaussian_floor():
    floor = linreg.floor_reference([400, 900], n_samples=40, seed=7)
    for i, d in enumerate([400, 900]):
        values = gaussian_floor(d, 40, seed=7 + i)
        row = floor[floor.width == d].iloc[0]
        assert row["median"] == np.median(values)
        assert row.q05 == np.quantile(values, 0.05) and row.q95 == np.quantile(values, 0.95)
        assert 0.8 / np.sqrt(d) < row["median"] < 1.5 / np.sqrt(d)  # about 1.1 / sqrt(n)
        assert row.q05 < row["median"] < row.q95


def test_floor_ratio_of_the_floor_itself_is_one():
    floor = linreg.floor_reference([300], n_samples=21, seed=3)
    runs = pd.DataFrame({"width": 300, "seed": range(21), "delta_cdf": gaussian_floor(300, 21, seed=3)})
    ratio = linreg.floor_ratio(runs, floor, by=["width"]).iloc[0]
    assert ratio["median"] == pytest.approx(1.0) and ratio.runs == 21
    assert ratio.q05 == pytest.approx(ratio.floor_q05) and ratio.q95 == pytest.approx(ratio.floor_q95)
    doubled = linreg.floor_ratio(runs.assign(delta_cdf=2 * runs.delta_cdf), floor, by=["width"]).iloc[0]
    assert doubled["median"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no value at widths"):
        linreg.floor_ratio(runs.assign(width=301), floor, by=["width"])
    with pytest.raises(ValueError, match="include 'width'"):
        linreg.floor_ratio(runs, floor, by=["seed"])


def test_robustness_grid_extends_beyond_the_true_p_and_has_interior_minima(tmp_path):
    ps = [linreg.candidate_p(c) for c in linreg.ROBUSTNESS_CANDIDATES if c != "negative_entropy"]
    assert min(ps) == pytest.approx(1.1) and max(ps) == pytest.approx(4.0) and np.allclose(np.diff(ps), 0.1)
    assert np.isnan(linreg.candidate_p("negative_entropy"))
    table = linreg.robustness_sweep(seeds=range(6), root=tmp_path)
    minima = linreg.robustness_minimum(table)
    assert len(minima) == 3 * 2 * 6
    three = minima[minima.true == "3-norm"]
    assert 2.6 <= three.p_min.median() <= 3.4 and not three.at_edge.any()  # not the end of the grid
    two = minima[minima.true == "2-norm"]
    assert 1.7 <= two.p_min.median() <= 2.3
    assert minima[minima.true == "negative_entropy"].entropy_lowest.mean() > 0.5
    assert not minima[minima.true != "negative_entropy"].entropy_lowest.any()
    with pytest.raises(ValueError, match="no p-norm"):
        linreg.robustness_minimum(table[table.candidate == "negative_entropy"])


@pytest.mark.parametrize("potential", ["negative_entropy", "3-norm", "2-norm"])
def test_exact_cavity_identity(potential):
    """Delta_j = G_j - tau_j w_inf_j with the averaged dual Hessian between beta_(j) and alpha."""
    X, y, w0 = small_problem(n=6, d=40, seed=8)
    phi = get_potential(potential)
    full = bregman_projection(X, y, w0, potential)
    delta = phi.grad(full.w) - phi.grad(w0)
    theta0 = phi.grad(w0)
    sign = np.sign(w0) if phi.keeps_sign else None
    for j in (0, 17, 39):
        keep = np.arange(40) != j
        cavity = bregman_projection(X[:, keep], y, w0[keep], potential)
        g = X[:, j] @ cavity.alpha
        # averaged psi' by the secant: (psi(theta_a) - psi(theta_b)) / (theta_a - theta_b), exact
        theta_a = theta0[keep] + X[:, keep].T @ full.alpha
        theta_b = theta0[keep] + X[:, keep].T @ cavity.alpha
        d_bar = (phi.inv_grad(theta_a, sign=None if sign is None else sign[keep])
                 - phi.inv_grad(theta_b, sign=None if sign is None else sign[keep])) / (theta_a - theta_b)
        H = (X[:, keep] * d_bar) @ X[:, keep].T
        tau = X[:, j] @ np.linalg.solve(H, X[:, j])
        assert delta[j] == pytest.approx(g - tau * full.w[j], abs=1e-7 * np.abs(delta).max())
        # the step of the proof: tau_j <= ||c_j||^2 / lambda_min(H)
        assert tau <= X[:, j] @ X[:, j] / np.linalg.eigvalsh(H)[0] * (1 + 1e-12)
        np.testing.assert_allclose(full.alpha - cavity.alpha, -full.w[j] * np.linalg.solve(H, X[:, j]),
                                   atol=1e-7 * np.abs(full.alpha).max())


def test_lipschitz_change_of_a6():
    w0 = np.array([0.5, -1.0, 2.0])
    assert linreg.lipschitz_change("2-norm", w0, 3.0) == 0.0
    assert linreg.lipschitz_change("negative_entropy", w0, 0.25) == 0.25
    # 3-norm: theta = w|w|, smallest |theta| = 0.25, range reaches 0.25 - 0.05; L = 1 / (2 * 0.2)
    assert linreg.lipschitz_change("3-norm", w0, 0.05) == pytest.approx(0.05 / (2 * 0.2))
    assert linreg.lipschitz_change("3-norm", w0, 0.3) == np.inf  # the range crosses zero
    with pytest.raises(ValueError, match="no Lipschitz constant"):
        linreg.lipschitz_change("hypentropy:0.1", w0, 0.1)


def test_assumption_checks_measure_what_they_say(tmp_path):
    runs = linreg.failure_sweep([120, 240], linreg.TRAINED_POTENTIALS, [0, 1], exponent=0.75, inputs="independent",
                                cavity_samples=4, root=tmp_path)
    assert runs.delta_cdf.notna().all() and runs.cavity_error.notna().all()
    two = runs[runs.potential == "2-norm"]
    np.testing.assert_allclose(two.start_ratio, two.n / two.width)  # d0 = 1 for the 2-norm
    assert (two.lipschitz_change == 0).all()
    entropy = runs[runs.potential == "negative_entropy"]
    np.testing.assert_allclose(entropy.lipschitz_change, entropy.max_change)  # L = 1
    assert (runs[runs.potential == "3-norm"].lipschitz_change == np.inf).all()  # N(0, 1/D) start reaches zero
    assert (runs.rho > 0).all() and (runs.cavity_error > 0).all()
    assert (runs.cavity_max_change > 0).all() and (runs.top_leverage <= 1 + 1e-9).all()


def test_broken_assumptions_and_starts(tmp_path):
    zero = linreg.failure_sweep([100], linreg.TRAINED_POTENTIALS, [0], exponent=0.75, start="zero", root=tmp_path)
    assert zero[zero.potential != "2-norm"].delta_cdf.isna().all()  # cannot start at zero
    assert zero[zero.potential == "2-norm"].delta_cdf.notna().all()
    normal = linreg._start("normal", np.array([-1.0, 0.2, 2.0]))
    cauchy = linreg._start("cauchy", np.array([-1.0, 0.2, 2.0]))
    assert np.array_equal(np.sign(normal), np.sign(cauchy)) and abs(cauchy[2]) > abs(normal[2])
    with pytest.raises(ValueError, match="unknown start"):
        linreg.failure_sweep([100], exponent=0.5, start="uniform", root=tmp_path)
    with pytest.raises(ValueError, match="label_scale"):
        linreg.failure_sweep([100], exponent=0.5, label_scale=0.0, root=tmp_path)
    big = linreg.failure_sweep([200], ["negative_entropy"], [0], exponent=0.75, label_scale=5.0, root=tmp_path)
    small = linreg.failure_sweep([200], ["negative_entropy"], [0], exponent=0.75, root=tmp_path)
    assert big.max_change.iloc[0] > 2 * small.max_change.iloc[0]  # a larger change breaks (A6)


def test_mean_variance_factor_and_the_frozen_field(tmp_path):
    # sum over k in Z of (-1)^k / (1 + k^2) is pi / sinh(pi)
    expected = (np.pi / np.sinh(np.pi) + 1 / 12) / (1 + 1 / 12)
    assert linreg.mean_variance_factor(20_000, 2.0) == pytest.approx(expected, abs=1e-3)
    expected_q1 = (2 * np.log(2) - 1 + 1 / 12) / (1 + 1 / 12)  # 1 + 2 sum (-1)^k / (1 + k) = 2 ln 2 - 1
    assert linreg.mean_variance_factor(20_000, 1.0) == pytest.approx(expected_q1, abs=1e-3)
    frozen = linreg.frozen_field_sweep([200], 0.5, ("correlated", "independent"), range(200), q=2.0, root=tmp_path)
    factor = frozen.assign(v=frozen.width * frozen.mean_ratio**2).groupby("inputs").v.mean()
    assert 0.75 < factor["independent"] < 1.3  # an independent sample: 1
    assert 0.2 < factor["correlated"] < 0.5    # predicted 0.33


# ---------------------------------------------------------------- chapter tables (linreg_tables)


def test_growth_factor_between_proportional_and_square_root_growth():
    from synaptic_geometry.experiments.linreg_tables import growth_factor

    assert growth_factor([400]) == pytest.approx(5.0)  # 100 / 20
    assert growth_factor([100, 3200]) == pytest.approx(2.5)  # the smallest width decides: 25 / 10
    assert growth_factor([3200], exponent=0.75) == pytest.approx(800 / linreg.n_points(3200, 0.75))
    with pytest.raises(ValueError, match="empty"):
        growth_factor([])


@pytest.mark.parametrize("profile", ["default", "paper"])
def test_failure_widths_separate_the_growth_rules_fivefold(profile):
    from synaptic_geometry.book.build import load_profile
    from synaptic_geometry.experiments.linreg_tables import growth_factor

    widths = load_profile("linear_regression", profile)["failure_widths"]
    assert growth_factor(widths) >= 5.0  # the factor between N = D/4 and N = D^0.5 at every width
    assert max(widths) <= 3200  # a solve costs ~ N^2 D: N = D/4 at 6400 kept the paper profile from finishing


def _dose_frame(scale, widths, seeds, cavity):
    rows = []
    for d in widths:
        for k in range(seeds):
            rows.append({"potential": "negative_entropy", "width": d, "seed": k,
                         "delta_cdf": scale * (k + 1) / d, "lipschitz_change": scale + k,
                         "cavity_error": 0.1 * k if cavity else np.nan,
                         "cavity_error_top": 0.5 * k if cavity else np.nan})
        rows.append({"potential": "2-norm", "width": d, "seed": 0, "delta_cdf": 99.0, "lipschitz_change": 0.0,
                     "cavity_error": np.nan, "cavity_error_top": np.nan})
    return pd.DataFrame(rows)


def test_label_dose_table_medians_and_missing_cavity():
    from synaptic_geometry.experiments.linreg_tables import label_dose_table

    floor = pd.DataFrame({"width": [10, 20], "median": [0.1, 0.05], "q05": [0.05, 0.02], "q95": [0.2, 0.1]})
    runs = {1.0: _dose_frame(1.0, [10, 20], 3, cavity=True), 200.0: _dose_frame(200.0, [10, 20], 3, cavity=False)}
    table = label_dose_table(runs, floor, "negative_entropy", [10, 20])
    assert len(table) == 4
    row = table[(table.label_scale == 200.0) & (table.width == 20)].iloc[0]
    assert row.ratio == pytest.approx((200.0 * 2 / 20) / 0.05)  # median seed k = 1, over the floor's median
    assert row.lipschitz_change == pytest.approx(201.0)
    assert np.isnan(row.cavity_error) and np.isnan(row.cavity_error_top)
    first = table[(table.label_scale == 1.0) & (table.width == 10)].iloc[0]
    assert first.cavity_error == pytest.approx(0.1) and first.cavity_error_top == pytest.approx(0.5)
    assert first.runs == 3  # the 2-norm row is not counted
    with pytest.raises(ValueError, match="widths \\[40\\]"):
        label_dose_table(runs, floor, "negative_entropy", [10, 40])
