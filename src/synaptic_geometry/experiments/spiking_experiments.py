"""The experiments of the spiking-neuron chapter, and the analysis of their results.

Each ``*_experiment`` function runs one of the chapter's simulations with the model of
:mod:`synaptic_geometry.experiments.spiking` and returns a dict of arrays; the ``stored_*``
functions at the end declare the stored versions the chapter calls
(:func:`synaptic_geometry.infra.store.experiment`). The functions in between turn those dicts into
the numbers of the chapter's tables: learning speed, dendritic democracy, heterosynaptic changes,
the gain slope, and the Delta-CDF of the weight changes in several dual spaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from synaptic_geometry.experiments.spiking import (
    RULES,
    Neuron,
    check_rates,
    fisher_metric_estimate,
    fisher_potential_gradient,
    gaussian_metric_inverse,
    input_traces,
    invert_metric,
    learn,
    protocol_updates,
    stationary_samples,
    teacher_student,
)
from synaptic_geometry.experiments import spiking_protocol as P
from synaptic_geometry.gaussianity import delta_cdf, domain_mask, identify
from synaptic_geometry.infra.store import experiment

# ----------------------------------------------------------------------------------------------
# Experiments of the chapter (each returns a dict of arrays; the stored versions the chapter calls
# are declared with synaptic_geometry.infra.store.experiment at the end of this module)
# ----------------------------------------------------------------------------------------------


def two_group_rates(n: int, low: float, high: float) -> np.ndarray:
    """n input rates: the first half at ``low`` Hz, the second half at ``high`` Hz."""
    return np.r_[np.full(n // 2, float(low)), np.full(n - n // 2, float(high))]


def _late_kl(kl: np.ndarray) -> np.ndarray:
    """Mean KL over the last quarter of the records (inf for diverged runs)."""
    late = kl[..., -max(1, kl.shape[-1] // 4):]
    score = np.mean(late, axis=-1)
    return np.where(np.isfinite(score), score, np.inf)


def learning_speed_experiment(n_inputs: int = 100, low: float = 10.0, high: float = 50.0,
                              duration: float = 200.0, lrs_euclidean=(1e-6, 3e-6, 1e-5, 3e-5),
                              lrs_natural=(1e-6, 3e-6, 1e-5, 3e-5), n_tune: int = 2,
                              n_eval: int = 8, numeric_runs: int = 2, update_every: int = 20,
                              record_every: float = 2.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Teacher-student learning with Euclidean and natural gradients, each at its best lr.

    The lr of each rule is chosen from its grid by the lowest mean KL over the last quarter of
    the run, on a separate tuning draw (teacher and students from seed + 1000, ``n_tune`` runs per
    lr). The chosen lrs are then run on ``n_eval`` fresh students of a fresh teacher (seed); the
    numerical-metric natural gradient runs on the first ``numeric_runs`` of them at the natural
    lr chosen for the Gaussian metric.
    """
    rates = two_group_rates(n_inputs, low, high)
    out: dict[str, np.ndarray] = {"rates": rates}
    common = dict(update_every=update_every, record_every=record_every)
    best = {}
    for rule, grid in (("euclidean", lrs_euclidean), ("natural_gaussian", lrs_natural)):
        teacher, students = teacher_student(n_inputs, rates, seed + 1000, n_tune)
        lr = np.repeat(np.asarray(grid, dtype=float), n_tune)
        res = learn(rule, rates, teacher, np.tile(students, (len(grid), 1)), lr,
                    [seed + 1000 + k for k in range(lr.size)], duration, on_divergence="stop", **common)
        scores = _late_kl(res["kl"]).reshape(len(grid), n_tune).mean(axis=1)
        best[rule] = float(np.asarray(grid)[np.argmin(scores)])
        out[f"tune_lrs_{rule}"] = np.asarray(grid, dtype=float)
        out[f"tune_scores_{rule}"] = scores
        out[f"best_lr_{rule}"] = np.array(best[rule])
    teacher, students = teacher_student(n_inputs, rates, seed, n_eval)
    out["teacher"], out["w0"] = teacher, students
    seeds = [seed + k for k in range(n_eval)]
    for rule in ("euclidean", "natural_gaussian"):
        res = learn(rule, rates, teacher, students, best[rule], seeds, duration,
                    record_weights=True, on_divergence="stop", **common)
        for key in ("kl", "rate_error", "weight_error", "weights"):
            out[f"{key}_{rule}"] = res[key]
        out["times"] = res["times"]
    if numeric_runs > 0:
        res = learn("natural_numeric", rates, teacher, students[:numeric_runs], best["natural_gaussian"],
                    seeds[:numeric_runs], duration, on_divergence="stop", **common)
        for key in ("kl", "rate_error", "weight_error"):
            out[f"{key}_natural_numeric"] = res[key]
    return out


