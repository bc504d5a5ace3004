"""The geometry test on synapse *counts*: dequantisation, matching, the centred statistic, the
bootstrap, count-distribution fits, and a calibration simulator.

A connectome gives, for each pair of identified cells, a whole number of synapses. The test of
Pogodin et al. (the change ``grad phi(after) - grad phi(before)`` is Gaussian in the dual space
of the right potential ``phi``) was stated for continuous weights; on counts four things need
care, and each has a function here.

Matching (:func:`match_counts`)
    Two tables are paired by id columns (for a connectome: presynaptic and postsynaptic cell).
    A connection listed in one table only has count 0 in the other: it *appeared* or *vanished*.
    Zeros are outside the domain of negative entropy (dual coordinate ``-inf``), so a comparison
    of all candidates uses the connections present in both; the others are counted and reported.

Dequantisation (:func:`dequantise`)
    A count is an integer, so its dual coordinates sit on a lattice and its empirical CDF moves in
    steps that no Gaussian has. ``"uniform"`` replaces a count ``k >= 1`` by a uniform draw from
    ``[k - 1/2, k + 1/2)`` (the values that round to ``k``; a zero by one from ``[0, 1/2)``): the
    count is read as a rounded continuous strength. ``"none"`` keeps the integers (to show the
    artefact). A verdict must not depend on one draw: :func:`profile_draws` repeats it.

The centred statistic (``delta_cdf(change, centered=True)``)
    Under mirror descent the dual change is a sum of (momentum-averaged) gradient steps. In the
    paper's regression setting those have mean zero over synapses, and the published statistic
    does not subtract the mean. In development all connections grow, so the change has a mean
    that carries no information on the geometry (a common factor ``c`` on every weight is the
    constant ``log c`` in the dual space of negative entropy); the uncentred statistic then
    scores the ratio of that mean to the spread rather than the shape. Centring estimates the
    one nuisance parameter (a cost of order ``1/n``, the same for every candidate and for the
    Gaussian null when it is centred too) and keeps the test about the shape. Every Delta-CDF here
    is centred unless it says otherwise.

Bootstrap over connections (:func:`bootstrap_profiles`)
    Resamples connections with replacement and draws a fresh dequantisation for each resample,
    so the intervals include both sampling and dequantisation spread.

Calibration (:func:`simulate_after`, :func:`fit_growth`, :func:`calibrate`)
    Data shaped like the measured pair: each observed count before is a Poisson count of a latent
    strength (drawn from its posterior, Gamma(k, 1) under the scale-free prior ``1/lambda``); the
    two animals differ by individual variability (a log-normal factor per animal and connection,
    of log-variance ``s2`` estimated from animals of the same age by :func:`individual_variability`);
    growth is a Gaussian change of known mean and spread in the dual space of a known potential
    (``"negative_entropy"`` is multiplicative growth, ``"2-norm"`` additive); the count after is
    Poisson, and only connections present after are kept, as in the data. :func:`fit_growth`
    chooses the mean and spread so that the simulated counts after and the spread of the count
    change match the measured pair; :func:`calibrate` then runs the same statistic on many
    simulated pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.special
import scipy.stats

from synaptic_geometry.gaussianity import delta_cdf, domain_mask
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, get_potential, require_finite

__all__ = [
    "CONTRAST",
    "DEQUANTISATIONS",
    "FAMILIES",
    "GROWTH_TRUTHS",
    "NO_GROWTH",
    "POWER",
    "SIGNIFICANCE",
    "CountFit",
    "GrowthFit",
    "MatchedCounts",
    "bootstrap_profiles",
    "calibrate",
    "contrast",
    "count_change_profile",
    "dequantise",
    "fit_count_distribution",
    "fit_growth",
    "growth_tests",
    "growth_verdict",
    "individual_variability",
    "match_counts",
    "profile_draws",
    "rejection_power",
    "simulate_after",
    "simulation_p_value",
    "truncated_pmf",
]

DEQUANTISATIONS = ("uniform", "none")
FAMILIES = ("poisson_lognormal", "negative_binomial")
#: The growth "truth" that is no growth at all: only individual variability and count noise.
NO_GROWTH = "none"
#: Multiplicative and additive growth: the truths of the calibration.
GROWTH_TRUTHS = ("negative_entropy", "2-norm")
#: The contrast that separates them: Delta-CDF under the first minus under the second.
CONTRAST = ("2-norm", "negative_entropy")
#: Level of the simulation tests, and the power a comparison needs to count.
SIGNIFICANCE = 0.05
POWER = 0.8


# --------------------------------------------------------------------------- counts and matching
def _as_counts(values, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional (one count per connection), got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be numbers, got dtype {array.dtype}")
    require_finite(array, f"{what} counts")
    bad = (array < 0) | (array != np.round(array))
    if bad.any():
        raise ValueError(f"{what} has {int(bad.sum())} value(s) that are not whole numbers >= 0, e.g. {array[bad][:3].tolist()}")
    return array.astype(np.int64)


def dequantise(counts, method: str, rng: np.random.Generator) -> np.ndarray:
    """Counts as continuous strengths.

    Parameters
    ----------
    counts
        Whole numbers >= 0.
    method
        ``"uniform"``: ``k >= 1`` becomes a uniform draw from ``[k - 1/2, k + 1/2)`` and ``0`` one from
        ``[0, 1/2)`` (the values that round to the count, all of them >= 0); ``"none"``: the counts
        as floats.
    rng
        Source of the draws (unused by ``"none"``).

    Returns
    -------
    numpy.ndarray
        Float64, same length; positive wherever the count is.
    """
    counts = _as_counts(counts, "counts")
    if method == "none":
        return counts.astype(np.float64)
    if method != "uniform":
        raise ValueError(f"unknown dequantisation {method!r}; accepted: {', '.join(DEQUANTISATIONS)}")
    jitter = rng.uniform(-0.5, 0.5, counts.size)
    return np.where(counts > 0, counts + jitter, 0.25 + 0.5 * jitter)


@dataclass
class MatchedCounts:
    """Counts of the union of two tables' items, paired by id: zero where an item is absent."""

    ids: pd.DataFrame
    before: np.ndarray
    after: np.ndarray

    @property
    def both(self) -> np.ndarray:
        """Mask of items present before and after (the ones every candidate can analyse)."""
        return domain_mask(self.before, self.after)

    @property
    def appeared(self) -> np.ndarray:
        return (self.before == 0) & (self.after > 0)

    @property
    def vanished(self) -> np.ndarray:
        return (self.before > 0) & (self.after == 0)


