"""Tests for synaptic_geometry.experiments.biology: initial weights, learning simulations, power analysis."""

import numpy as np
import pytest

from synaptic_geometry.experiments import biology as B
from synaptic_geometry import delta_cdf, domain_mask, dual_change, get_potential
from synaptic_geometry.gaussianity import identify


def test_initial_weights_lognormal_and_dale_signs():
    rng = np.random.default_rng(0)
    w = B.initial_weights(20000, rng, "lognormal", sigma=0.7, inhibitory_fraction=0.2)
    assert np.all(w != 0)
    assert abs(np.mean(w < 0) - 0.2) < 0.02
    logs = np.log(np.abs(w))
    assert abs(np.median(logs)) < 0.03
    assert abs(np.std(logs) - 0.7) < 0.02


def test_initial_weights_two_constant():
    rng = np.random.default_rng(1)
    w = B.initial_weights(10000, rng, "two_constant", ratio=5.0, large_fraction=0.25)
    assert set(np.unique(w)) == {1.0, 5.0}
    assert abs(np.mean(w == 5.0) - 0.25) < 0.02


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "gamma"}, "unknown initial weight kind 'gamma'"),
        ({"inhibitory_fraction": 1.5}, "inhibitory_fraction"),
        ({"kind": "two_constant", "ratio": -1.0}, "ratio > 0"),
    ],
)
def test_initial_weights_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        B.initial_weights(10, np.random.default_rng(0), **kwargs)


def test_same_seed_same_weights():
    a = B.initial_weights(50, np.random.default_rng(3), inhibitory_fraction=0.3)
    b = B.initial_weights(50, np.random.default_rng(3), inhibitory_fraction=0.3)
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(2)
    w0 = B.initial_weights(3000, rng, "lognormal", sigma=1.0, inhibitory_fraction=0.2)
    return {p: B.train_linear_neuron(w0, p, seed=5, steps=200) for p in ("negative_entropy", "2-norm")}


def test_exponentiated_gradient_keeps_every_sign(trained):
    eg = trained["negative_entropy"]
    assert eg.losses[-1] < 1e-3 * eg.losses[0]
    assert domain_mask(eg.w_before, eg.w_after).all()
    assert np.all(np.sign(eg.w_after) == np.sign(eg.w_before))


def test_gradient_descent_flips_small_weights(trained):
    gd = trained["2-norm"]
    assert gd.losses[-1] < 1e-3 * gd.losses[0]
    flips = ~domain_mask(gd.w_before, gd.w_after)
    assert flips.any()
    # the synapses that flip are the small ones
    assert np.median(np.abs(gd.w_before[flips])) < np.median(np.abs(gd.w_before))


def test_learning_change_is_gaussian_in_its_own_geometry(trained):
    eg = trained["negative_entropy"]
    table = identify(eg.w_before, eg.w_after, candidates=("negative_entropy", "2-norm", "3-norm"))
    assert table["candidate"].iloc[0] == "negative_entropy"
    # log-normal start + Gaussian change of log|w|, nearly independent of it = log-normal end:
    # the variances of log|w| add up (up to the small correlation)
    change = dual_change(eg.w_before, eg.w_after, "negative_entropy")
    before = np.log(np.abs(eg.w_before))
    after = np.log(np.abs(eg.w_after))
    assert abs(np.corrcoef(before, change * np.sign(eg.w_before))[0, 1]) < 0.1
    assert abs(np.var(after) - (np.var(before) + np.var(change))) < 0.05 * np.var(after)
    assert delta_cdf(after, centered=True) < 0.05


def test_two_constant_start_gives_two_lognormal_classes():
    rng = np.random.default_rng(4)
    w0 = B.initial_weights(3000, rng, "two_constant", ratio=4.0, large_fraction=0.3)
    eg = B.train_linear_neuron(w0, "negative_entropy", seed=1, steps=200)
    logs = np.log(eg.w_after)
    small, large = logs[w0 == 1.0], logs[w0 == 4.0]
    # each class is its constant times a log-normal factor with the same spread
    assert abs(np.median(large) - np.median(small) - np.log(4.0)) < 0.1
    assert abs(np.std(large) / np.std(small) - 1) < 0.15
    assert delta_cdf(small - small.mean()) < 0.1