def dendritic_democracy_experiment(n_inputs: int = 100, rate: float = 20.0, duration: float = 100.0,
                                   lr_euclidean: float = 1e-5, lr_natural: float = 3e-6,
                                   alpha_min: float = 0.1, n_runs: int = 4, update_every: int = 20,
                                   record_every: float = 2.0, numeric: bool = True,
                                   seed: int = 0) -> dict[str, np.ndarray]:
    """Learning with and without dendritic attenuation, same somatic start, same spikes.

    Synapse i has attenuation alpha_i, log-spaced in [alpha_min, 1] (shuffled); every run is
    simulated twice with identical seeds: once with alpha = 1 and once with the attenuation,
    starting from the same somatic weights (dendritic w0 = v0 / alpha). Returns somatic weights.
    """
    rates = np.full(n_inputs, float(rate))
    rng = np.random.default_rng([seed, 11])
    alpha = rng.permutation(np.geomspace(alpha_min, 1.0, n_inputs))
    teacher, v0 = teacher_student(n_inputs, rates, seed + 2000, n_runs)
    out: dict[str, np.ndarray] = {"alpha": alpha, "teacher": teacher, "v0": v0, "rates": rates}
    seeds = [seed + 2000 + k for k in range(n_runs)] * 2
    att = np.concatenate([np.ones((n_runs, n_inputs)), np.tile(alpha, (n_runs, 1))])
    w0 = np.concatenate([v0, v0 / alpha])
    rules = [("euclidean", lr_euclidean), ("natural_gaussian", lr_natural)]
    if numeric:
        rules.append(("natural_numeric", lr_natural))
    for rule, lr in rules:
        res = learn(rule, rates, teacher, w0, lr, seeds, duration, attenuation=att, update_every=update_every,
                    record_every=record_every, record_weights=True, on_divergence="stop")
        somatic = res["weights"] * att[:, None, :]
        out[f"somatic_{rule}"] = somatic
        out["times"] = res["times"]
    return out


def heterosynaptic_experiment(n_inputs: int = 100, baseline: float = 10.0, n_stimulated: int = 20,
                              stim_rate: float = 50.0, target_rate: float = 80.0, duration: float = 1.0,
                              n_trials: int = 20, n_metric_samples: int = 4000,
                              more_samples: Sequence[int] = (), seed: int = 0,
                              neuron: Neuron = Neuron()) -> dict[str, np.ndarray]:
    """Weight changes when only some synapses are stimulated (the rest silent).

    The neuron's long-run inputs (which set the metric) are all at ``baseline`` Hz. During the
    protocol the first ``n_stimulated`` inputs fire at ``stim_rate`` Hz, the others are silent, and
    the teacher asks for ``target_rate`` Hz. Weights stay fixed during the protocol; the summed
    update at unit learning rate is returned for each rule, per trial (n_trials, n). For each
    count in ``more_samples`` the estimated-metric update is repeated with that many samples
    (key ``dw_natural_numeric_<count>``), to show how its sampling noise shrinks.
    """
    metric_rates = np.full(n_inputs, float(baseline))
    protocol_rates = np.zeros(n_inputs)
    protocol_rates[:n_stimulated] = stim_rate
    _, weights = teacher_student(n_inputs, metric_rates, seed + 3000, n_trials, neuron)
    n_steps = int(round(duration / neuron.dt))
    _, x = input_traces(protocol_rates, n_steps, [seed + 3000 + k for k in range(n_trials)], neuron)
    rng = np.random.default_rng([seed, 13])
    target = rng.poisson(target_rate * neuron.dt, size=(n_trials, n_steps))
    samples = stationary_samples(metric_rates, n_metric_samples, seed + 3000, neuron)
    out = {"weights": weights, "stimulated": np.arange(n_inputs) < n_stimulated}
    with threadpool_limits(limits=1):
        for rule in RULES:
            out[f"dw_{rule}"] = protocol_updates(rule, weights, x, target, metric_rates, neuron,
                                                 x_samples=samples)
        for count in more_samples:
            more = stationary_samples(metric_rates, int(count), seed + 3001, neuron)
            out[f"dw_natural_numeric_{int(count)}"] = protocol_updates(
                "natural_numeric", weights, x, target, metric_rates, neuron, x_samples=more)
    return out


def presynaptic_variance_experiment(n_inputs: int = 100, rate_min: float = 2.0, rate_max: float = 50.0,
                                    n_metric_samples: int = 8000, n_neurons: int = 4, seed: int = 0,
                                    neuron: Neuron = Neuron()) -> dict[str, np.ndarray]:
    """The homosynaptic gain (diagonal of G^-1) of each synapse against its presynaptic variance.

    Rates log-spaced in [rate_min, rate_max]; the Fisher metric is estimated from stationary
    samples (no Gaussian approximation) for ``n_neurons`` random weight vectors, and also formed
    in the Gaussian approximation. Returns the measured trace variances and both diagonals.
    """
    rates = np.geomspace(rate_min, rate_max, n_inputs)
    _, weights = teacher_student(n_inputs, rates, seed + 4000, n_neurons, neuron)
    samples = stationary_samples(rates, n_metric_samples, seed + 4000, neuron)
    with threadpool_limits(limits=1):
        numeric = invert_metric(fisher_metric_estimate(weights, samples, neuron))
    gaussian = gaussian_metric_inverse(weights, rates, neuron)
    return {"rates": rates, "variance": samples.var(axis=0), "weights": weights,
            "gain_numeric": np.diagonal(numeric, axis1=-2, axis2=-1).copy(),
            "gain_gaussian": np.diagonal(gaussian, axis1=-2, axis2=-1).copy()}


# ----------------------------------------------------------------------------------------------
# Analysis of the experiments' results (the numbers of the chapter's tables)
# ----------------------------------------------------------------------------------------------

Results = Mapping[str, np.ndarray]
"""A dict of arrays returned by one of the experiments above (or loaded from the store)."""


