"""Tests of the spiking neuron, its learning rules and its Fisher metrics (fast, a few seconds)."""

import numpy as np
import pytest

from synaptic_geometry import delta_cdf, domain_mask
from synaptic_geometry.gaussianity import identify
from synaptic_geometry.experiments import spiking_experiments as E
from synaptic_geometry.experiments.spiking import (
    Neuron,
    PSPFilter,
    SingularMetricError,
    euclidean_gradient,
    fisher_metric_estimate,
    fisher_potential_gradient,
    gaussian_metric,
    gaussian_metric_inverse,
    gaussian_metric_matrix,
    input_traces,
    invert_metric,
    kl_rate,
    learn,
    learn_reference,
    natural_direction,
    poisson_spikes,
    protocol_updates,
    stationary_samples,
    teacher_student,
)

NEURON = Neuron()
RATES = np.r_[np.full(10, 10.0), np.full(10, 50.0)]


@pytest.fixture(scope="module")
def setup():
    teacher, students = teacher_student(RATES.size, RATES, seed=0, n_students=3)
    samples = stationary_samples(RATES, 3000, seed=1)
    return teacher, students, samples


# --- simulation statistics -------------------------------------------------------------------


def test_psp_integrals_continuous_limit():
    a1, a2 = NEURON.psp_integrals(discrete=False)
    assert a1 == 1.0
    assert a2 == pytest.approx(1.0 / (2 * (0.010 + 0.003)))
    fine = Neuron(dt=1e-6)
    assert fine.psp_integrals() == pytest.approx((a1, a2), rel=1e-4)
    t = np.linspace(0, 0.3, 300001)
    assert np.trapezoid(NEURON.kernel(t), t) == pytest.approx(1.0, rel=1e-5)
    assert np.trapezoid(NEURON.kernel(t) ** 2, t) == pytest.approx(a2, rel=1e-5)


def test_input_rates_and_psp_moments_match_theory():
    rates = np.array([5.0, 20.0, 80.0])
    n_steps = 400_000  # 200 s per run
    spikes, x = input_traces(rates, n_steps, seeds=[0, 1])
    duration = 2 * n_steps * NEURON.dt
    counts = spikes.sum(axis=(0, 1))
    # Poisson counts: mean rate * duration, sd sqrt(mean)
    assert np.all(np.abs(counts - rates * duration) < 5 * np.sqrt(rates * duration))
    a1, a2 = NEURON.psp_integrals()
    x = x[:, 400:]  # drop the first 200 ms (start from rest)
    mean, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
    assert mean == pytest.approx(rates * a1, rel=0.03)  # Campbell: mean = rate * int eps
    assert var == pytest.approx(rates * a2, rel=0.06)  # Campbell: var = rate * int eps^2
    # and the continuous-time values are within 1 % of the discrete ones
    assert a1 == pytest.approx(1.0, rel=1e-2)


def test_psp_trace_is_exact_kernel_sum():
    rng = np.random.default_rng(3)
    spikes = poisson_spikes([40.0], 600, NEURON.dt, rng)[:, 0]
    _, x = (None, None)
    filt = PSPFilter(NEURON, (1,))
    x = np.concatenate([filt(spikes[:250, None], axis=0), filt(spikes[250:, None], axis=0)])[:, 0]
    t = np.arange(600) * NEURON.dt
    direct = sum(c * NEURON.kernel(t - t[k]) for k, c in enumerate(spikes) if c)
    np.testing.assert_allclose(x, direct, atol=1e-10)


# --- learning rules and metrics --------------------------------------------------------------


def test_natural_update_is_metric_inverse_times_euclidean_gradient(setup):
    teacher, students, samples = setup
    alpha = np.linspace(0.3, 1.0, RATES.size)
    w = students / alpha
    G = fisher_metric_estimate(w, samples, NEURON, alpha)
    np.testing.assert_allclose(G, np.swapaxes(G, -1, -2), rtol=1e-12)
    x = samples[:3]
    grad = euclidean_gradient(x, np.array([1, 0, 2]), w, NEURON, alpha)
    natural = protocol_updates("natural_numeric", w, x[:, None, :], np.array([[1], [0], [2]]), RATES,
                               NEURON, alpha, x_samples=samples)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", G, natural), grad, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(natural, np.linalg.solve(G, grad[..., None])[..., 0], rtol=1e-7)