def test_train_refuses_zero_for_negative_entropy():
    with pytest.raises(ValueError, match="zero"):
        B.train_linear_neuron(np.array([1.0, 0.0, 2.0, 3.0]), "negative_entropy")


def test_change_scale_moves_median_synapse_by_rel_change():
    w0 = np.array([0.5, 1.0, 2.0])
    assert B.change_scale(w0, "negative_entropy", 0.2) == pytest.approx(0.2)
    assert B.change_scale(w0, "2-norm", 0.2) == pytest.approx(0.2 * 1.0)
    assert B.change_scale(w0, "3-norm", 0.2) == pytest.approx(0.2 * 2 * 1.0)


def test_simulated_measurements_without_noise_are_gaussian_in_true_geometry():
    rng = np.random.default_rng(7)
    for truth in ("negative_entropy", "2-norm", "3-norm"):
        before, after = B.simulate_measurements(5000, truth, rng, rel_change=0.1)
        keep = domain_mask(before, after)
        scores = identify(before[keep], after[keep], candidates=B.TRAINED_POTENTIALS)
        assert scores["candidate"].iloc[0] == truth
    before, after = B.simulate_measurements(2000, "negative_entropy", rng)
    assert np.all(np.sign(before) == np.sign(after))


def test_detection_limit_removes_small_synapses():
    rng = np.random.default_rng(8)
    before, after = B.simulate_measurements(4000, "negative_entropy", rng, detection_quantile=0.5)
    assert 1000 < before.size < 2500
    assert before.size == after.size


def test_identification_accuracy_shapes_seed_and_easy_case():
    kwargs = dict(n_values=[30, 1000], reps=10, seed=3)
    first = B.identification_accuracy(**kwargs)
    again = B.identification_accuracy(**kwargs)
    np.testing.assert_array_equal(first["correct"], again["correct"])
    assert first["correct"].shape == (3, 2)
    assert first["mean_delta_cdf"].shape == (3, 2, 3)
    assert np.all((first["correct"] >= 0) & (first["correct"] <= 1))
    assert first["correct"][0, 1] == 1.0  # negative entropy, 1000 synapses, perfect measurements


def test_multiplicative_noise_biases_towards_negative_entropy():
    # measurement noise with the geometry of exponentiated gradient makes the 2-norm look wrong
    result = B.identification_accuracy([2000], ("2-norm",), reps=10, seed=1, mult_noise=0.3)
    assert result["correct"][0, 0] <= 0.2


def test_observed_fraction_reduces_rows():
    result = B.identification_accuracy([1000], ("negative_entropy",), reps=5, seed=0, n_observed_fraction=0.25)
    assert 200 < result["kept"][0, 0] < 300
    with pytest.raises(ValueError, match="n_observed_fraction"):
        B.identification_accuracy([100], reps=1, n_observed_fraction=0)


def test_truth_must_be_a_candidate():
    with pytest.raises(ValueError, match="not among the candidates"):
        B.identification_accuracy([100], ("1.5-norm",), reps=1)


def test_power_analysis_through_store(tmp_path):
    conditions = {"perfect": {}, "noisy": {"add_noise": 0.1}}
    first = B.cached_power_analysis(conditions, [30, 100], reps=4, seed=0, root=tmp_path)
    assert first["accuracy"].shape == (2, 2)
    assert list(first["conditions"]) == ["perfect", "noisy"]
    np.testing.assert_allclose(first["accuracy"], first["correct"].mean(axis=1))
    stored = list((tmp_path / "biology_power_condition").glob("*.npz"))
    assert len(stored) == 2  # one per condition
    again = B.cached_power_analysis(conditions, [30, 100], reps=4, seed=0, root=tmp_path)
    direct = B.power_analysis(conditions, [30, 100], reps=4, seed=0)
    for key in ("correct", "chosen", "mean_delta_cdf", "kept"):
        np.testing.assert_array_equal(first[key], again[key])
        np.testing.assert_array_equal(first[key], direct[key])
    assert list(again["conditions"]) == ["perfect", "noisy"]
    # resumable: a lost condition is recomputed alone, the other is loaded
    stored[0].unlink()
    third = B.cached_power_analysis(conditions, [30, 100], reps=4, seed=0, root=tmp_path)
    np.testing.assert_array_equal(first["correct"], third["correct"])
    assert len(list((tmp_path / "biology_power_condition").glob("*.npz"))) == 2