def match_counts(
    before: pd.DataFrame,
    after: pd.DataFrame,
    id_columns: Sequence[str] = ("pre", "post"),
    value_column: str = "synapses",
) -> MatchedCounts:
    """Pair two count tables by id columns; items missing from one table count 0 there.

    Parameters
    ----------
    before, after
        Tables with the ``id_columns`` and ``value_column`` (whole numbers >= 0).
    id_columns
        Columns that together identify an item (a connection: its pre- and postsynaptic cell).
    value_column
        The count.

    Returns
    -------
    MatchedCounts
        The union of items, sorted by id, with both counts.

    Raises
    ------
    ValueError
        For missing columns, an id repeated within a table, empty ids or counts that are not
        whole numbers >= 0.
    """
    id_columns = list(id_columns)
    if not id_columns:
        raise ValueError("give at least one id column")
    for table, what in ((before, "before"), (after, "after")):
        missing = [c for c in (*id_columns, value_column) if c not in table.columns]
        if missing:
            raise ValueError(f"the {what} table has no column(s) {missing}; its columns are {list(table.columns)}")
        if table[id_columns].isna().any(axis=None) or (table[id_columns].astype(str) == "").any(axis=None):
            raise ValueError(f"the {what} table has empty ids in {id_columns}")
        repeated = table.duplicated(id_columns, keep=False)
        if repeated.any():
            examples = table.loc[repeated, id_columns].drop_duplicates().head(5).astype(str).agg(" ".join, axis=1)
            raise ValueError(f"the {what} table repeats ids {list(examples)}; each item needs one row")
        _as_counts(table[value_column].to_numpy(), f"{what} column {value_column!r}")
    merged = pd.merge(before[[*id_columns, value_column]], after[[*id_columns, value_column]],
                      on=id_columns, how="outer", suffixes=("_before", "_after"))
    merged = merged.sort_values(id_columns, kind="stable").reset_index(drop=True)
    counts = [merged[f"{value_column}_{side}"].fillna(0).to_numpy() for side in ("before", "after")]
    return MatchedCounts(merged[id_columns], *(_as_counts(c, "counts") for c in counts))