def test_euclidean_gradient_formula():
    w = np.array([0.01, -0.02])
    x = np.array([30.0, 10.0])
    V = w @ x
    phi = NEURON.rate(V)
    expected = (1 - phi * NEURON.dt) * NEURON.rate_derivative(V) / phi * x
    np.testing.assert_allclose(euclidean_gradient(x, 1, w, NEURON), expected)


def test_closed_form_inverse_equals_numerical_inverse(setup):
    teacher, students, _ = setup
    alpha = np.linspace(0.2, 1.0, RATES.size)
    G = gaussian_metric_matrix(students, RATES, NEURON, alpha)
    closed = gaussian_metric_inverse(students, RATES, NEURON, alpha)
    numeric = np.linalg.inv(G)
    np.testing.assert_allclose(closed, numeric, rtol=1e-8, atol=1e-10 * np.abs(numeric).max())
    g = np.random.default_rng(0).normal(size=students.shape)
    np.testing.assert_allclose(natural_direction(g, students, RATES, NEURON, alpha),
                               np.einsum("bij,bj->bi", numeric, g), rtol=1e-8)


def test_gaussian_metric_close_to_sampled_metric(setup):
    """The Gaussian approximation is an approximation: within 10 % (Frobenius) for 20 inputs."""
    _, students, samples = setup
    exact = fisher_metric_estimate(students, samples, NEURON)
    approx = gaussian_metric_matrix(students, RATES, NEURON)
    rel = np.linalg.norm(exact - approx, axis=(1, 2)) / np.linalg.norm(approx, axis=(1, 2))
    assert np.all(rel < 0.1)


def test_fisher_metric_is_hessian_of_potential(setup):
    _, students, samples = setup
    w, h = students[0], 1e-6
    G = fisher_metric_estimate(w, samples, NEURON)
    for i in (0, 15):
        e = np.zeros_like(w)
        e[i] = h
        column = (fisher_potential_gradient(w + e, samples) - fisher_potential_gradient(w - e, samples)) / (2 * h)
        np.testing.assert_allclose(column, G[:, i], rtol=1e-5, atol=1e-9 * np.abs(G).max())


@pytest.mark.parametrize("rule", ["natural_gaussian", "natural_numeric"])
def test_somatic_change_invariant_under_attenuation(setup, rule):
    _, students, samples = setup
    v = students[:1]
    alpha = np.full(RATES.size, 1.0)
    alpha[3] = 0.1  # move synapse 3 far out on the dendrite
    x, _ = input_traces(RATES, 200, seeds=[4])[1], None
    target = np.ones((1, 200))
    changes = []
    for a in (np.ones(RATES.size), alpha):
        dw = protocol_updates(rule, v / a, x, target, RATES, NEURON, a, x_samples=samples)
        changes.append(a * dw)  # somatic change
    np.testing.assert_allclose(changes[1], changes[0], rtol=1e-7, atol=1e-12)
    eucl = [a * protocol_updates("euclidean", v / a, x, target, RATES, NEURON, a) for a in (np.ones(RATES.size), alpha)]
    assert eucl[1][0, 3] == pytest.approx(0.01 * eucl[0][0, 3])  # Euclidean: scales with alpha^2


def test_heterosynaptic_change_only_under_natural_gradient(setup):
    _, students, samples = setup
    rates = RATES.copy()
    rates[10:] = 0.0  # inputs 10.. are silent during the protocol
    x = input_traces(rates, 400, seeds=[2])[1]
    target = np.ones((1, 400))
    eucl = protocol_updates("euclidean", students[:1], x, target, RATES, NEURON)
    nat = protocol_updates("natural_gaussian", students[:1], x, target, RATES, NEURON)
    assert np.all(eucl[0, 10:] == 0)
    assert np.all(np.abs(nat[0, 10:]) > 0)


def test_batched_learning_equals_per_step_loop(setup):
    teacher, students, _ = setup
    alpha = np.linspace(0.5, 1.0, RATES.size)
    for rule, lr in (("euclidean", 1e-5), ("natural_gaussian", 1e-4)):
        ref = learn_reference(rule, RATES, teacher, students[:2], lr, [5, 6], 0.1, NEURON, alpha, chunk_steps=60)
        res = learn(rule, RATES, teacher, students[:2], lr, [5, 6], 0.1, NEURON, alpha, update_every=1,
                    metric_every=1, chunk_steps=60, record_every=0.05, n_metric_samples=50)
        assert not np.allclose(ref, students[:2])
        np.testing.assert_allclose(res["w_final"], ref, rtol=1e-9, atol=1e-14)