def test_synapses_for_accuracy():
    n = [10, 100, 1000]
    assert B.synapses_for_accuracy(n, [0.5, 0.9, 1.0]) == pytest.approx(10 ** 2.5)
    assert B.synapses_for_accuracy(n, [0.96, 0.97, 0.99]) == 10
    assert np.isnan(B.synapses_for_accuracy(n, [0.5, 0.99, 0.9]))
    # a dip below the target after reaching it counts: the answer is after the last dip
    assert B.synapses_for_accuracy([10, 100, 1000, 10000], [0.96, 0.9, 0.95, 1.0]) == pytest.approx(1000)
    with pytest.raises(ValueError):
        B.synapses_for_accuracy([1, 2], [0.5])


def test_learning_runs_cached(tmp_path):
    kwargs = dict(n_synapses=400, potentials=["negative_entropy", "2-norm"], seed=1, steps=50)
    runs = B.learning_runs(root=tmp_path, **kwargs)
    assert runs["w_before"].shape == (2, 400)
    assert runs["w_after"].shape == (2, 2, 400)
    assert list(runs["potentials"]) == ["negative_entropy", "2-norm"]
    assert np.all(runs["final_loss"] < runs["first_loss"])
    assert domain_mask(runs["w_before"][0], runs["w_after"][0, 0]).all()
    assert not runs.from_store
    again = B.learning_runs(root=tmp_path, **kwargs)
    assert again.from_store
    np.testing.assert_array_equal(runs["w_after"], again["w_after"])
    assert len(list((tmp_path / "biology_learning").glob("*.json"))) == 1


def test_log_mixture_fit_recovers_two_lognormals():
    rng = np.random.default_rng(0)
    w = np.exp(np.r_[rng.normal(0.0, 0.3, 3000), rng.normal(2.0, 0.3, 1000)])
    one, two = B.log_mixture_fit(w, 1), B.log_mixture_fit(w, 2)
    assert two["bic"] < one["bic"]
    np.testing.assert_allclose(two["means"], [0.0, 2.0], atol=0.05)
    np.testing.assert_allclose(two["fractions"], [0.75, 0.25], atol=0.03)
    with pytest.raises(ValueError, match="non-zero"):
        B.log_mixture_fit([1.0, 0.0], 1)


def test_describe_condition():
    assert B.describe_condition({}) == "perfect measurements"
    assert B.describe_condition({"mult_noise": 0.1, "n_observed_fraction": 0.25}) == (
        "multiplicative noise 0.1, 25% of synapses observed"
    )
    assert B.describe_condition({"init": "two_constant"}) == "two-constant start"


def test_chosen_shares_and_sign_policy():
    result = B.identification_accuracy([300], reps=10, seed=2)
    np.testing.assert_allclose(result["chosen"].sum(axis=2), 1.0)
    np.testing.assert_allclose(result["correct"][:, 0], [result["chosen"][t, 0, t] for t in range(3)])
    # with 2-norm truth some synapses cross zero: "drop_candidates" then never picks negative entropy
    dropped = B.identification_accuracy([300], ("2-norm",), reps=10, seed=2, invalid="drop_candidates")
    assert dropped["chosen"][0, 0, 0] == 0
    assert dropped["kept"][0, 0] == 300
    with pytest.raises(ValueError, match="invalid must be"):
        B.identification_accuracy([30], reps=1, invalid="error")


def test_sign_keeping_accuracy_ignores_confusion_between_norms():
    power = {
        "true_potentials": np.array(["negative_entropy", "2-norm", "3-norm"]),
        "candidates": np.array(["negative_entropy", "2-norm", "3-norm"]),
        # one condition, one n: truth -> shares picked
        "chosen": np.array([[[[0.9, 0.1, 0.0]], [[0.0, 1.0, 0.0]], [[0.2, 0.8, 0.0]]]]),
    }
    # negative entropy right 0.9; 2-norm not called negative entropy 1.0; 3-norm 0.8 (all 2-norm picks count)
    np.testing.assert_allclose(B.sign_keeping_accuracy(power), [[(0.9 + 1.0 + 0.8) / 3]])


# --- tables of the chapter -----------------------------------------------------------------------