# --------------------------------------------------------------------------- the statistic
def _candidates(candidates: Sequence[str]) -> list:
    potentials = [get_potential(c) for c in candidates]
    if not potentials:
        raise ValueError(f"no candidates given; e.g. {CANDIDATE_POTENTIALS}")
    return potentials


def count_change_profile(
    before: np.ndarray, after: np.ndarray, candidates: Sequence[str], centered: bool = True
) -> np.ndarray:
    """Delta-CDF of the dual change of (dequantised, positive) strengths under each candidate.

    Parameters
    ----------
    before, after
        Positive strengths of the same items (dequantised counts present on both sides).
    candidates
        Potential names.
    centered
        Subtract the mean change before comparing with N(0, 1) (the default here; see the module).

    Returns
    -------
    numpy.ndarray
        One Delta-CDF per candidate, in the candidates' order.
    """
    return np.array([delta_cdf(phi.grad(after) - phi.grad(before), centered=centered)
                     for phi in _candidates(candidates)])


def _present(before, after) -> tuple[np.ndarray, np.ndarray]:
    before, after = _as_counts(before, "before"), _as_counts(after, "after")
    if before.size != after.size:
        raise ValueError(f"before has {before.size} counts and after {after.size}; they must be paired")
    keep = domain_mask(before, after)  # counts are >= 0: present before and after
    if keep.sum() < 2:
        raise ValueError(f"only {int(keep.sum())} item(s) are present before and after; need at least 2")
    return before[keep], after[keep]


def profile_draws(
    before, after, candidates: Sequence[str] = CANDIDATE_POTENTIALS, n_draws: int = 20,
    dequantisation: str = "uniform", seed: int = 0, centered: bool = True,
) -> np.ndarray:
    """The profile (Delta-CDF per candidate) for ``n_draws`` dequantisations of the same counts.

    Only items present before and after are used. Returns an array ``n_draws x candidates``;
    with ``dequantisation="none"`` every row is the same.
    """
    before, after = _present(before, after)
    rng = np.random.default_rng(seed)
    return np.array([count_change_profile(dequantise(before, dequantisation, rng), dequantise(after, dequantisation, rng),
                                          candidates, centered) for _ in range(int(n_draws))])


def bootstrap_profiles(
    before, after, candidates: Sequence[str] = CANDIDATE_POTENTIALS, n_boot: int = 1000,
    dequantisation: str = "uniform", seed: int = 0, centered: bool = True,
) -> np.ndarray:
    """Profiles of ``n_boot`` bootstrap resamples of the items present before and after.

    Each resample draws items with replacement and a fresh dequantisation, and scores every
    candidate on the same resample (so differences between candidates are paired). Returns an
    array ``n_boot x candidates``. Resampled Delta-CDFs run somewhat higher than the data's,
    because a resample repeats items (a fresh dequantisation per copy softens the ties).
    """
    before, after = _present(before, after)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(int(n_boot)):
        index = rng.integers(0, before.size, before.size)
        rows.append(count_change_profile(dequantise(before[index], dequantisation, rng),
                                         dequantise(after[index], dequantisation, rng), candidates, centered))
    return np.array(rows)


# --------------------------------------------------------------------------- count distributions
def _pln_log_pmf(k: np.ndarray, mu: float, sigma: float, n_grid: int = 801) -> np.ndarray:
    """log P(K = k) for K ~ Poisson(exp(U)), U ~ N(mu, sigma^2), by the trapezoid rule in U."""
    u = np.linspace(mu - 9 * sigma, mu + 9 * sigma, n_grid)
    log_normal = scipy.stats.norm.logpdf(u, mu, sigma) + np.log(u[1] - u[0])
    terms = k[:, None] * u[None, :] - np.exp(u)[None, :] - scipy.special.gammaln(k + 1)[:, None] + log_normal[None, :]
    terms[:, [0, -1]] -= np.log(2.0)
    return scipy.special.logsumexp(terms, axis=1)