def test_learning_is_seeded_and_reduces_kl(setup):
    teacher, students, _ = setup
    kw = dict(update_every=20, record_every=1.0, n_metric_samples=300)
    a = learn("natural_gaussian", RATES, teacher, students, 3e-5, [0, 1, 2], 6.0, **kw)
    b = learn("natural_gaussian", RATES, teacher, students, 3e-5, [0, 1, 2], 6.0, **kw)
    np.testing.assert_array_equal(a["w_final"], b["w_final"])
    assert a["kl"].shape == (3, 7) and a["times"][-1] == pytest.approx(6.0)
    assert np.mean(a["kl"][:, -1]) < np.mean(a["kl"][:, 0])


# --- bad parameters --------------------------------------------------------------------------


def test_bad_parameters_raise_clear_errors(setup):
    teacher, students, samples = setup
    with pytest.raises(ValueError, match="dt"):
        Neuron(dt=0.005)
    with pytest.raises(ValueError, match="tau_m"):
        Neuron(tau_m=-0.01)
    with pytest.raises(ValueError, match="finite"):
        Neuron(theta=float("nan"))
    with pytest.raises(ValueError, match=">= 0 Hz"):
        input_traces([10.0, -1.0], 10, seeds=[0])
    with pytest.raises(ValueError, match="finite"):
        stationary_samples([10.0, np.inf], 10, seed=0)
    with pytest.raises(ValueError, match="unknown rule"):
        learn("hebbian", RATES, teacher, students, 1e-5, [0, 1, 2], 1.0)
    with pytest.raises(ValueError, match="one seed per run"):
        learn("euclidean", RATES, teacher, students, 1e-5, [0], 1.0)
    with pytest.raises(ValueError, match="> 0 Hz"):
        learn("natural_gaussian", np.r_[0.0, RATES[1:]], teacher, students, 1e-5, [0, 1, 2], 1.0)
    with pytest.raises(ValueError, match="finite"):
        learn("euclidean", RATES, teacher, np.full_like(students, np.nan), 1e-5, [0, 1, 2], 1.0)
    with pytest.raises(ValueError, match="attenuation"):
        gaussian_metric_matrix(students, RATES, NEURON, attenuation=np.zeros(RATES.size))


def test_singular_metrics_raise(setup):
    _, students, samples = setup
    silent = samples.copy()
    silent[:, 4] = 0.0  # an input that never spiked
    with pytest.raises(SingularMetricError, match="singular"):
        invert_metric(fisher_metric_estimate(students, silent, NEURON))
    with pytest.raises(SingularMetricError, match="singular"):
        invert_metric(fisher_metric_estimate(students, samples[:5], NEURON))  # fewer samples than synapses
    ridge = invert_metric(fisher_metric_estimate(students, silent, NEURON, ridge=1e-3))
    assert np.all(np.isfinite(ridge))
    saturated = np.full_like(students, -10.0)  # V far below threshold: phi'^2/phi underflows to 0
    with pytest.raises(SingularMetricError, match="singular"):
        invert_metric(fisher_metric_estimate(saturated, samples, NEURON))
    metric = gaussian_metric(students, RATES, NEURON)
    metric.m = (np.zeros(3), np.zeros(3), np.zeros(3))  # E[phi'^2/phi] = 0: a silent neuron
    with pytest.raises(SingularMetricError, match="singular"):
        metric.solve(np.ones_like(students))


def test_divergent_runs_raise_or_stop(setup):
    teacher, students, _ = setup
    with pytest.raises((FloatingPointError, SingularMetricError)):
        learn("natural_gaussian", RATES, teacher, students, 0.5, [0, 1, 2], 1.0, n_metric_samples=100)
    res = learn("natural_gaussian", RATES, teacher, students, [0.5, 1e-5, 1e-5], [0, 1, 2], 1.0,
                n_metric_samples=100, on_divergence="stop")
    assert res["diverged"].tolist() == [True, False, False]
    assert np.isnan(res["kl"][0, -1]) and np.all(np.isfinite(res["kl"][1:]))