def _runs_from(trained_runs, w0):
    return {"inits": np.array(["lognormal"]), "potentials": np.array(list(trained_runs)), "w_before": w0[None],
            "w_after": np.array([[t.w_after for t in trained_runs.values()]]),
            "first_loss": np.array([[t.losses[0] for t in trained_runs.values()]]),
            "final_loss": np.array([[t.losses[-1] for t in trained_runs.values()]])}


def test_sign_change_table_counts_by_type():
    runs = {"inits": np.array(["lognormal"]), "potentials": np.array(["negative_entropy", "2-norm"]),
            "w_before": np.array([[1.0, -1.0, 0.5, -0.2, 2.0]]),
            "w_after": np.array([[[1.0, -1.0, 0.5, -0.2, 2.0], [-1.0, 1.0, 0.5, 0.3, 0.0]]]),
            "first_loss": np.array([[2.0, 2.0]]), "final_loss": np.array([[0.1, 0.2]])}
    table = B.sign_change_table(runs)
    assert list(table["rule"]) == ["negative_entropy", "2-norm"]
    assert list(table["sign changes"]) == [0, 4]  # a weight that reaches zero counts
    assert list(table["excitatory turned inhibitory"]) == [0, 2]
    assert list(table["inhibitory turned excitatory"]) == [0, 2]
    assert list(table["loss after"]) == [0.1, 0.2]