def _log_pmf(k: np.ndarray, family: str, params: dict) -> np.ndarray:
    if family == "poisson_lognormal":
        return _pln_log_pmf(k, params["mu"], params["sigma"])
    if family == "negative_binomial":
        mean, size = params["mean"], params["size"]
        return scipy.stats.nbinom.logpmf(k, size, size / (size + mean))
    raise ValueError(f"unknown family {family!r}; accepted: {', '.join(FAMILIES)}")


def truncated_pmf(k, family: str, params: dict) -> np.ndarray:
    """P(K = k | K >= 1) of a count family (``"poisson_lognormal"``: params ``mu``, ``sigma`` of the
    log-strength; ``"negative_binomial"``: ``mean`` and ``size``), for whole numbers ``k >= 1``."""
    k = _as_counts(np.atleast_1d(k), "k")
    if (k < 1).any():
        raise ValueError("the zero-truncated pmf is defined for k >= 1")
    log_zero = _log_pmf(np.array([0]), family, params)[0]
    return np.exp(_log_pmf(k, family, params) - np.log1p(-np.exp(log_zero)))


@dataclass
class CountFit:
    """A zero-truncated count family fitted by maximum likelihood, with a goodness-of-fit test."""

    family: str
    params: dict
    log_likelihood: float
    aic: float
    chi2: float
    df: int
    p_value: float
    n: int


def _chi2_bins(counts: np.ndarray, pmf_of, min_expected: float = 5.0) -> tuple[float, int]:
    """Pearson's chi-square over count bins 1, 2, ..., merged from the top until every bin expects >= 5."""
    n = counts.size
    top = int(counts.max())
    probabilities = pmf_of(np.arange(1, top + 1))
    observed = np.bincount(counts, minlength=top + 1)[1:].astype(float)
    expected = n * probabilities
    expected[-1] += n * max(0.0, 1.0 - probabilities.sum())  # the last bin is k >= top
    bins_obs, bins_exp, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed[::-1], expected[::-1]):  # merge from the tail down
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= min_expected:
            bins_obs.append(acc_o), bins_exp.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e > 0 and bins_exp:
        bins_obs[-1] += acc_o
        bins_exp[-1] += acc_e
    o, e = np.array(bins_obs), np.array(bins_exp)
    return float(np.sum((o - e) ** 2 / e)), len(o)


def fit_count_distribution(counts, family: str) -> CountFit:
    """Fit a zero-truncated count family to counts >= 1 by maximum likelihood.

    Parameters
    ----------
    counts
        Whole numbers >= 1 (e.g. synapses per connection of one animal).
    family
        ``"poisson_lognormal"`` (log-normal strengths counted with Poisson noise, the count model of
        a log-normal weight) or ``"negative_binomial"`` (gamma strengths counted with Poisson noise).

    Returns
    -------
    CountFit
        Parameters, log-likelihood, AIC (2 parameters) and Pearson's chi-square test of fit over
        count bins merged until each expects at least 5 (degrees of freedom: bins - 3).
    """
    counts = _as_counts(counts, "counts")
    if counts.size < 10 or (counts < 1).any():
        raise ValueError(f"need at least 10 counts, all >= 1; got {counts.size} with {int((counts < 1).sum())} below 1")
    values, multiplicity = np.unique(counts, return_counts=True)
    log_mean = float(np.log(counts.mean()))

    def unpack(theta):
        if family == "poisson_lognormal":
            return {"mu": float(theta[0]), "sigma": float(np.exp(theta[1]))}
        return {"mean": float(np.exp(theta[0])), "size": float(np.exp(theta[1]))}

    def negative_log_likelihood(theta):
        params = unpack(theta)
        log_zero = _log_pmf(np.array([0]), family, params)[0]
        log_p = _log_pmf(values, family, params) - np.log1p(-min(np.exp(log_zero), 1 - 1e-300))
        return -float(np.sum(multiplicity * log_p))

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; accepted: {', '.join(FAMILIES)}")
    starts = [np.array([log_mean - 0.5, np.log(0.8)]), np.array([log_mean - 1.5, np.log(1.5)])] \
        if family == "poisson_lognormal" else [np.array([log_mean, 0.0]), np.array([log_mean - 1.0, np.log(0.3)])]
    best = min((scipy.optimize.minimize(negative_log_likelihood, s, method="Nelder-Mead",
                                        options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 4000}) for s in starts),
               key=lambda r: r.fun)
    params = unpack(best.x)
    chi2, n_bins = _chi2_bins(counts, lambda k: truncated_pmf(k, family, params))
    df = n_bins - 3
    p_value = float(scipy.stats.chi2.sf(chi2, df)) if df > 0 else float("nan")
    return CountFit(family, params, -float(best.fun), 2 * 2 + 2 * float(best.fun), chi2, df, p_value, int(counts.size))