def test_kl_rate_zero_at_teacher_and_positive_elsewhere(setup):
    teacher, students, samples = setup
    assert kl_rate(teacher, teacher, samples) == pytest.approx(0.0, abs=1e-12)
    assert np.all(kl_rate(students, teacher, samples) > 0)


# --- analysis of experiment results (the chapter's tables) -----------------------------------


def test_time_to_fraction_on_hand_made_curve():
    times = np.array([0.0, 1.0, 2.0, 3.0])
    kl = np.array([[4.0, 3.0, 1.0, 0.5], [4.0, 2.0, 1.0, 1.0], [4.0, 2.5, 2.0, 0.2]])
    # median over runs: 4, 2.5, 1, 0.5 -> first at or below 4/4 = 1 is t = 2
    assert E.time_to_fraction(kl, times) == 2.0
    assert E.time_to_fraction(kl, times, fraction=0.5) == 2.0  # 2.5 > 2
    assert E.time_to_fraction(kl, times, fraction=0.1) == float("inf")
    with pytest.raises(ValueError, match="shape"):
        E.time_to_fraction(kl[:, :3], times)


def test_group_weight_error():
    rates = np.array([10.0, 10.0, 50.0, 50.0])
    teacher = np.array([3.0, 4.0, 1.0, 0.0])
    weights = np.array([[3.0, 4.0, 2.0, 0.0], [0.0, 4.0, 1.0, 0.0], [3.0, 4.0, 1.0, 0.0]])
    # low group: relative errors 0, 3/5, 0 -> median 0; high group: 1, 0, 0 -> median 0
    assert E.group_weight_error(weights, teacher, rates, "low") == 0.0
    assert E.group_weight_error(weights[:2], teacher, rates, "low") == pytest.approx(0.3)
    assert E.group_weight_error(weights[:2], teacher, rates, "high") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'low' or 'high'"):
        E.group_weight_error(weights, teacher, rates, "middle")


def _fake_speed():
    times = np.arange(8.0)
    kl = np.array([[8.0, 4, 2, 1, 1, 1, 1, 1], [8.0, 6, 4, 3, 2, 2, 2, 2]])
    teacher = np.array([1.0, 1.0, 2.0, 2.0])
    weights = np.zeros((2, 8, 4))
    weights[:, -1] = [[1.0, 1.0, 2.0, 2.0], [0.0, 1.0, 2.0, 2.0]]
    out = {"times": times, "rates": np.array([10.0, 10.0, 50.0, 50.0]), "teacher": teacher,
           "w0": weights[:, 0], "best_lr_euclidean": np.array(1e-5), "best_lr_natural_gaussian": np.array(3e-6)}
    for rule, scale in (("euclidean", 1.0), ("natural_gaussian", 0.5)):
        out[f"kl_{rule}"] = kl * scale
        out[f"weight_error_{rule}"] = np.tile(np.linspace(1, 0.1, 8), (2, 1))
        out[f"rate_error_{rule}"] = np.tile(np.linspace(5, 1, 8), (2, 1))
        out[f"weights_{rule}"] = weights
        out[f"tune_lrs_{rule}"] = np.array([1e-6, 1e-5])
        out[f"tune_scores_{rule}"] = np.array([0.3, 0.2])
    out["kl_natural_numeric"] = kl[:1]
    out["weight_error_natural_numeric"] = out["weight_error_euclidean"][:1]
    out["rate_error_natural_numeric"] = out["rate_error_euclidean"][:1]
    return out