def test_log_shape_table_on_known_shapes():
    rng = np.random.default_rng(1)
    n = 4000
    lognormal = np.exp(rng.normal(0.0, 0.5, n))
    two = np.where(np.arange(n) < n // 2, 1.0, 8.0) * np.exp(rng.normal(0.0, 0.2, n))
    runs = {"inits": np.array(["lognormal", "two_constant"]), "potentials": np.array(["negative_entropy"]),
            "w_before": np.ones((2, n)), "w_after": np.stack([lognormal, two])[:, None]}
    runs["w_after"][0, 0, :10] *= -1  # sign changes are left out
    table = B.log_shape_table(runs, seed=0)
    assert list(table["start"]) == ["lognormal", "two_constant"]
    assert list(table["left out (sign changed)"]) == [10, 0]
    assert list(table["synapses drawn"]) == [n - 10, n]
    assert table.loc[0, "skewness standard error"] == pytest.approx(np.sqrt(6 / (n - 10)))
    assert abs(table.loc[0, "skewness of log|w| after"]) < 0.15
    assert table.loc[1, "BIC(2 log-normals) - BIC(1)"] < -100  # two components win clearly
    assert len(table.loc[0, "log-spread per component"]) == 1
    np.testing.assert_allclose(table.loc[0, "log-spread per component"], [0.5], atol=0.03)
    np.testing.assert_allclose(table.loc[1, "log-spread per component"], [0.2, 0.2], atol=0.03)


def test_identification_table_names_the_training_geometry(trained):
    runs = _runs_from(trained, trained["2-norm"].w_before)
    table = B.identification_table(runs)
    assert list(table["trained with"]) == ["negative_entropy", "2-norm"]
    assert list(table["identified"]) == ["negative_entropy", "2-norm"]
    flips = ~domain_mask(trained["2-norm"].w_before, trained["2-norm"].w_after)
    assert list(table["left out"]) == [0, int(flips.sum())] and flips.sum() > 0
    assert list(table["analysed"]) == [flips.size, flips.size - int(flips.sum())]
    eg = trained["negative_entropy"]
    direct = identify(eg.w_before, eg.w_after, candidates=B.TRAINED_POTENTIALS)
    for c, d in zip(direct["candidate"], direct["delta_cdf"]):
        assert table.loc[0, f"Delta-CDF {c}"] == pytest.approx(d)


def test_synapses_needed_table():
    power = {"conditions": np.array(["perfect", "noisy"]), "n_values": np.array([10, 100, 1000]),
             "true_potentials": np.array(["negative_entropy", "2-norm"]),
             "candidates": np.array(["negative_entropy", "2-norm"]),
             "accuracy": np.array([[0.5, 0.9, 1.0], [0.5, 0.6, 0.7]]),
             "correct": np.array([[[0.96, 0.97, 0.99], [0.5, 0.9, 1.0]], [[1.0, 1.0, 1.0], [0.0, 0.2, 0.4]]]),
             # condition x truth x n x candidate
             "chosen": np.zeros((2, 2, 3, 2))}
    power["chosen"][..., 0] = [[[1, 1, 1], [0, 0, 0]], [[1, 1, 1], [1, 1, 1]]]
    table = B.synapses_needed_table(power)
    assert list(table.index) == ["perfect", "noisy"]
    assert list(table.columns) == ["accuracy", "sign-keeping accuracy", "true negative_entropy named",
                                   "true 2-norm named"]
    assert table.loc["perfect", "accuracy"] == pytest.approx(10 ** 2.5)
    assert table.loc["perfect", "true negative_entropy named"] == 10
    assert table.loc["perfect", "sign-keeping accuracy"] == 10  # always right
    assert np.isnan(table.loc["noisy", "accuracy"])
    assert np.isnan(table.loc["noisy", "sign-keeping accuracy"])  # 2-norm always called negative entropy


def test_noise_tolerance():
    levels = [0.1, 0.001, 0.01, 0.03]
    assert B.noise_tolerance(levels, [0.5, 1.0, 0.97, 0.96]) == 0.03
    assert B.noise_tolerance(levels, [0.99, 1.0, 0.9, 0.99]) == 0.001  # stops at the first shortfall
    assert np.isnan(B.noise_tolerance(levels, [1.0, 0.9, 1.0, 1.0]))
    assert B.noise_tolerance(levels, [1.0] * 4, target=1.0) == 0.1
    with pytest.raises(ValueError, match="equal length"):
        B.noise_tolerance(levels, [1.0])


def test_skewness_check_on_a_known_change():
    rng = np.random.default_rng(3)
    n = 20000
    w0 = np.exp(rng.normal(0, 1, n))
    independent = w0 * np.exp(rng.normal(0, 0.5, n))
    dependent = w0 * np.exp(-0.3 * np.log(w0) + rng.normal(0, 0.1, n))  # change correlated with the start
    runs = {"inits": np.array(["lognormal"]), "potentials": np.array(["negative_entropy", "2-norm"]),
            "w_before": w0[None], "w_after": np.stack([independent, dependent])[None]}
    ok = B.skewness_check(runs)
    assert abs(ok["correlation"]) < 4 * ok["correlation_se"] and abs(ok["after"]) < 4 * ok["se"]
    assert ok["beyond_noise"] == (abs(ok["after"]) > 2 * ok["se"])
    assert ok["se"] == pytest.approx(np.sqrt(6 / n)) and ok["correlation_se"] == pytest.approx(1 / np.sqrt(n))
    bad = B.skewness_check(runs, potential="2-norm")
    assert bad["correlation"] < -0.9
    skewed = dict(runs, w_after=np.stack([w0 * np.exp(rng.exponential(1.0, n)), dependent])[None])
    assert B.skewness_check(skewed)["beyond_noise"]
    with pytest.raises(ValueError, match="at least 3"):
        B.skewness_se(2)


def test_count_words_and_needed_words_table():
    assert B.count_words(float("nan"), [30, 10000]) == "not reached by 10,000"
    assert B.count_words(30, [30, 10000]) == "30 or fewer"
    assert B.count_words(1234.4, [30, 10000]) == "about 1,234"
    power = {"conditions": np.array(["perfect"]), "n_values": np.array([10, 100]),
             "true_potentials": np.array(["negative_entropy"]), "candidates": np.array(["negative_entropy", "2-norm"]),
             "accuracy": np.array([[0.5, 1.0]]), "correct": np.array([[[0.5, 1.0]]]),
             "chosen": np.array([[[[0.5, 0.5], [1.0, 0.0]]]])}
    words = B.needed_words_table(power, {"perfect": {}})
    assert words.loc[0, "condition"] == "perfect measurements" and words.loc[0, "accuracy"] == "about 79"  # 10 ** 1.9
    confusion = B.confusion_table(power, {"perfect": {}})
    assert confusion.to_dict(orient="records") == [
        {"condition": "perfect measurements", "true": "negative_entropy", "picked negative_entropy": 1.0,
         "picked 2-norm": 0.0}]


def test_noise_sweep_conditions_curves_and_tolerance():
    conditions = B.noise_sweep_conditions({"rel_change": 0.3}, [0.01, 0.1])
    assert list(conditions) == ["mult_noise=0.01", "mult_noise=0.1", "add_noise=0.01", "add_noise=0.1"]
    assert conditions["add_noise=0.1"] == {"rel_change": 0.3, "add_noise": 0.1}
    sweep = {"conditions": np.array(list(conditions)), "true_potentials": np.array(["negative_entropy", "2-norm"]),
             "candidates": np.array(["negative_entropy", "2-norm"]),
             "accuracy": np.array([[1.0], [0.9], [0.97], [0.96]]),
             "correct": np.ones((4, 2, 1)), "chosen": np.zeros((4, 2, 1, 2))}
    sweep["chosen"][:, 0, :, 0] = 1  # negative entropy named when true
    sweep["chosen"][:, 1, :, 1] = 1
    curves = B.sweep_curves(sweep, conditions, "add_noise")
    np.testing.assert_array_equal(curves["levels"], [0.01, 0.1])
    np.testing.assert_array_equal(curves["accuracy"], [0.97, 0.96])
    table = B.tolerance_table(sweep, conditions)
    assert table.set_index("kind").loc["mult_noise", "accuracy"] == 0.01
    assert table.set_index("kind").loc["add_noise", "accuracy"] == 0.1
    assert list(table.noise) == ["multiplicative", "additive"]


@pytest.mark.parametrize("invalid", ["drop_rows", "drop_candidates"])
@pytest.mark.parametrize("condition", [{}, {"add_noise": 0.3, "detection_quantile": 0.3}, {"mult_noise": 0.1, "inhibitory_fraction": 0.5}])
def test_score_experiments_equals_one_experiment_at_a_time(condition, invalid):
    """The batched scores are the scalar Delta-CDFs of each experiment under the documented rules."""
    phis = [get_potential(c) for c in B.TRAINED_POTENTIALS]
    before, after, seen = B.simulate_measurement_batch(200, "2-norm", np.random.default_rng(4), 12, **condition)
    scores, kept = B.score_experiments(before, after, seen, phis, invalid)
    flips = 0
    for r in range(12):
        b, a = before[r][seen[r]], after[r][seen[r]]
        ok = domain_mask(b, a)
        flips += not ok.all()
        usable = [k for k, p in enumerate(phis) if ok.all() or not p.keeps_sign]
        if invalid == "drop_rows" or len(usable) < 2:
            b, a, usable = b[ok], a[ok], list(range(len(phis)))
        assert kept[r] == b.size
        expected = np.full(len(phis), np.nan)
        expected[usable] = [delta_cdf(dual_change(b, a, phis[k])) for k in usable]
        np.testing.assert_allclose(scores[r], expected, rtol=1e-12, atol=0)
    assert flips > 0 or not condition.get("add_noise")  # the rules were exercised


def test_one_experiment_of_the_batch_is_simulate_measurements():
    b1, a1 = B.simulate_measurements(500, "3-norm", np.random.default_rng(2), add_noise=0.1, detection_quantile=0.2)
    b2, a2, seen = B.simulate_measurement_batch(500, "3-norm", np.random.default_rng(2), 1, add_noise=0.1, detection_quantile=0.2)
    np.testing.assert_array_equal(b1, b2[seen])
    np.testing.assert_array_equal(a1, a2[seen])
    # experiments of a batch are independent draws with per-experiment change sizes
    b, a, _ = B.simulate_measurement_batch(500, "negative_entropy", np.random.default_rng(2), 3)
    assert not np.allclose(b[0], b[1])
    c = B.change_scale(b, "negative_entropy", 0.3)
    assert c.shape == (3, 1)
    np.testing.assert_allclose(c[:, 0], [B.change_scale(row, "negative_entropy", 0.3) for row in b])


def test_simulation_cells_give_each_cell_its_own_seeded_stream():
    cells = list(B.simulation_cells(["negative_entropy", "2-norm"], [10, 20, 30], seed=5))
    assert [(i, t, j, n) for (i, t), (j, n), _ in cells] == [
        (i, t, j, n) for i, t in enumerate(["negative_entropy", "2-norm"]) for j, n in enumerate([10, 20, 30])]
    draws = [rng.random() for *_, rng in cells]
    assert len(set(draws)) == len(draws)
    # cell (1, 2) draws the same whatever the other cells did
    children = np.random.SeedSequence(5).spawn(6)
    assert draws[5] == np.random.default_rng(children[5]).random()
    again = [rng.random() for *_, rng in B.simulation_cells(["negative_entropy", "2-norm"], [10, 20, 30], seed=5)]
    assert again == draws