def psp_statistics(rates, n_steps: int, seed: int, neuron: Neuron = Neuron(),
                   skip: int = 400) -> pd.DataFrame:
    """Measured input rates and PSP-trace moments of one simulated run, relative to Campbell's theorem.

    The first ``skip`` steps (the traces start from rest) are left out of the moments. Columns:
    rate, measured rate, mean PSP / (rate a1), PSP variance / (rate a2), all close to the rate
    or to 1 for a correct simulation.
    """
    rates = check_rates(rates)
    spikes, x = input_traces(rates, n_steps, seeds=[seed], neuron=neuron)
    a1, a2 = neuron.psp_integrals()
    x = x[0, skip:]
    return pd.DataFrame({
        "rate (Hz)": rates,
        "measured rate (Hz)": spikes[0].sum(0) / (n_steps * neuron.dt),
        "mean PSP / (rate a1)": x.mean(0) / (rates * a1),
        "PSP variance / (rate a2)": x.var(0) / (rates * a2),
    })


def blocked_vs_per_step_experiment(n_inputs: int = 100, duration: float = 20.0,
                                   seed: int = 0) -> dict[str, np.ndarray]:
    """Natural-gradient learning with updates every step and every 20 steps, on the same spikes.

    Two runs (seeds seed + 500, seed + 501) of the 10/50 Hz teacher-student task at lr 3e-6.
    Returns the initial weights ``w0`` and the final weights ``w_1`` and ``w_20``.
    """
    rates = two_group_rates(n_inputs, 10.0, 50.0)
    teacher, w0 = teacher_student(n_inputs, rates, seed + 500, 2)
    out = {}
    for every in (1, 20):
        res = learn("natural_gaussian", rates, teacher, w0, 3e-6, [seed + 500, seed + 501],
                    duration=duration, record_every=duration, n_metric_samples=500,
                    update_every=every, metric_every=max(1, 200 // every))
        out[f"w_{every}"] = res["w_final"]
    out["w0"] = w0
    return out


def blocked_update_gap(blocks: Results) -> float:
    """|w(blocked updates) - w(per-step updates)| / |total change| from blocked_vs_per_step_experiment."""
    return float(np.linalg.norm(blocks["w_20"] - blocks["w_1"]) / np.linalg.norm(blocks["w_1"] - blocks["w0"]))


def tuning_table(speed: Results) -> pd.DataFrame:
    """The learning-rate grid of each rule with its late KL on the tuning draw."""
    return pd.concat([pd.DataFrame({"rule": rule, "lr": speed[f"tune_lrs_{rule}"],
                                    "late KL on tuning draw (nats/s)": speed[f"tune_scores_{rule}"]})
                      for rule in ("euclidean", "natural_gaussian")])


def rules_run(results: Results, prefix: str = "kl") -> list[str]:
    """The rules (in the order of RULES) that have ``<prefix>_<rule>`` in the results."""
    return [rule for rule in RULES if f"{prefix}_{rule}" in results]


def time_to_fraction(kl: np.ndarray, times: np.ndarray, fraction: float = 0.25) -> float:
    """First time at which the median KL over runs (rows) is at most ``fraction`` of its initial value.

    inf if it never gets there.
    """
    kl = np.asarray(kl, dtype=float)
    if kl.ndim != 2 or kl.shape[1] != len(times):
        raise ValueError(f"kl must have shape (runs, {len(times)}) to match times; got {kl.shape}")
    med = np.nanmedian(kl, axis=0)
    below = np.flatnonzero(med <= fraction * med[0])
    return float(times[below[0]]) if below.size else float("inf")


def group_weight_error(weights, teacher, rates, group: str) -> float:
    """Median over runs of the relative weight error on the ``"low"``- or ``"high"``-rate inputs.

    weights: (runs, n) final weights (somatic = dendritic: no attenuation); teacher: (n,).
    The low group is the inputs at the smallest rate, the high group all others.
    """
    if group not in ("low", "high"):
        raise ValueError(f"group must be 'low' or 'high'; got {group!r}")
    weights, teacher, rates = np.asarray(weights), np.asarray(teacher), np.asarray(rates)
    low = rates == rates.min()
    sel = low if group == "low" else ~low
    return float(np.median(np.linalg.norm(weights[:, sel] - teacher[sel], axis=1) / np.linalg.norm(teacher[sel])))


def speed_summary(speed: Results, rule: str, runs: slice | None = None) -> dict[str, float]:
    """The learning-speed measures of one rule (all evaluation runs, or the runs in ``runs``).

    lr, runs, time to KL/4, late KL (mean over the last quarter) and its sem over runs, final
    weight and rate errors (medians) and, for all runs of a rule with recorded weights, the final
    weight error per input group.
    """
    all_runs = runs is None
    kl = speed[f"kl_{rule}"][slice(None) if all_runs else runs]
    late = kl[:, -max(1, kl.shape[1] // 4):]
    lr_key = "best_lr_natural_gaussian" if "natural" in rule else f"best_lr_{rule}"
    sel = slice(None) if all_runs else runs
    row = {"lr": float(speed[lr_key]),
           "runs": kl.shape[0], "time to KL/4 (s)": time_to_fraction(kl, speed["times"]),
           "late KL (nats/s)": float(np.nanmean(late)),
           "late KL sem": float(np.nanstd(late.mean(1)) / np.sqrt(kl.shape[0])),
           "final weight error": float(np.nanmedian(speed[f"weight_error_{rule}"][sel, -1])),
           "final rate error (Hz)": float(np.nanmedian(speed[f"rate_error_{rule}"][sel, -1]))}
    if f"weights_{rule}" in speed and all_runs:
        final = speed[f"weights_{rule}"][:, -1]
        row["weight error, 10 Hz group"] = group_weight_error(final, speed["teacher"], speed["rates"], "low")
        row["weight error, 50 Hz group"] = group_weight_error(final, speed["teacher"], speed["rates"], "high")
    return row


def learning_speed_table(speed: Results) -> pd.DataFrame:
    """speed_summary of each rule run, plus the Gaussian-metric rule on the estimated-metric runs.

    The estimated-metric runs are the first few evaluation runs, so the extra row
    ``"natural_gaussian, same runs as estimated"`` compares the two metrics on the same runs.
    """
    rows = {rule: speed_summary(speed, rule) for rule in rules_run(speed)}
    if "kl_natural_numeric" in speed:
        n_num = speed["kl_natural_numeric"].shape[0]
        rows["natural_gaussian, same runs as estimated"] = speed_summary(speed, "natural_gaussian", slice(0, n_num))
    return pd.DataFrame.from_dict(rows, orient="index")


def attenuation_groups(alpha) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the distal (lowest quarter of alpha) and proximal (highest quarter) synapses."""
    alpha = np.asarray(alpha)
    return alpha < np.quantile(alpha, 0.25), alpha > np.quantile(alpha, 0.75)


def error_removed(somatic: np.ndarray, teacher: np.ndarray, sel: np.ndarray) -> float:
    """Median over runs of the fraction of the initial somatic error on ``sel`` removed at the end.

    somatic: (runs, records, n) somatic weights; teacher: (n,); sel: (n,) boolean mask.
    """
    err = np.linalg.norm(somatic[:, :, sel] - teacher[sel], axis=2)
    return float(np.median(1 - err[:, -1] / err[:, 0]))


def democracy_table(demo: Results) -> pd.DataFrame:
    """Per rule: how far the attenuated somatic trajectory departs from the plain one, and progress.

    The first half of the runs in ``somatic_<rule>`` is without attenuation, the second half with it
    (as returned by dendritic_democracy_experiment).
    """
    k = demo["v0"].shape[0]
    distal, proximal = attenuation_groups(demo["alpha"])
    rows = []
    for rule in rules_run(demo, "somatic"):
        som = demo[f"somatic_{rule}"]
        plain, attenuated = som[:k], som[k:]
        deviation = np.max(np.abs(attenuated - plain)) / np.max(np.abs(plain - plain[:, :1]))
        rows.append({"rule": rule, "max |attenuated - plain| / max somatic change": deviation,
                     "error removed, distal quarter": error_removed(attenuated, demo["teacher"], distal),
                     "error removed, proximal quarter": error_removed(attenuated, demo["teacher"], proximal),
                     "error removed without attenuation (distal set)": error_removed(plain, demo["teacher"], distal)})
    return pd.DataFrame(rows).set_index("rule")


def heterosynaptic_table(het: Results) -> pd.DataFrame:
    """Per rule: homosynaptic and heterosynaptic changes of the protocol and their relation.

    Columns: mean stimulated change, mean |unstimulated change|, their ratio of sizes, the share of
    trials whose mean unstimulated change has the sign opposite to the stimulated one, and the
    median over trials of the R^2 of a straight-line fit of the unstimulated change against the
    synapse's weight (nan if the unstimulated synapses never change).
    """
    stim = het["stimulated"].astype(bool)
    rows = []
    for rule in RULES:
        dw = het[f"dw_{rule}"]
        hom, hetero = dw[:, stim].mean(1), dw[:, ~stim]
        fits = [np.polyfit(het["weights"][t, ~stim], hetero[t], 1) for t in range(dw.shape[0])]
        r2 = [1 - np.var(hetero[t] - np.polyval(fits[t], het["weights"][t, ~stim])) / max(np.var(hetero[t]), 1e-300)
              for t in range(dw.shape[0])]
        rows.append({"rule": rule, "mean change, stimulated": float(hom.mean()),
                     "mean |change|, unstimulated": float(np.abs(hetero).mean()),
                     "|unstimulated| / |stimulated|": float(np.abs(hetero).mean() / np.abs(dw[:, stim]).mean()),
                     "trials with opposite signs": float(np.mean(np.sign(hetero.mean(1)) == -np.sign(hom))),
                     "R^2 of change vs weight (per trial, median)": float(np.median(r2)) if np.any(hetero) else np.nan})
    return pd.DataFrame(rows).set_index("rule")


def pattern_correlation(het: Results, key: str, other: str = "dw_natural_gaussian") -> float:
    """Median over trials of the correlation of two rules' changes across the unstimulated synapses."""
    stim = het["stimulated"].astype(bool)
    return float(np.median([np.corrcoef(het[key][t, ~stim], het[other][t, ~stim])[0, 1]
                            for t in range(het["weights"].shape[0])]))


def heterosynaptic_spread(het: Results, key: str) -> float:
    """Median over trials of sd / |mean| of the change across the unstimulated synapses."""
    d = het[key][:, ~het["stimulated"].astype(bool)]
    return float(np.median(d.std(1) / np.abs(d.mean(1))))


def heterosynaptic_mean_ratio(het: Results) -> float:
    """Mean unstimulated change under the estimated metric / under the Gaussian metric."""
    stim = het["stimulated"].astype(bool)
    return float(het["dw_natural_numeric"][:, ~stim].mean() / het["dw_natural_gaussian"][:, ~stim].mean())


def estimated_metric_keys(het: Results, n_metric_samples: int) -> dict[int, str]:
    """Sample count -> key of the estimated-metric changes (``n_metric_samples`` is the main count)."""
    prefix = "dw_natural_numeric_"
    more = sorted(int(k[len(prefix):]) for k in het if k.startswith(prefix))
    return {int(n_metric_samples): "dw_natural_numeric"} | {m: f"{prefix}{m}" for m in more}


def sampling_noise_table(het: Results, n_metric_samples: int) -> pd.DataFrame:
    """Per sample count of the estimated metric: pattern correlation with the Gaussian metric and spread."""
    keys = estimated_metric_keys(het, n_metric_samples)
    table = pd.DataFrame({
        "correlation with the Gaussian-metric pattern":
            {m: pattern_correlation(het, k) for m, k in keys.items()},
        "spread (sd / |mean|) across unstimulated synapses":
            {m: heterosynaptic_spread(het, k) for m, k in keys.items()}})
    table.index.name = "samples for the estimated metric"
    return table


def estimated_metric_self_correlation(het: Results, n_metric_samples: int) -> float:
    """Pattern correlation between the estimated-metric changes at the two largest sample counts."""
    keys = estimated_metric_keys(het, n_metric_samples)
    counts = sorted(keys)
    if len(counts) < 2:
        return float("nan")
    return pattern_correlation(het, keys[counts[-1]], keys[counts[-2]])


def gain_slope(variance, gain) -> float:
    """Log-log slope of the homosynaptic gain (averaged over neurons, axis 0) against the variance."""
    gain = np.asarray(gain)
    return float(np.polyfit(np.log(variance), np.log(gain.mean(0) if gain.ndim > 1 else gain), 1)[0])


def _snapshots(n_records: int) -> tuple[int, int]:
    """Record indices of the early (10 % of the run) and the end snapshots."""
    return max(1, n_records // 10), n_records - 1


def identify_changes(weights: np.ndarray) -> pd.DataFrame:
    """Delta-CDF of each default candidate for the change from the start, pooled over runs.

    weights: (runs, records, n). Columns: early (10 % of the run) and end; rows: candidates.
    Pairs outside a candidate's domain (e.g. sign changes under negative entropy) are left out.
    """
    early, end = _snapshots(weights.shape[1])
    out = {}
    for name, idx in (("early (10 % of the run)", early), ("end", end)):
        before, after = weights[:, 0].ravel(), weights[:, idx].ravel()
        keep = domain_mask(before, after)
        out[name] = identify(before[keep], after[keep]).set_index("candidate")["delta_cdf"]
    return pd.DataFrame(out)


def kept_fraction(weights: np.ndarray) -> dict[str, float]:
    """Share of the weights that :func:`identify_changes` analyses at each snapshot.

    The candidates include sign-keeping potentials, so a weight that changed sign (or is zero)
    between the start and the snapshot is left out of every candidate's Delta-CDF.
    """
    early, end = _snapshots(weights.shape[1])
    return {name: float(np.mean(domain_mask(weights[:, 0].ravel(), weights[:, idx].ravel())))
            for name, idx in (("early (10 % of the run)", early), ("end", end))}


def nested_noise_correlation(n_small: int, n_large: int) -> float:
    """Correlation of two sample means of pure noise, one over the first n_small of n_large samples.

    Cov = var / n_large and the standard deviations are sqrt(var / n_small), sqrt(var / n_large),
    so the correlation is sqrt(n_small / n_large): nested estimates agree this much with no signal.
    """
    if not 0 < n_small <= n_large:
        raise ValueError(f"need 0 < n_small <= n_large, got {n_small!r}, {n_large!r}")
    return float(np.sqrt(n_small / n_large))


def change_target_correlation(speed: Results, rule: str) -> float:
    """Correlation, pooled over runs, of the total weight change with teacher - initial weights."""
    change = (speed[f"weights_{rule}"][:, -1] - speed["w0"]).ravel()
    teacher = np.asarray(speed["teacher"])  # (n,) shared or (runs, n), one teacher per run
    target = (np.broadcast_to(teacher, speed["w0"].shape) - speed["w0"]).ravel()
    return float(np.corrcoef(change, target)[0, 1])


def dual_space_table(speed: Results, x_samples: np.ndarray, neuron: Neuron = Neuron()) -> pd.DataFrame:
    """Delta-CDF of the weight changes in the dual space of the Fisher potential Psi and in the 2-norm.

    Per rule (Euclidean, Gaussian-metric natural) and snapshot (early, end): the change of
    grad Psi (estimated from ``x_samples``) pooled over synapses, divided by the input rate, and
    centred within each run for the low-rate group; and the plain weight change pooled, for the
    low-rate group, and for the low-rate group centred the same way (the like-for-like comparison
    of the centred dual statistic).
    """
    rows = []
    low = speed["rates"] == speed["rates"].min()
    for rule in ("euclidean", "natural_gaussian"):
        w = speed[f"weights_{rule}"]
        for name, idx in zip(("early", "end"), _snapshots(w.shape[1])):
            dual = (fisher_potential_gradient(w[:, idx], x_samples, neuron)
                    - fisher_potential_gradient(w[:, 0], x_samples, neuron))
            change = w[:, idx] - w[:, 0]
            rows.append({"rule": rule, "when": name,
                         "DeltaCDF, Psi dual (pooled)": delta_cdf(dual.ravel()),
                         "DeltaCDF, Psi dual / rate (pooled)": delta_cdf((dual / speed["rates"]).ravel()),
                         "DeltaCDF, Psi dual, 10 Hz group, centred": delta_cdf(
                             (dual - dual.mean(1, keepdims=True))[:, low].ravel(), centered=True),
                         "DeltaCDF, 2-norm (pooled)": delta_cdf(change.ravel()),
                         "DeltaCDF, 2-norm, 10 Hz group": delta_cdf(change[:, low].ravel()),
                         "DeltaCDF, 2-norm, 10 Hz group, centred": delta_cdf(
                             (change - change.mean(1, keepdims=True))[:, low].ravel(), centered=True)})
    return pd.DataFrame(rows).set_index(["rule", "when"])


# ----------------------------------------------------------------------------------------------
# The paper's protocols: jobs and the analysis of their results
# ----------------------------------------------------------------------------------------------


def paper_protocol_jobs(n_trials: int, duration: float, eval_every: float, lr_factors: Sequence[float],
                        approx_trials: int, seed: int, chunk_trials: int | None = None) -> dict[str, list[dict]]:
    """The runs of the chapter's teacher-student experiments, as job dicts of
    :func:`~synaptic_geometry.experiments.spiking_protocol.teacher_student_run`.

    ``speed``: the 10/50-Hz task with every configuration the chapter needs there, simulated
    together on the same ``n_trials`` trials and spikes: the Euclidean and the natural rule at
    each learning-rate factor (:func:`robust_factors`, factor 1 = the paper's rates: Fig 3F and
    Fig 9D) and the approximate rule at Table 1's rate (Fig 12's 10/50 panel); weights are
    recorded for the two rules at factor 1. ``approx``: the other input-rate pairs of Table 1,
    the three rules at its rates, ``approx_trials`` trials each. Every job is split into chunks
    of at most ``chunk_trials`` consecutive trials (the sweep runs chunks in parallel; the trials
    are the same as in one run).
    """
    common = dict(duration=float(duration), eval_every=float(eval_every), seed=int(seed))
    table = P.TABLE1_RATES
    factors = robust_factors(lr_factors)
    rules = [r for r in ("euclidean", "natural") for _ in factors] + ["approximate"]
    etas = [table[(10.0, 50.0)][r] * f for r in ("euclidean", "natural") for f in factors]
    etas.append(table[(10.0, 50.0)]["approximate"])
    at_one = [factors.index(1.0), len(factors) + factors.index(1.0)]

    def chunks(total):
        size = int(total) if chunk_trials is None else max(1, int(chunk_trials))
        return [(first, min(size, int(total) - first)) for first in range(0, int(total), size)]

    speed = [dict(rules=rules, etas=etas, low=10.0, high=50.0, n_trials=count, first_trial=first,
                  weight_configs=at_one, **common) for first, count in chunks(n_trials)]
    approx = [dict(rules=list(P.PROTOCOL_RULES), etas=[rates[r] for r in P.PROTOCOL_RULES], low=low, high=high,
                   n_trials=count, first_trial=first, **common)
              for (low, high), rates in table.items() if (low, high) != (10.0, 50.0)
              for first, count in chunks(approx_trials)]
    return {"speed": speed, "approx": approx}


def robust_factors(lr_factors: Sequence[float]) -> list[float]:
    """The learning-rate factors of the robustness experiment: the given ones and 1, sorted."""
    return sorted({1.0, *map(float, lr_factors)})


def all_jobs(jobs: Mapping[str, list[dict]]) -> list[dict]:
    """All jobs of :func:`paper_protocol_jobs`, in one list."""
    return [job for group in jobs.values() for job in group]


def configuration(result: Results, j: int) -> dict[str, np.ndarray]:
    """Configuration ``j`` of a ``teacher_student_run`` result: times, kl, rmse, diverged."""
    return {"times": result["times"], "kl": result["kl"][j], "rmse": result["rmse"][j],
            "diverged": result["diverged"][j]}


def format_interval(point: float, lo: float, hi: float, digits: int = 2, unit: str = "") -> str:
    """"point [lo, hi] unit" with :func:`~synaptic_geometry.book.report.format_value` numbers."""
    from synaptic_geometry.book.report import format_value

    text = f"{format_value(point, digits)} [{format_value(lo, digits)}, {format_value(hi, digits)}]"
    return f"{text} {unit}".rstrip()


def curve_summary(runs: Mapping[str, Mapping[str, np.ndarray]], n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Per rule: time to the paper's KL threshold and to the 0.8-Hz rate RMSE, and the KL at the
    end, each as the trial-mean's value with a 95 % bootstrap interval over trials.

    ``runs``: rule -> dict with times, kl, rmse (trials, evals) and diverged (trials,), e.g. one
    configuration of ``teacher_student_run`` (:func:`configuration`). Times are in s; inf =
    never within the run. Columns hold (point, lo, hi) triples.
    """
    rows = []
    for rule, res in runs.items():
        times = res["times"]
        kl_t = P.bootstrap_crossing(times, res["kl"], P.PAPER_KL_THRESHOLD, n_boot, seed)
        rmse_t = P.bootstrap_crossing(times, res["rmse"], P.PAPER_RMSE_THRESHOLD, n_boot, seed)
        mean, lo, hi = P.bootstrap_mean_band(res["kl"][:, -1:], n_boot, seed)
        rows.append({"rule": rule, "trials": res["kl"].shape[0], "kl_time": kl_t, "rmse_time": rmse_t,
                     "kl_end": (float(mean[0]), float(lo[0]), float(hi[0])),
                     "diverged": int(np.sum(res["diverged"]))})
    return pd.DataFrame(rows).set_index("rule")


def compare_intervals(fast: tuple[float, float, float], slow: tuple[float, float, float]) -> str:
    """Verdict on "``fast`` is smaller than ``slow``" from (point, lo, hi) intervals.

    "holds" if fast's upper end is below slow's lower end, "reversed" if slow's upper end is below
    fast's lower end, "not resolved" if the intervals overlap.
    """
    if fast[2] < slow[1]:
        return "holds"
    if slow[2] < fast[1]:
        return "reversed"
    return "not resolved"


def robustness_frame(runs: Mapping[tuple[str, float], Mapping[str, np.ndarray]], n_boot: int,
                     seed: int = 0) -> pd.DataFrame:
    """Fig 9D: per (rule, factor) the time to the KL threshold with its bootstrap interval."""
    rows = []
    for (rule, factor), res in runs.items():
        t, lo, hi = P.bootstrap_crossing(res["times"], res["kl"], P.PAPER_KL_THRESHOLD, n_boot, seed)
        rows.append({"rule": rule, "factor": factor, "time": t, "lo": lo, "hi": hi,
                     "duration": float(res["times"][-1])})
    return pd.DataFrame(rows)


def angle_frame(angles: Results) -> pd.DataFrame:
    """Fig 12A-B: per input-rate pair, the mean (over initial weights) angle in degrees between the
    natural update and the approximate or the Euclidean update, in both geometries."""
    rows = []
    for low, high in angles["pairs"]:
        tag = f"{low:g}_{high:g}"
        row = {"pair": f"{low:g}/{high:g} Hz"}
        for geometry in ("euclid", "fisher"):
            for other in ("approximate", "euclidean"):
                row[f"{geometry}_{other}"] = float(np.mean(angles[f"{geometry}_{other}_{tag}"]))
        row["g4"] = float(np.mean(angles[f"g4_{tag}"]))
        rows.append(row)
    return pd.DataFrame(rows)


def run_paper_protocols(n_trials: int, duration: float, eval_every: float, lr_factors: Sequence[float],
                        approx_trials: int, path_trials: int, path_duration: float, seed: int = 0,
                        chunk_trials: int | None = None, executor: str = "local", workers: int = 1,
                        progress: bool = True):
    """Run (or load) every teacher-student job of the chapter through the sweep runner.

    Returns (jobs, results). ``jobs`` holds one description per experiment: ``main`` (Fig 3F:
    rules), ``robust`` (Fig 9D: rules, factors), ``approx`` (Fig 12C-F: one per input-rate pair,
    with low, high and rules) and ``paths`` (Fig 3E); ``results`` the matching results in the
    layout of :func:`~synaptic_geometry.experiments.spiking_protocol.teacher_student_run`
    (configurations first), the chunks of trials joined.
    """
    from synaptic_geometry.infra.sweep import run_sweep

    jobs = paper_protocol_jobs(n_trials, duration, eval_every, lr_factors, approx_trials, seed, chunk_trials)
    paths = [dict(n_trials=int(path_trials), duration=float(path_duration), seed=int(seed))]
    for fn, todo in ((P.two_synapse_run, paths), (P.teacher_student_run, all_jobs(jobs))):
        sweep = run_sweep(fn, todo, executor=executor, workers=workers, progress=progress)
        if not sweep.ok:
            raise RuntimeError(sweep.summary())
    speed = P.concatenate_trials([P.teacher_student_run(**job) for job in jobs["speed"]])
    factors = robust_factors(lr_factors)
    F = len(factors)
    one = factors.index(1.0)
    pick = lambda res, idx: {**res, **{k: res[k][idx] for k in ("kl", "rmse", "diverged")}}  # noqa: E731
    main = dict(pick(speed, [one, F + one]), weights=speed["weights"])
    described = {"main": [dict(rules=["euclidean", "natural"])],
                 "robust": [dict(rules=["euclidean"] * F + ["natural"] * F, factors=factors * 2)],
                 "approx": [], "paths": paths}
    results = {"main": [main], "robust": [pick(speed, list(range(2 * F)))], "approx": []}
    for low, high in P.TABLE1_RATES:
        if (low, high) == (10.0, 50.0):
            res = pick(speed, [one, F + one, 2 * F])
            rules = ["euclidean", "natural", "approximate"]
        else:
            res = P.concatenate_trials([P.teacher_student_run(**job) for job in jobs["approx"]
                                        if (job["low"], job["high"]) == (low, high)])
            rules = list(P.PROTOCOL_RULES)
        described["approx"].append(dict(low=low, high=high, rules=rules))
        results["approx"].append(res)
    results["paths"] = [P.two_synapse_run(**job) for job in paths]
    return described, results


def single_synapse_democracy(inv_alphas: Sequence[float] = tuple(range(1, 11)), rate: float = 5.0,
                             teacher_rate: float = 20.0, v0: float = 0.05, duration: float = 5.0,
                             n_trials: int = 100, seed: int = 0, neuron: Neuron = Neuron()) -> dict[str, np.ndarray]:
    """The paper's Fig 4 protocol: one synapse at ``rate`` Hz, a Poisson teacher at ``teacher_rate``
    Hz, somatic weight ``v0`` (a 3-mV PSP), attenuation 1/alpha in ``inv_alphas``, ``duration`` s.

    The dendritic weight is v0 * (1/alpha), so the somatic start is the same at every distance.
    Returns the somatic change (unit learning rate, weights held fixed over the protocol: the
    paper's rates move them by a negligible fraction in 5 s) per rule, (alphas, trials).
    """
    n_steps = int(round(duration / neuron.dt))
    _, x = input_traces([rate], n_steps, [seed + 6000 + k for k in range(n_trials)], neuron)
    rng = np.random.default_rng([int(seed), 17])
    target = rng.poisson(teacher_rate * neuron.dt, size=(n_trials, n_steps))
    out = {"inv_alphas": np.asarray(inv_alphas, dtype=float)}
    for rule in ("euclidean", "natural_gaussian"):
        somatic = []
        for inv in out["inv_alphas"]:
            alpha = np.full((n_trials, 1), 1.0 / inv)
            w = np.full((n_trials, 1), v0 * inv)
            dw = protocol_updates(rule, w, x, target, [rate], neuron, attenuation=alpha)
            somatic.append((alpha * dw)[:, 0])
        out[f"somatic_{rule}"] = np.array(somatic)
    return out


# ----------------------------------------------------------------------------------------------
# The chapter's stored experiments: the parameters the chapter sets, the rest at their defaults
# ----------------------------------------------------------------------------------------------


@experiment("spiking_single_synapse_democracy")
def stored_single_synapse_democracy(n_trials: int, seed: int) -> dict[str, np.ndarray]:
    """:func:`single_synapse_democracy` (the paper's Fig 4 protocol), stored."""
    return single_synapse_democracy(n_trials=n_trials, seed=seed)


@experiment("spiking_democracy")
def stored_democracy(n_inputs: int, duration: float, lr_euclidean: float, lr_natural: float, n_runs: int,
                     record_every: float, seed: int) -> dict[str, np.ndarray]:
    """:func:`dendritic_democracy_experiment`, stored."""
    return dendritic_democracy_experiment(n_inputs=n_inputs, duration=duration, lr_euclidean=lr_euclidean,
                                          lr_natural=lr_natural, n_runs=n_runs, record_every=record_every,
                                          seed=seed)


@experiment("spiking_heterosynaptic")
def stored_heterosynaptic(n_inputs: int, n_stimulated: int, n_trials: int, n_metric_samples: int,
                          more_samples: Sequence[int], seed: int) -> dict[str, np.ndarray]:
    """:func:`heterosynaptic_experiment`, stored."""
    return heterosynaptic_experiment(n_inputs=n_inputs, n_stimulated=n_stimulated, n_trials=n_trials,
                                     n_metric_samples=n_metric_samples, more_samples=more_samples, seed=seed)


@experiment("spiking_presynaptic_variance")
def stored_presynaptic_variance(n_inputs: int, n_metric_samples: int, seed: int) -> dict[str, np.ndarray]:
    """:func:`presynaptic_variance_experiment`, stored."""
    return presynaptic_variance_experiment(n_inputs=n_inputs, n_metric_samples=n_metric_samples, seed=seed)


# ----------------------------------------------------------------------------------------------
# Fig 5 and Fig 7 in the paper's parameters: analysis
# ----------------------------------------------------------------------------------------------


def loglog_slope(x, samples, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Least-squares slope of log(mean sample) against log(x), with a bootstrap interval over the
    samples of each point. x (points,), samples (points, trials), every mean > 0."""
    x = np.asarray(x, dtype=float)
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 2 or samples.shape[0] != x.size:
        raise ValueError(f"samples must have shape ({x.size}, trials), got {samples.shape}")

    def slope(means):
        if np.any(means <= 0):
            return np.nan
        return float(np.polyfit(np.log(x), np.log(means), 1)[0])

    rng = np.random.default_rng(seed)
    k = samples.shape[1]
    boots = [slope(np.take_along_axis(samples, rng.integers(0, k, size=samples.shape), 1).mean(1))
             for _ in range(n_boot)]
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return slope(samples.mean(1)), float(lo), float(hi)


def heterosynaptic_map_frame(result: Results, rule: str = "natural", n_boot: int = 1000, seed: int = 0,
                             level: float = 0.95) -> pd.DataFrame:
    """Fig 7B-D: per pair of initial weights, the relative change after the run of the stimulated and
    of the unstimulated weights (trial mean with a bootstrap interval), and the regime: "opposite"
    (signs differ, both intervals excluding zero), "same" (same sign, both excluding zero) or
    "not resolved"."""
    rng = np.random.default_rng(seed)
    rows = []
    for group in ("stim", "unstim"):
        w = np.asarray(result[f"{group}_{rule}"])
        rel = (w[:, :, -1] - w[:, :, 0]) / w[:, :, :1][..., 0]  # (pairs, trials)
        idx = rng.integers(0, rel.shape[1], size=(n_boot, rel.shape[1]))
        boots = rel[:, idx].mean(-1)  # (pairs, n_boot)
        lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], axis=1)
        rows.append(pd.DataFrame({f"{group}": rel.mean(1), f"{group}_lo": lo, f"{group}_hi": hi}))
    frame = pd.concat(rows, axis=1)
    frame.insert(0, "w_unstim", np.asarray(result["w_unstim"]))
    frame.insert(0, "w_stim", np.asarray(result["w_stim"]))
    sign = {g: np.where(frame[f"{g}_lo"] > 0, 1, np.where(frame[f"{g}_hi"] < 0, -1, 0)) for g in ("stim", "unstim")}
    frame["regime"] = np.where((sign["stim"] == 0) | (sign["unstim"] == 0), "not resolved",
                               np.where(sign["stim"] != sign["unstim"], "opposite", "same"))
    return frame