def test_learning_speed_table_values():
    speed = _fake_speed()
    table = E.learning_speed_table(speed)
    assert list(table.index) == ["euclidean", "natural_gaussian", "natural_numeric",
                                 "natural_gaussian, same runs as estimated"]
    row = table.loc["euclidean"]
    # median KL 8, 5, 3, 2, 1.5, ... -> first <= 2 at t = 3; late quarter = last 2 records
    assert row["time to KL/4 (s)"] == 3.0
    assert row["late KL (nats/s)"] == pytest.approx(1.5)
    assert row["late KL sem"] == pytest.approx(0.5 / np.sqrt(2))
    assert row["lr"] == 1e-5 and row["runs"] == 2
    assert row["final weight error"] == pytest.approx(0.1)
    assert row["weight error, 10 Hz group"] == pytest.approx(np.median([0.0, 1 / np.sqrt(2)]))
    assert row["weight error, 50 Hz group"] == 0.0
    assert table.loc["natural_gaussian", "late KL (nats/s)"] == pytest.approx(0.75)
    assert table.loc["natural_numeric", "lr"] == 3e-6  # runs at the Gaussian-metric lr
    same = table.loc["natural_gaussian, same runs as estimated"]
    assert same["runs"] == 1 and same["late KL (nats/s)"] == pytest.approx(0.5)
    assert np.isnan(same["weight error, 10 Hz group"])  # group errors only over all runs
    tuning = E.tuning_table(speed)
    assert list(tuning["rule"]) == ["euclidean"] * 2 + ["natural_gaussian"] * 2
    # w0 = 0: the total change is the final weights, the target change the teacher
    expected = np.corrcoef([1.0, 1, 2, 2, 0, 1, 2, 2], [1.0, 1, 2, 2, 1, 1, 2, 2])[0, 1]
    assert E.change_target_correlation(speed, "euclidean") == pytest.approx(expected)


def test_democracy_table_on_constructed_trajectories():
    n, k = 8, 2
    alpha = np.geomspace(0.1, 1.0, n)
    teacher = np.ones(n)
    start = np.zeros((k, n))
    # plain runs remove all the error, attenuated runs half of it on every synapse
    plain = np.stack([start, start + 1.0], axis=1)
    attenuated = np.stack([start, start + 0.5], axis=1)
    demo = {"alpha": alpha, "teacher": teacher, "v0": start,
            "somatic_euclidean": np.concatenate([plain, attenuated]),
            "somatic_natural_gaussian": np.concatenate([plain, plain])}
    table = E.democracy_table(demo)
    assert list(table.index) == ["euclidean", "natural_gaussian"]
    assert table.loc["natural_gaussian", "max |attenuated - plain| / max somatic change"] == 0.0
    assert table.loc["euclidean", "max |attenuated - plain| / max somatic change"] == pytest.approx(0.5)
    assert table.loc["euclidean", "error removed, distal quarter"] == pytest.approx(0.5)
    assert table.loc["euclidean", "error removed without attenuation (distal set)"] == pytest.approx(1.0)
    distal, proximal = E.attenuation_groups(alpha)
    assert distal.sum() == proximal.sum() == 2 and not np.any(distal & proximal)
    assert np.all(alpha[distal] < alpha[proximal].min())


def _fake_het():
    rng = np.random.default_rng(0)
    trials, n = 5, 10
    weights = rng.normal(1.0, 0.3, (trials, n))
    stim = np.arange(n) < 3
    gauss = np.where(stim, 1.0, -0.2 - 0.1 * weights)  # affine in the weight, opposite sign
    numeric = np.where(stim, 1.0, -0.2 - 0.1 * weights[::-1])  # other trials' weights: weaker relation
    euclid = np.where(stim, 2.0, 0.0) + 0 * weights
    return {"weights": weights, "stimulated": stim, "dw_euclidean": euclid, "dw_natural_gaussian": gauss,
            "dw_natural_numeric": numeric, "dw_natural_numeric_100": gauss, "dw_natural_numeric_50": 2 * gauss}


def test_heterosynaptic_analysis_on_constructed_changes():
    het = _fake_het()
    table = E.heterosynaptic_table(het)
    assert table.loc["euclidean", "mean |change|, unstimulated"] == 0.0
    assert np.isnan(table.loc["euclidean", "R^2 of change vs weight (per trial, median)"])
    assert table.loc["natural_gaussian", "R^2 of change vs weight (per trial, median)"] == pytest.approx(1.0)
    assert table.loc["natural_gaussian", "trials with opposite signs"] == 1.0
    unstim = het["dw_natural_gaussian"][:, 3:]
    assert table.loc["natural_gaussian", "|unstimulated| / |stimulated|"] == pytest.approx(np.abs(unstim).mean())
    assert E.pattern_correlation(het, "dw_natural_gaussian") == pytest.approx(1.0)
    assert E.pattern_correlation(het, "dw_natural_numeric") < 0.99
    assert E.heterosynaptic_spread(het, "dw_natural_gaussian") == pytest.approx(
        np.median(unstim.std(1) / np.abs(unstim.mean(1))))
    assert E.heterosynaptic_mean_ratio(het) == pytest.approx(het["dw_natural_numeric"][:, 3:].mean() / unstim.mean())
    assert E.estimated_metric_keys(het, 20) == {20: "dw_natural_numeric", 50: "dw_natural_numeric_50",
                                                100: "dw_natural_numeric_100"}
    noise = E.sampling_noise_table(het, 20)
    assert list(noise.index) == [20, 50, 100]
    assert noise.loc[100, "correlation with the Gaussian-metric pattern"] == pytest.approx(1.0)
    assert E.estimated_metric_self_correlation(het, 20) == pytest.approx(1.0)  # 2 * gauss vs gauss
    del het["dw_natural_numeric_50"], het["dw_natural_numeric_100"]
    assert np.isnan(E.estimated_metric_self_correlation(het, 20))