# --------------------------------------------------------------------------- individual variability
def individual_variability(counts_a, counts_b) -> float:
    """Log-variance ``s2`` of the individual factor that separates two animals of the same age.

    Model: the count of connection c in animal a is Poisson(lambda_c * exp(eta_ac)) with
    independent eta_ac ~ N(-s2/2, s2) (so that E exp(eta) = 1). Then
    E[(k_a - k_b)^2 - k_a - k_b] = 2 (exp(s2) - 1) lambda_c^2 and E[k_a k_b] = lambda_c^2, so summing
    over connections (absent ones count 0, on either side) gives the moment estimator
    ``s2 = log(1 + sum((a - b)^2 - a - b) / (2 sum(a b)))``, 0 when the numerator is negative
    (no spread beyond Poisson counting).
    """
    a, b = _as_counts(counts_a, "counts_a"), _as_counts(counts_b, "counts_b")
    if a.size != b.size:
        raise ValueError(f"the two animals have {a.size} and {b.size} counts; pair them first (match_counts)")
    products = float(np.sum(a * b))
    if products <= 0:
        raise ValueError("no connection is present in both animals; the variability cannot be estimated")
    excess = float(np.sum((a - b) ** 2 - a - b))
    return float(np.log1p(max(excess, 0.0) / (2 * products)))


# --------------------------------------------------------------------------- calibration simulator
@dataclass
class _Latents:
    """Random draws of a simulated pair that do not depend on the growth parameters."""

    before: np.ndarray  # observed counts before (>= 1), repeated
    strength: np.ndarray  # latent strength of the before animal, Gamma(k, 1)
    eta_before: np.ndarray
    eta_after: np.ndarray
    z: np.ndarray  # standard normal growth draws


def _latents(before: np.ndarray, individual_var: float, rng: np.random.Generator, copies: int = 1) -> _Latents:
    before = np.tile(before, copies)
    s = np.sqrt(individual_var)
    eta = rng.normal(-individual_var / 2, s, (2, before.size)) if s > 0 else np.zeros((2, before.size))
    return _Latents(before, rng.gamma(before.astype(float), 1.0), eta[0], eta[1], rng.standard_normal(before.size))


def _after_rate(latents: _Latents, truth: str, mean: float, spread: float) -> np.ndarray:
    """Latent strength after: the typical strength grown in the dual space of ``truth``, times the
    after animal's individual factor; a strength that growth takes below zero is 0 (vanished)."""
    typical = latents.strength * np.exp(-latents.eta_before)
    if truth == NO_GROWTH:
        grown = typical
    else:
        phi = get_potential(truth)
        dual = phi.grad(typical) + mean + spread * latents.z
        grown = phi.inv_grad(dual, sign=np.ones_like(dual)) if phi.keeps_sign else np.maximum(phi.inv_grad(dual), 0.0)
    return grown * np.exp(latents.eta_after)


