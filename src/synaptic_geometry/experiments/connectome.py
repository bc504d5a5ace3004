"""The computations of the chapter "The geometry test on real connectomes".

The data are the eight C. elegans brain connectomes of Witvliet et al. (2021)
(:mod:`synaptic_geometry.experiments.connectome_data`); the count statistics are in
:mod:`synaptic_geometry.experiments.count_geometry`. The analysis was fixed before looking at
its results:

* chemical synapses only (the authors annotated electrical synapses only partially); a
  connection is an ordered pair of identified cells, matched across animals by the two names;
* every pair of animals, ordered from younger to older (the two adults: 7 then 8), scored with
  the centred Delta-CDF of the five candidate potentials on the connections present in both,
  counts dequantised by a uniform draw within half a count, averaged over dequantisation draws,
  with bootstrap intervals over connections and the centred Gaussian floor of the same size;
* variants reported beside it: the uncentred statistic, no dequantisation, and all connections
  of the pair (appeared and vanished ones included) for the candidates that can analyse zeros;
* the weight distribution of each animal: zero-truncated Poisson-log-normal against
  negative-binomial counts (maximum likelihood, AIC, chi-square test of fit);
* calibration on key pairs: the individual variability of two animals of the same age (the
  adults) estimated by moments; simulated pairs shaped like each key pair under multiplicative
  (negative entropy) and additive (2-norm) growth, with that variability and Poisson counting,
  scored exactly as the data; with and without dequantisation, and without individual
  variability; the adults also under no growth at all;
* the test that separates growth from individual differences: the contrast
  Delta-CDF(2-norm) - Delta-CDF(negative entropy) of the data against its simulated distribution
  under each growth geometry (two-sided simulation p-values), and the power of that comparison
  (how often a simulated pair of one geometry is rejected by the other's distribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from synaptic_geometry.experiments import connectome_data as data
from synaptic_geometry.experiments import count_geometry as counts
from synaptic_geometry.gaussianity import gaussian_floor
from synaptic_geometry.infra.store import experiment
from synaptic_geometry.potentials import display_name, get_potential

__all__ = [
    "ADULTS",
    "CONTRAST",
    "GROWTH_TRUTHS",
    "INTERVAL",
    "SIGNIFICANCE",
    "POWER",
    "DISPERSION_BINS",
    "adult_agreement",
    "all_pairs",
    "calibration",
    "calibration_table",
    "pair_kind",
    "parse_pair",
    "pair_profiles",
    "pair_table",
    "same_age_dispersion",
    "verdict_summary",
    "verdicts",
    "weight_fits",
    "weight_table",
]

#: The two animals of the same age.
ADULTS = (7, 8)
#: The simulation test's geometries, contrast, level and power (see count_geometry).
GROWTH_TRUTHS, CONTRAST = counts.GROWTH_TRUTHS, counts.CONTRAST
SIGNIFICANCE, POWER = counts.SIGNIFICANCE, counts.POWER
#: Level of every interval: bootstrap intervals, the Gaussian floor's upper quantile, null ranges.
INTERVAL = 0.95


def _ages() -> dict[int, float]:
    return {a.dataset: a.age_hours for a in data.ANIMALS}


def parse_pair(text: str) -> tuple[int, int]:
    """``"1-8"`` as the pair ``(1, 8)`` of dataset numbers (the earlier animal first)."""
    known = {a.dataset for a in data.ANIMALS}
    parts = str(text).split("-")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"a pair is written 'EARLIER-LATER' with dataset numbers, e.g. '1-8'; got {text!r}")
    pair = tuple(int(part) for part in parts)
    if not set(pair) <= known or pair[0] == pair[1]:
        raise ValueError(f"pair {text!r} needs two different datasets among {sorted(known)}")
    return pair


def all_pairs() -> list[tuple[int, int]]:
    """Every pair of the eight animals, younger first (for equal ages, the lower dataset number)."""
    ages = _ages()
    return [tuple(sorted(pair, key=lambda d: (ages[d], d))) for pair in combinations(sorted(ages), 2)]


def pair_kind(before: int, after: int) -> str:
    """``"same age"``, ``"within L1"`` (both in the first larval stage) or ``"across stages"``."""
    stages = {a.dataset: a.stage for a in data.ANIMALS}
    if _ages()[before] == _ages()[after]:
        return "same age"
    if stages[before] == stages[after] == "L1":
        return "within L1"
    return "across stages"


def _matched(before: int, after: int, table: pd.DataFrame | None = None) -> counts.MatchedCounts:
    """Chemical counts of two animals matched by (pre, post); ``table`` holds both (default: loaded)."""
    table = data.load_connections([before, after], "chemical") if table is None else table
    return counts.match_counts(table[table.dataset == before], table[table.dataset == after])


def _tails() -> list[float]:
    """Lower and upper quantile of an interval at level :data:`INTERVAL`."""
    return [(1 - INTERVAL) / 2, (1 + INTERVAL) / 2]


# --------------------------------------------------------------------------- weight distributions
@experiment("connectome_weight_fits")
def weight_fits(data_version: str) -> dict[str, np.ndarray]:
    """Zero-truncated Poisson-log-normal and negative-binomial fits to each animal's chemical counts.

    ``data_version`` (:func:`connectome_data.data_version`) names the data in the result's key.
    Returns per animal (in dataset order) and family (``count_geometry.FAMILIES`` order):
    ``params`` (animals x families x 2: mu, sigma or mean, size), ``log_likelihood``, ``aic``,
    ``chi2``, ``df``, ``p_value`` (animals x families), and ``dataset``, ``n``.
    """
    table = data.load_connections(None, "chemical")
    datasets = sorted(table.dataset.unique())
    shape = (len(datasets), len(counts.FAMILIES))
    out = {key: np.zeros(shape) for key in ("log_likelihood", "aic", "chi2", "df", "p_value")}
    out["params"] = np.zeros((*shape, 2))
    for i, number in enumerate(datasets):
        values = table.loc[table.dataset == number, "synapses"].to_numpy()
        for j, family in enumerate(counts.FAMILIES):
            fit = counts.fit_count_distribution(values, family)
            out["params"][i, j] = list(fit.params.values())
            for key in ("log_likelihood", "aic", "chi2", "df", "p_value"):
                out[key][i, j] = getattr(fit, key)
    out["dataset"] = np.array(datasets)
    out["n"] = np.array([(table.dataset == d).sum() for d in datasets])
    return out


def weight_table(fits: dict) -> pd.DataFrame:
    """One row per animal: stage, age, connections, the two fits' parameters, tests and AIC difference."""
    stages = {a.dataset: (a.stage, a.age_hours) for a in data.ANIMALS}
    rows = []
    for i, number in enumerate(fits["dataset"]):
        pln, nb = fits["params"][i]
        rows.append({
            "dataset": int(number), "stage": stages[int(number)][0], "age": stages[int(number)][1], "n": int(fits["n"][i]),
            "pln_mu": pln[0], "pln_sigma": pln[1], "pln_p": fits["p_value"][i, 0],
            "nb_mean": nb[0], "nb_size": nb[1], "nb_p": fits["p_value"][i, 1],
            "delta_aic": fits["aic"][i, 1] - fits["aic"][i, 0],
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the test on every pair
@experiment("connectome_pairs")
def pair_profiles(
    candidates: Sequence[str], n_draws: int, n_boot: int, n_floor: int, dequantisation: str, seed: int,
    data_version: str,
) -> dict[str, np.ndarray]:
    """The geometry test on every pair of animals (:func:`all_pairs`), with its variants.

    Returns (pairs in :func:`all_pairs` order, candidates in the given order): ``pairs``
    (P x 2), connection counts ``n_before``, ``n_after``, ``n_both``, ``n_appeared`` (of which
    ``n_appeared_new_cell`` involve a cell without any connection in the earlier animal),
    ``n_vanished``, ``growth`` (synapses after over before, on connections in both); the centred
    ``profile`` (P x C, mean over ``n_draws`` dequantisations) and its ``draw_sd``; bootstrap
    ``boot_low``, ``boot_high`` (percentile intervals at level :data:`INTERVAL`) and ``best_fraction``; the paired
    interval of the ``contrast`` (``contrast_low``, ``contrast_high``); the variants
    ``uncentred``, ``raw`` (no dequantisation) and ``union`` (every connection of the pair, NaN
    for candidates that cannot analyse zeros); and the centred Gaussian floor of each pair's size
    (``floor_median``, and ``floor_q95``, its :data:`INTERVAL` quantile, over ``n_floor`` samples).
    """
    pairs = all_pairs()
    candidates = list(candidates)
    n_p, n_c = len(pairs), len(candidates)
    out = {key: np.zeros((n_p, n_c)) for key in
           ("profile", "draw_sd", "boot_low", "boot_high", "best_fraction", "uncentred", "raw", "union")}
    scalars = {key: np.zeros(n_p) for key in ("n_before", "n_after", "n_both", "n_appeared", "n_appeared_new_cell",
                                               "n_vanished", "growth",
                                               "contrast_low", "contrast_high", "floor_median", "floor_q95")}
    children = np.random.SeedSequence(seed).spawn(n_p)
    zero_ok = [not get_potential(c).keeps_sign for c in candidates]
    table = data.load_connections(None, "chemical")
    for p, ((before, after), child) in enumerate(zip(pairs, children)):
        s_draws, s_boot, s_var, s_floor = (int(x) for x in child.generate_state(4))
        matched = _matched(before, after, table)
        both = matched.both
        kb, ka = matched.before, matched.after
        draws = counts.profile_draws(kb, ka, candidates, n_draws, dequantisation, s_draws)
        boot = counts.bootstrap_profiles(kb, ka, candidates, n_boot, dequantisation, s_boot)
        out["profile"][p], out["draw_sd"][p] = draws.mean(axis=0), draws.std(axis=0)
        out["boot_low"][p], out["boot_high"][p] = np.quantile(boot, _tails(), axis=0)
        out["best_fraction"][p] = np.bincount(boot.argmin(axis=1), minlength=n_c) / len(boot)
        scalars["contrast_low"][p], scalars["contrast_high"][p] = np.quantile(counts.contrast(boot, candidates), _tails())
        out["uncentred"][p] = counts.profile_draws(kb, ka, candidates, n_draws, dequantisation, s_var,
                                                   centered=False).mean(axis=0)
        out["raw"][p] = counts.profile_draws(kb, ka, candidates, 1, "none")[0]
        rng = np.random.default_rng(s_var)
        union_before = counts.dequantise(kb, dequantisation, rng)
        union_after = counts.dequantise(ka, dequantisation, rng)
        out["union"][p] = [counts.count_change_profile(union_before, union_after, [c])[0] if ok else np.nan
                           for c, ok in zip(candidates, zero_ok)]
        floor = gaussian_floor(int(both.sum()), n_floor, s_floor, centered=True)
        scalars["floor_median"][p], scalars["floor_q95"][p] = np.median(floor), np.quantile(floor, INTERVAL)
        scalars["n_before"][p], scalars["n_after"][p] = (kb > 0).sum(), (ka > 0).sum()
        scalars["n_both"][p], scalars["n_appeared"][p] = both.sum(), matched.appeared.sum()
        scalars["n_vanished"][p] = matched.vanished.sum()
        cells_before = set(matched.ids.pre[kb > 0]) | set(matched.ids.post[kb > 0])
        new_cell = ~(matched.ids.pre.isin(cells_before) & matched.ids.post.isin(cells_before)).to_numpy()
        scalars["n_appeared_new_cell"][p] = (matched.appeared & new_cell).sum()
        scalars["growth"][p] = ka[both].sum() / kb[both].sum()
    out.update(scalars)
    out["pairs"] = np.array(pairs)
    out["candidates"] = np.array(candidates)
    return out


def pair_table(result: dict, pairs: Sequence[Sequence[int]] | None = None) -> pd.DataFrame:
    """One row per pair: kind, connections in both, appeared, vanished, growth, best candidate
    (centred), its Delta-CDF with interval, the runner-up, the floor, and the best of each variant."""
    candidates = list(result["candidates"])
    index = {tuple(int(x) for x in pair): p for p, pair in enumerate(result["pairs"])}
    chosen = [index[tuple(int(x) for x in pair)] for pair in pairs] if pairs is not None else range(len(index))
    rows = []
    for p in chosen:
        before, after = (int(x) for x in result["pairs"][p])
        order = np.argsort(result["profile"][p])
        best, second = order[0], order[1]
        union = result["union"][p]
        rows.append({
            "pair": f"{before} → {after}", "kind": pair_kind(before, after), "n_both": int(result["n_both"][p]),
            "n_appeared": int(result["n_appeared"][p]), "n_appeared_new_cell": int(result["n_appeared_new_cell"][p]),
            "n_vanished": int(result["n_vanished"][p]), "growth": result["growth"][p],
            "best": display_name(candidates[best]),
            "best_delta": result["profile"][p, best], "best_low": result["boot_low"][p, best],
            "best_high": result["boot_high"][p, best], "best_fraction": result["best_fraction"][p, best],
            "best_interval": f"{result['profile'][p, best]:.2g} ({result['boot_low'][p, best]:.2g}–"
                             f"{result['boot_high'][p, best]:.2g})",
            "runner_up": display_name(candidates[second]), "runner_delta": result["profile"][p, second],
            "runner_text": f"{display_name(candidates[second])} ({result['profile'][p, second]:.2g})",
            "floor_q95": result["floor_q95"][p], "contrast": counts.contrast(result["profile"][p], candidates),
            "uncentred_best": display_name(candidates[int(np.argmin(result["uncentred"][p]))]),
            "uncentred_delta": float(np.min(result["uncentred"][p])),
            "raw_best": display_name(candidates[int(np.argmin(result["raw"][p]))]),
            "union_best": display_name(candidates[int(np.nanargmin(union))]),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- calibration
@experiment("connectome_calibration")
def calibration(
    key_pairs: Sequence[Sequence[int]], candidates: Sequence[str], n_reps: int, n_draws: int,
    dequantisation: str, seed: int, data_version: str,
) -> dict[str, np.ndarray]:
    """Simulated pairs shaped like each key pair under each growth geometry (:data:`GROWTH_TRUTHS`).

    The individual variability ``individual_var`` is estimated from the two adults (all their
    connections, zeros included). For each key pair and truth: the fitted growth (``mean``,
    ``spread``, ``spread_at_floor``), the simulated ``survival`` of connections present before
    (against ``survival_observed``), and the simulated profiles of three variants (K x T x reps
    x C): ``profiles`` (as the data are scored), ``profiles_raw`` (no dequantisation) and
    ``profiles_no_individual`` (no individual variability, growth refitted). For the adults,
    ``control_profiles`` (reps x C): no growth, only individual variability and counting.
    ``observed`` (K x C) is the data's profile with the same number of dequantisation draws.
    """
    candidates, truths = list(candidates), list(GROWTH_TRUTHS)
    table = data.load_connections(None, "chemical")
    adults = _matched(*ADULTS, table)
    individual_var = counts.individual_variability(adults.before, adults.after)
    n_k, n_t = len(key_pairs), len(truths)
    variants = {"profiles": (individual_var, dequantisation), "profiles_raw": (individual_var, "none"),
                "profiles_no_individual": (0.0, dequantisation)}
    out = {key: np.zeros((n_k, n_t, int(n_reps), len(candidates))) for key in variants}
    per_truth = {key: np.zeros((n_k, n_t)) for key in ("mean", "spread", "spread_at_floor", "survival")}
    observed, survival_observed = np.zeros((n_k, len(candidates))), np.zeros(n_k)
    children = np.random.SeedSequence(seed).spawn(n_k + 1)
    for k, (pair, child) in enumerate(zip(key_pairs, children)):
        matched = _matched(*pair, table)
        seeds = [int(x) for x in child.generate_state(len(variants) + 1)]
        observed[k] = counts.profile_draws(matched.before, matched.after, candidates, n_draws, dequantisation,
                                           seeds[-1]).mean(axis=0)
        for (key, (variance, method)), variant_seed in zip(variants.items(), seeds):
            result = counts.calibrate(matched.before, matched.after, truths, variance, candidates, n_reps, n_draws,
                                      method, variant_seed)
            out[key][k] = result["profiles"]
            if key == "profiles":
                per_truth["mean"][k], per_truth["spread"][k] = result["mean"], result["spread"]
                per_truth["spread_at_floor"][k] = result["spread_at_floor"]
                per_truth["survival"][k] = result["survival_simulated"]
                survival_observed[k] = result["survival_observed"]
    control = counts.calibrate(adults.before, adults.after, [counts.NO_GROWTH], individual_var, candidates, n_reps,
                               n_draws, dequantisation, int(children[-1].generate_state(1)[0]))
    out.update(per_truth)
    out.update({"control_profiles": control["profiles"][0], "observed": observed,
                "survival_observed": survival_observed, "individual_var": np.float64(individual_var),
                "key_pairs": np.array(key_pairs), "truths": np.array(truths), "candidates": np.array(candidates)})
    return out


def calibration_table(result: dict, variant: str = "profiles") -> pd.DataFrame:
    """One row per key pair and truth: fitted growth, survival (simulated and observed), and the
    simulation test of :func:`~synaptic_geometry.experiments.count_geometry.growth_tests`
    (how often the simulated pairs name the truth, the simulated contrast's median, the p-value of
    the data's contrast under that truth, and the power)."""
    candidates, truths = list(result["candidates"]), list(result["truths"])
    rows = []
    for k, pair in enumerate(result["key_pairs"]):
        tests = counts.growth_tests(result["observed"][k], result[variant][k], truths, candidates, SIGNIFICANCE)
        for t, test in enumerate(tests.to_dict(orient="records")):
            rows.append({
                "pair": f"{int(pair[0])} → {int(pair[1])}", "truth": display_name(test["truth"]),
                "spread": result["spread"][k, t], "spread_at_floor": bool(result["spread_at_floor"][k, t]),
                "survival": result["survival"][k, t], "survival_observed": result["survival_observed"][k],
                **{key: test[key] for key in ("named_truth", "contrast_median", "observed_contrast", "p_value", "power")},
                "named_most": display_name(test["named_most"]),
            })
    return pd.DataFrame(rows)


def verdicts(result: dict, variant: str = "profiles") -> pd.DataFrame:
    """The verdict per key pair, from the simulation tests, in words
    (:func:`~synaptic_geometry.experiments.count_geometry.growth_verdict` at :data:`SIGNIFICANCE`
    and :data:`POWER`)."""
    table = calibration_table(result, variant)
    rows = []
    for pair, group in table.groupby("pair", sort=False):
        p = dict(zip(group.truth, group.p_value))
        power = float(group.power.min())
        mult, add = p[display_name("negative_entropy")], p[display_name("2-norm")]
        rows.append({"pair": pair, "p_multiplicative": mult, "p_additive": add, "power": power,
                     "verdict": counts.growth_verdict(mult, add, power, SIGNIFICANCE, POWER)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the same-age control
#: Bins of the summed count of a connection in the two adults.
DISPERSION_BINS = ((1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, None))


def same_age_dispersion(n_null: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Do the two adults differ by more than Poisson counting of a common strength?

    If both adults count connection c as Poisson(lambda_c), then given the sum n = a + b the
    split is Binomial(n, 1/2) whatever lambda_c is, so E[(a - b)^2 | n] = n. Per bin of n (all
    connections of either adult): connections, mean (a - b)^2 over mean n (``ratio``, 1 under
    that null), and the 95% interval of the ratio under the null from ``n_null`` binomial
    splits of the same sums (level :data:`INTERVAL`).
    """
    matched = _matched(*ADULTS)
    a, b = matched.before, matched.after
    total = a + b
    rng = np.random.default_rng(seed)
    rows = []
    for low, high in DISPERSION_BINS:
        chosen = (total >= low) & (total <= (high if high is not None else total.max()))
        sums = total[chosen]
        ratio = float(np.mean((a[chosen] - b[chosen]) ** 2) / np.mean(sums))
        split = rng.binomial(np.broadcast_to(sums, (n_null, sums.size)), 0.5)
        null = np.mean((2 * split - sums) ** 2, axis=1) / np.mean(sums)
        rows.append({"bin": f"{low}" if low == high else f"{low}–{high}" if high else f"{low} or more",
                     "n": int(chosen.sum()), "ratio": ratio,
                     "null_low": float(np.quantile(null, _tails()[0])), "null_high": float(np.quantile(null, _tails()[1]))})
    return pd.DataFrame(rows)


def verdict_summary(table: pd.DataFrame) -> str:
    """The verdicts of :func:`verdicts` counted in words, e.g. "5 not separable, 2 undecided, 1 multiplicative"."""
    counted = table["verdict"].value_counts()
    return ", ".join(f"{int(n)} {word}" for word, n in counted.items())


def adult_agreement(table: pd.DataFrame) -> tuple[int, int]:
    """For earlier animals calibrated against both adults: how many get the same verdict for
    development to either adult, and how many were calibrated against both."""
    verdict = table.set_index("pair")["verdict"]
    agree = compared = 0
    for earlier in sorted({int(pair.split(" → ")[0]) for pair in verdict.index} - set(ADULTS)):
        names = [f"{earlier} → {adult}" for adult in ADULTS]
        if all(name in verdict.index for name in names):
            compared += 1
            agree += int(verdict[names[0]] == verdict[names[1]])
    return agree, compared