def test_gain_slope_and_blocked_gap():
    variance = np.geomspace(1.0, 100.0, 20)
    gain = np.stack([3.0 / variance, 5.0 / variance])
    assert E.gain_slope(variance, gain) == pytest.approx(-1.0)
    assert E.gain_slope(variance, variance**0.5) == pytest.approx(0.5)
    blocks = {"w0": np.zeros(2), "w_1": np.array([3.0, 4.0]), "w_20": np.array([3.0, 4.5])}
    assert E.blocked_update_gap(blocks) == pytest.approx(0.1)


def test_blocked_and_per_step_updates_agree():
    blocks = E.blocked_vs_per_step_experiment(n_inputs=10, duration=1.0, seed=0)
    assert set(blocks) == {"w0", "w_1", "w_20"}
    assert 0 < E.blocked_update_gap(blocks) < 0.05


def test_identify_changes_and_dual_space_table(setup):
    teacher, students, samples = setup
    rng = np.random.default_rng(5)
    weights = students[:, None, :] + np.cumsum(rng.normal(0, 1e-3, (3, 20, RATES.size)), axis=1)
    weights[:, 0] = students
    table = E.identify_changes(weights)
    assert list(table.columns) == ["early (10 % of the run)", "end"]
    before, after = students.ravel(), weights[:, -1].ravel()
    keep = domain_mask(before, after)
    assert 0 < (~keep).sum()  # some weights change sign: left out for every candidate
    direct = identify(before[keep], after[keep]).set_index("candidate")["delta_cdf"]
    np.testing.assert_allclose(table["end"].loc[direct.index], direct)
    speed = {"rates": RATES, "weights_euclidean": weights, "weights_natural_gaussian": weights[::-1]}
    psi = E.dual_space_table(speed, samples)
    assert list(psi.index) == [(r, w) for r in ("euclidean", "natural_gaussian") for w in ("early", "end")]
    change = weights[:, -1] - weights[:, 0]
    assert psi.loc[("euclidean", "end"), "DeltaCDF, 2-norm (pooled)"] == pytest.approx(delta_cdf(change.ravel()))
    assert psi.loc[("euclidean", "end"), "DeltaCDF, 2-norm, 10 Hz group"] == pytest.approx(
        delta_cdf(change[:, :10].ravel()))
    assert np.all((psi.to_numpy() >= 0) & (psi.to_numpy() < 1))


def test_psp_statistics_match_campbell():
    stats = E.psp_statistics([10.0, 40.0], 100_000, seed=2)
    assert list(stats["rate (Hz)"]) == [10.0, 40.0]
    np.testing.assert_allclose(stats["measured rate (Hz)"], [10.0, 40.0], rtol=0.15)
    np.testing.assert_allclose(stats["mean PSP / (rate a1)"], 1.0, rtol=0.15)
    np.testing.assert_allclose(stats["PSP variance / (rate a2)"], 1.0, rtol=0.3)


def test_stored_presynaptic_variance_is_the_experiment_and_loads(tmp_path):
    params = dict(n_inputs=6, n_metric_samples=300, seed=2)
    first = E.stored_presynaptic_variance(root=tmp_path, **params)
    direct = E.presynaptic_variance_experiment(**params)
    assert not first.from_store and first.provenance["params"] == params
    assert set(first) == set(direct)
    for key in direct:
        np.testing.assert_array_equal(first[key], direct[key])
    again = E.stored_presynaptic_variance(root=tmp_path, **params)
    assert again.from_store
    assert len(list((tmp_path / "spiking_presynaptic_variance").glob("*.npz"))) == 1