def simulate_after(
    before, truth: str, mean: float, spread: float, individual_var: float, rng: np.random.Generator
) -> np.ndarray:
    """Simulated counts after, for measured counts ``before`` (>= 1), under a known growth geometry.

    Parameters
    ----------
    before
        Counts of the earlier animal, all >= 1.
    truth
        Potential in whose dual space growth is Gaussian (``"negative_entropy"``: multiplicative,
        ``"2-norm"``: additive, any p-norm), or ``"none"`` (no growth: only individual
        variability and counting noise).
    mean, spread
        Mean and standard deviation of the Gaussian dual change (ignored for ``"none"``).
    individual_var
        Log-variance of each animal's individual factor (:func:`individual_variability`).
    rng
        Source of every draw.

    Returns
    -------
    numpy.ndarray
        Poisson counts after (zeros where the connection vanished), same length as ``before``.
    """
    before = _as_counts(before, "before")
    if (before < 1).any():
        raise ValueError("simulate_after starts from connections present before: every count must be >= 1")
    if spread < 0 or individual_var < 0:
        raise ValueError(f"spread and individual_var must be >= 0, got {spread} and {individual_var}")
    latents = _latents(before, individual_var, rng)
    return rng.poisson(_after_rate(latents, truth, mean, spread))


@dataclass
class GrowthFit:
    """Growth parameters of a truth matched to a measured pair, and how well they match."""

    truth: str
    mean: float
    spread: float
    simulated: dict  # summaries of the simulated pair (expectations over counting noise)
    observed: dict
    spread_at_floor: bool  # the fit wanted no growth spread: individual variability explains it all


def _summaries(rate: np.ndarray, before: np.ndarray) -> dict:
    """Expected summaries over Poisson counting, among connections present after."""
    present = 1.0 - np.exp(-rate)
    weight = present.sum()
    mean_after = rate.sum() / weight
    change = (rate - before * present).sum() / weight
    change_sq = (rate + rate**2 - 2 * before * rate + before**2 * present).sum() / weight
    return {"mean_after": float(mean_after), "change_sd": float(np.sqrt(max(change_sq - change**2, 1e-300))),
            "survival": float(present.mean())}


def _observed_summaries(before: np.ndarray, after: np.ndarray) -> dict:
    kept = after > 0
    return {"mean_after": float(after[kept].mean()), "change_sd": float(np.std(after[kept] - before[kept])),
            "survival": float(kept.mean())}


def fit_growth(
    before, after, truth: str, individual_var: float, seed: int = 0, copies: int = 4
) -> GrowthFit:
    """Mean and spread of the growth of ``truth`` that reproduce a measured pair.

    Matches two summaries of the connections present before that are still present after: the
    mean count after and the standard deviation of the count change, each computed as its
    expectation over Poisson counting with fixed latent draws (so the match is smooth in the
    parameters). The share of connections that survive is reported, not fitted: it is a check.

    Parameters
    ----------
    before, after
        Measured counts of the connections present before (``before >= 1``; ``after`` may be 0).
    truth
        A potential name (see :func:`simulate_after`); ``"none"`` fits nothing.
    individual_var
        Log-variance of the individual factor.
    seed, copies
        Seed of the fixed latent draws, and how many times the connections are repeated in them.
    """
    before, after = _as_counts(before, "before"), _as_counts(after, "after")
    if before.size != after.size or (before < 1).any():
        raise ValueError("before and after must be paired counts of connections present before (before >= 1)")
    if (after > 0).sum() < 2:
        raise ValueError("fewer than two connections survive; nothing to match")
    observed = _observed_summaries(before, after)
    latents = _latents(before, individual_var, np.random.default_rng(seed), copies)
    if truth == NO_GROWTH:
        return GrowthFit(truth, 0.0, 0.0, _summaries(_after_rate(latents, truth, 0, 0), latents.before), observed, True)
    phi = get_potential(truth)
    kept = after > 0
    dual = phi.grad(after[kept].astype(float)) - phi.grad(before[kept].astype(float))
    scale = float(np.std(dual)) or 1.0
    target = np.log([observed["mean_after"], observed["change_sd"]])

    def residuals(theta):
        rate = _after_rate(latents, truth, theta[0], np.exp(theta[1]))
        if not np.any(rate > 0):
            return np.array([1e3, 1e3])
        s = _summaries(rate, latents.before)
        return np.log([s["mean_after"], s["change_sd"]]) - target

    low = np.log(1e-4 * scale)
    fit = scipy.optimize.least_squares(residuals, [float(np.mean(dual)), np.log(0.5 * scale)],
                                       bounds=([-np.inf, low], [np.inf, np.log(20 * scale)]), x_scale=[scale, 1.0])
    mean, spread = float(fit.x[0]), float(np.exp(fit.x[1]))
    simulated = _summaries(_after_rate(latents, truth, mean, spread), latents.before)
    return GrowthFit(truth, mean, spread, simulated, observed, bool(fit.x[1] <= low + 1e-3))


def calibrate(
    before, after, truths: Sequence[str], individual_var: float,
    candidates: Sequence[str] = CANDIDATE_POTENTIALS, n_reps: int = 100, n_draws: int = 5,
    dequantisation: str = "uniform", seed: int = 0,
) -> dict[str, np.ndarray]:
    """Profiles of simulated pairs shaped like a measured pair, under each known growth geometry.

    For each truth: fit its growth to the measured pair (:func:`fit_growth`), then ``n_reps``
    times simulate the counts after (:func:`simulate_after`), keep the connections present on
    both sides, and score the candidates as the data are scored (mean profile over ``n_draws``
    dequantisations).

    Returns
    -------
    dict of numpy.ndarray
        ``profiles`` (truths x reps x candidates), ``mean``, ``spread``, ``spread_at_floor``,
        ``survival_simulated`` (expected share of connections present after), ``mean_after`` and
        ``change_sd`` (simulated) per truth, ``survival_observed``, and ``n_present`` (truths x
        reps: connections present on both sides).
    """
    before, after = _as_counts(before, "before"), _as_counts(after, "after")
    keep = before > 0
    before, after = before[keep], after[keep]
    sequence = np.random.SeedSequence(seed)
    out = {"profiles": np.empty((len(truths), int(n_reps), len(candidates))),
           "n_present": np.empty((len(truths), int(n_reps)), dtype=np.int64)}
    columns = {key: [] for key in ("mean", "spread", "spread_at_floor", "survival_simulated", "mean_after", "change_sd")}
    for i, (truth, child) in enumerate(zip(truths, sequence.spawn(len(truths)))):
        fit_seed, sim_seed = child.generate_state(2)
        growth = fit_growth(before, after, truth, individual_var, seed=int(fit_seed))
        for key, value in (("mean", growth.mean), ("spread", growth.spread), ("spread_at_floor", growth.spread_at_floor),
                           ("survival_simulated", growth.simulated["survival"]),
                           ("mean_after", growth.simulated["mean_after"]), ("change_sd", growth.simulated["change_sd"])):
            columns[key].append(value)
        rng = np.random.default_rng(int(sim_seed))
        for r in range(int(n_reps)):
            simulated = simulate_after(before, truth, growth.mean, growth.spread, individual_var, rng)
            present = simulated > 0
            out["n_present"][i, r] = int(present.sum())
            out["profiles"][i, r] = profile_draws(before[present], simulated[present], candidates, n_draws,
                                                  dequantisation, seed=int(rng.integers(2**32))).mean(axis=0)
    out.update({key: np.array(value) for key, value in columns.items()})
    out["survival_observed"] = np.float64((after > 0).mean())
    return out


def simulation_p_value(observed: float, simulated: np.ndarray) -> float:
    """Two-sided p-value of ``observed`` in a simulated distribution: twice the smaller tail share,
    each counted with the usual +1 correction, capped at 1."""
    simulated = np.asarray(simulated, dtype=float)
    n = simulated.size
    if n == 0:
        raise ValueError("no simulated values")
    lower = (np.sum(simulated <= observed) + 1) / (n + 1)
    upper = (np.sum(simulated >= observed) + 1) / (n + 1)
    return float(min(1.0, 2 * min(lower, upper)))


# --------------------------------------------------------------------------- the simulation test
def contrast(profile: np.ndarray, candidates: Sequence[str]) -> np.ndarray:
    """Delta-CDF under ``CONTRAST[0]`` minus under ``CONTRAST[1]`` along the last (candidate) axis."""
    names = [get_potential(c).name for c in candidates]
    missing = [c for c in CONTRAST if c not in names]
    if missing:
        raise ValueError(f"the contrast needs the candidates {list(CONTRAST)}; missing {missing} from {names}")
    profile = np.asarray(profile)
    return profile[..., names.index(CONTRAST[0])] - profile[..., names.index(CONTRAST[1])]


def rejection_power(own: np.ndarray, other: np.ndarray, significance: float = SIGNIFICANCE) -> float:
    """Share of simulated contrasts of one geometry (``own``) that the other geometry's simulated
    distribution (``other``) rejects at ``significance`` (two-sided :func:`simulation_p_value`)."""
    return float(np.mean([simulation_p_value(x, other) < significance for x in np.asarray(own)]))


def growth_tests(
    observed: np.ndarray, simulated: np.ndarray, truths: Sequence[str], candidates: Sequence[str],
    significance: float = SIGNIFICANCE,
) -> pd.DataFrame:
    """The measured profile against simulated profiles of two growth geometries.

    Parameters
    ----------
    observed
        The data's profile (one Delta-CDF per candidate).
    simulated
        Profiles of simulated pairs, truths x reps x candidates (``calibrate(...)["profiles"]``).
    truths
        The two simulated geometries, in the order of ``simulated``.
    candidates
        The candidates of the profiles; must include both potentials of :data:`CONTRAST`.
    significance
        Level of the rejections counted in ``power``.

    Returns
    -------
    pandas.DataFrame
        One row per truth: ``truth``, ``named_truth`` (share of its simulated pairs whose lowest
        Delta-CDF is the truth), ``named_most`` (the candidate they name most often),
        ``contrast_median`` (simulated), ``observed_contrast``, ``p_value`` (two-sided simulation
        p-value of the observed contrast) and ``power`` (share of its simulated pairs that the
        other truth's distribution rejects).
    """
    truths = [get_potential(t).name for t in truths]
    names = [get_potential(c).name for c in candidates]
    if len(truths) != 2:
        raise ValueError(f"the simulation test compares two growth geometries, got {truths}")
    simulated = np.asarray(simulated, dtype=float)
    if simulated.shape[0] != 2 or simulated.shape[-1] != len(names):
        raise ValueError(f"simulated profiles must be 2 x reps x {len(names)}, got shape {simulated.shape}")
    observed_contrast = float(contrast(observed, names))
    contrasts = contrast(simulated, names)
    rows = []
    for t, truth in enumerate(truths):
        named = np.bincount(simulated[t].argmin(axis=1), minlength=len(names)) / simulated.shape[1]
        rows.append({
            "truth": truth, "named_truth": float(named[names.index(truth)]) if truth in names else float("nan"),
            "named_most": names[int(named.argmax())], "contrast_median": float(np.median(contrasts[t])),
            "observed_contrast": observed_contrast, "p_value": simulation_p_value(observed_contrast, contrasts[t]),
            "power": rejection_power(contrasts[t], contrasts[1 - t], significance),
        })
    return pd.DataFrame(rows)


def growth_verdict(
    p_multiplicative: float, p_additive: float, power: float,
    significance: float = SIGNIFICANCE, min_power: float = POWER,
) -> str:
    """The verdict of the simulation test in words.

    ``"multiplicative"`` when additive growth is rejected (p < ``significance``) and
    multiplicative growth is not; ``"additive"`` the other way round; ``"neither"`` when both are
    rejected; ``"undecided"`` when neither is; and ``"not separable"`` whenever the smaller
    ``power`` of the two comparisons is below ``min_power``.
    """
    if power < min_power:
        return "not separable"
    if p_additive < significance <= p_multiplicative:
        return "multiplicative"
    if p_multiplicative < significance <= p_additive:
        return "additive"
    if p_multiplicative < significance and p_additive < significance:
        return "neither"
    return "undecided"
