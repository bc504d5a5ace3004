"""Synaptic weights under mirror descent: log-normal starts, Dale's principle, and power analysis.

Two kinds of simulation live here.

*Learning simulations* (:func:`train_linear_neuron`): a linear neuron with ``D`` synapses learns
``N = sqrt(D)`` random input-output pairs by mirror descent with a chosen potential, from
log-normal or two-constant initial weights, some excitatory (positive) and some inhibitory
(negative). Exponentiated gradient (``"negative_entropy"``) keeps every sign; gradient descent
(``"2-norm"``) does not.

*Measurement simulations* (:func:`simulate_measurements`, :func:`power_analysis`): the theory's
prediction taken as given -- the change of the weights in the dual space of the true potential is
Gaussian and independent of the initial weights -- plus what an experiment adds: multiplicative
and additive measurement noise, observing only some synapses, or only synapses above a detection
threshold. The power analysis asks how often the lowest Delta-CDF among the candidates falls on
the true potential.

Sizes are in units of the median initial weight magnitude (Delta-CDF does not depend on units).
The last section turns both kinds of results into the chapter's tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from synaptic_geometry.experiments.trajectory import descend, least_squares
from synaptic_geometry.gaussianity import delta_cdf, delta_cdf_batch, domain_mask, dual_change, identify
from synaptic_geometry.infra.store import experiment
from synaptic_geometry.infra.sweep import run_sweep
from synaptic_geometry.potentials import TRAINED_POTENTIALS, Potential, get_potential, require_finite

INIT_KINDS = ("lognormal", "two_constant")

__all__ = [
    "INIT_KINDS",
    "initial_weights",
    "train_linear_neuron",
    "Trained",
    "learning_runs",
    "log_mixture_fit",
    "change_scale",
    "BATCH_SYNAPSES",
    "simulate_measurement_batch",
    "simulate_measurements",
    "score_experiments",
    "simulation_cells",
    "identification_accuracy",
    "power_analysis",
    "sign_keeping_accuracy",
    "power_condition",
    "cached_power_analysis",
    "synapses_for_accuracy",
    "describe_condition",
    "LOG_COMPONENTS",
    "sign_change_table",
    "log_shape_table",
    "identification_table",
    "synapses_needed_table",
    "noise_tolerance",
    "skewness_se",
    "skewness_check",
    "count_words",
    "needed_words_table",
    "confusion_table",
    "NOISE_KINDS",
    "noise_sweep_conditions",
    "sweep_curves",
    "tolerance_table",
]


# --------------------------------------------------------------------------- initial weights
def initial_weights(
    n: int,
    rng: np.random.Generator,
    kind: str = "lognormal",
    sigma: float = 1.0,
    ratio: float = 4.0,
    large_fraction: float = 0.3,
    inhibitory_fraction: float = 0.0,
) -> np.ndarray:
    """``n`` initial weights whose magnitudes have median-ish scale 1.

    ``kind="lognormal"``: ``|w| = exp(sigma * z)``, z standard normal (median 1).
    ``kind="two_constant"``: ``|w| = 1`` or ``ratio`` (the latter with probability
    ``large_fraction``), the two-state picture of synapse sizes.
    Each synapse is inhibitory (negative) with probability ``inhibitory_fraction``: its sign is set
    by its presynaptic neuron's type (Dale's principle).
    """
    n = _positive_int(n, "n")
    if kind == "lognormal":
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        magnitude = np.exp(sigma * rng.standard_normal(n))
    elif kind == "two_constant":
        if ratio <= 0 or not 0 <= large_fraction <= 1:
            raise ValueError(f"two_constant needs ratio > 0 and 0 <= large_fraction <= 1, got {ratio}, {large_fraction}")
        magnitude = np.where(rng.random(n) < large_fraction, float(ratio), 1.0)
    else:
        raise ValueError(f"unknown initial weight kind {kind!r}; known: {', '.join(INIT_KINDS)}")
    if not 0 <= inhibitory_fraction <= 1:
        raise ValueError(f"inhibitory_fraction must be in [0, 1], got {inhibitory_fraction}")
    sign = np.where(rng.random(n) < inhibitory_fraction, -1.0, 1.0)
    return sign * magnitude


def _positive_int(n, what: str) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


# --------------------------------------------------------------------------- learning simulation
@dataclass
class Trained:
    """Result of :func:`train_linear_neuron`."""

    w_before: np.ndarray
    w_after: np.ndarray
    losses: np.ndarray      # loss before each step, and after the last one
    lr: float


def train_linear_neuron(
    w0: np.ndarray,
    potential: str | Potential,
    seed: int = 0,
    n_patterns: int | None = None,
    steps: int = 300,
    lr_scale: float = 0.5,
) -> Trained:
    """Train a linear neuron ``y = x . w`` by mirror descent on the mean squared error.

    ``n_patterns`` (default ``int(sqrt(D))``) input patterns are standard normal, scaled so the
    initial output has unit variance; targets are random +-1 (as in the paper's linear
    regression). Full-batch mirror descent without momentum: ``grad phi(w) -= lr * gradient``.
    The learning rate is ``lr_scale`` over the largest eigenvalue of the loss curvature seen
    through the dual map at ``w0`` (a step that would raise the loss is retried at half the rate).
    Sign-keeping potentials step within the orthant of ``w0``.
    """
    phi = get_potential(potential)
    w0 = np.asarray(w0, dtype=np.float64).ravel()
    phi.check_domain(w0, "initial weights")
    d = w0.size
    n = int(np.sqrt(d)) if n_patterns is None else _positive_int(n_patterns, "n_patterns")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) / np.sqrt(np.sum(w0**2))
    y = rng.choice([-1.0, 1.0], size=n)
    curvature = (x / phi.hess_diag(w0)) @ x.T / n
    lr = lr_scale / float(np.linalg.eigvalsh(curvature)[-1])
    run = descend(least_squares(x, y), w0, phi, lr, steps, record_every=steps, schedule="backtracking")
    return Trained(w0, run.path[-1], run.losses, run.lr)


@experiment("biology_learning")
def learning_runs(
    n_synapses: int,
    potentials: Sequence[str] = ("negative_entropy", "2-norm"),
    inits: Sequence[str] = INIT_KINDS,
    seed: int = 0,
    sigma: float = 1.0,
    ratio: float = 4.0,
    large_fraction: float = 0.3,
    inhibitory_fraction: float = 0.2,
    steps: int = 300,
) -> dict[str, np.ndarray]:
    """:func:`train_linear_neuron` for each initial weight kind and potential, same data per kind,
    stored as the experiment ``biology_learning``.

    Returns ``w_before`` (init x synapse), ``w_after`` (init x potential x synapse),
    ``final_loss`` and ``first_loss`` (init x potential), and the labels ``inits``, ``potentials``.
    """
    root = np.random.SeedSequence(seed)
    before, after, first, final = [], [], [], []
    for kind, child in zip(inits, root.spawn(len(inits))):
        rng = np.random.default_rng(child)
        w0 = initial_weights(n_synapses, rng, kind, sigma, ratio, large_fraction, inhibitory_fraction)
        data_seed = int(rng.integers(2**32))
        runs = [train_linear_neuron(w0, p, seed=data_seed, steps=steps) for p in potentials]
        before.append(w0)
        after.append([r.w_after for r in runs])
        first.append([r.losses[0] for r in runs])
        final.append([r.losses[-1] for r in runs])
    return {
        "inits": np.array(inits, dtype=str),
        "potentials": np.array([get_potential(p).name for p in potentials], dtype=str),
        "w_before": np.array(before),
        "w_after": np.array(after),
        "first_loss": np.array(first),
        "final_loss": np.array(final),
    }


def log_mixture_fit(weights, n_components: int, seed: int = 0) -> dict[str, np.ndarray | float]:
    """Fit a mixture of ``n_components`` Gaussians to ``log|weights|`` (a log-normal mixture).

    Returns ``means``, ``stds``, ``fractions`` (sorted by mean) and ``bic`` (lower is better;
    compares numbers of components, as in fits of synapse sizes by one or two log-normals).
    """
    from sklearn.mixture import GaussianMixture

    w = np.asarray(weights, dtype=float).ravel()
    require_finite(w, "weights for log_mixture_fit")
    if np.any(w == 0):
        raise ValueError("log_mixture_fit needs non-zero weights")
    x = np.log(np.abs(w))[:, None]
    model = GaussianMixture(n_components, random_state=seed, n_init=3).fit(x)
    order = np.argsort(model.means_.ravel())
    return {
        "means": model.means_.ravel()[order],
        "stds": np.sqrt(model.covariances_.ravel())[order],
        "fractions": model.weights_[order],
        "bic": float(model.bic(x)),
    }


# --------------------------------------------------------------------------- measurement simulation
def change_scale(w0: np.ndarray, potential: str | Potential, rel_change: float) -> float | np.ndarray:
    """Dual-space change size that moves the median synapse by a fraction ``rel_change``.

    To first order a dual change ``c * xi`` moves a weight by ``c * xi / phi''(w)``, i.e. by the
    fraction ``c * xi / (|w| phi''(w))``; this returns ``c = rel_change * median(|w| phi''(w))``.
    For a 2-D ``w0`` (experiments x synapses) one ``c`` per row, as a column (experiments x 1).
    """
    phi = get_potential(potential)
    w0 = np.asarray(w0)
    if w0.ndim == 2:
        return rel_change * np.median(np.abs(w0) * phi.hess_diag(w0), axis=1, keepdims=True)
    return float(rel_change * np.median(np.abs(w0) * phi.hess_diag(w0)))


# experiments simulated at once by identification_accuracy: about this many synapses per batch
# (a batch of 50000-synapse experiments holds 40 of them; memory about 40 MB per array)
BATCH_SYNAPSES = 2_000_000


def simulate_measurement_batch(
    n: int,
    true_potential: str | Potential,
    rng: np.random.Generator,
    experiments: int = 1,
    *,
    init: str = "lognormal",
    sigma: float = 1.0,
    ratio: float = 4.0,
    large_fraction: float = 0.3,
    inhibitory_fraction: float = 0.0,
    rel_change: float = 0.3,
    mult_noise: float = 0.0,
    add_noise: float = 0.0,
    detection_quantile: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured weights of ``n`` synapses before and after learning, for several experiments.

    Learning: ``grad phi(w1) = grad phi(w0) + c * xi`` with xi standard normal and ``c`` from
    :func:`change_scale` (per experiment). Measurement, independently before and after: ``w *
    exp(mult_noise * e1) + add_noise * e2`` (e1, e2 standard normal; sizes are in units of the
    median initial weight). With ``detection_quantile = q > 0`` a synapse is observed only if both
    its measured sizes exceed the q-quantile of that experiment's true initial sizes.

    Returns ``before``, ``after`` (experiments x n) and ``seen`` (experiments x n, boolean: the
    synapses observed). The draws are made for all experiments at once, in the order initial
    weights, learning, noise before, noise after; one experiment draws exactly what
    :func:`simulate_measurements` draws.
    """
    phi = get_potential(true_potential)
    n, experiments = _positive_int(n, "n"), _positive_int(experiments, "experiments")
    shape = (experiments, n)
    w0 = initial_weights(experiments * n, rng, init, sigma, ratio, large_fraction, inhibitory_fraction).reshape(shape)
    c = change_scale(w0, phi, rel_change)
    w1 = phi.inv_grad(phi.grad(w0) + c * rng.standard_normal(shape), sign=np.sign(w0))

    def measure(w):
        noisy = w * np.exp(mult_noise * rng.standard_normal(shape)) if mult_noise else w.copy()
        if add_noise:
            noisy += add_noise * rng.standard_normal(shape)
        return noisy

    before, after = measure(w0), measure(w1)
    if detection_quantile > 0:
        threshold = np.quantile(np.abs(w0), detection_quantile, axis=1, keepdims=True)
        seen = (np.abs(before) > threshold) & (np.abs(after) > threshold)
    else:
        seen = np.ones(shape, dtype=bool)
    return before, after, seen


def simulate_measurements(
    n: int,
    true_potential: str | Potential,
    rng: np.random.Generator,
    **condition,
) -> tuple[np.ndarray, np.ndarray]:
    """Measured weights of ``n`` synapses before and after learning with ``true_potential``: one
    experiment of :func:`simulate_measurement_batch` (same keyword arguments), keeping only the
    synapses observed, so fewer than ``n`` may come back under a detection limit."""
    before, after, seen = simulate_measurement_batch(n, true_potential, rng, 1, **condition)
    return before[seen], after[seen]


def score_experiments(
    before: np.ndarray,
    after: np.ndarray,
    seen: np.ndarray,
    candidates: Sequence[Potential],
    invalid: str = "drop_rows",
) -> tuple[np.ndarray, np.ndarray]:
    """Delta-CDF of every candidate in every experiment (rows of ``before``/``after``/``seen``).

    Synapses that are zero or change sign cannot be analysed by a sign-keeping candidate; as in
    the ``identify`` tool, ``invalid="drop_rows"`` drops them for all candidates and
    ``"drop_candidates"`` drops the sign-keeping candidates from experiments that have any (unless
    fewer than two candidates would remain: then the synapses are dropped). Returns ``scores``
    (experiments x candidates; nan where a candidate was not scored, and in whole rows of
    experiments with fewer than 3 synapses left) and ``kept`` (synapses analysed per experiment).
    """
    consistent = seen & domain_mask(before, after).reshape(before.shape)
    clean = (consistent == seen).all(axis=1)
    keepers = np.array([p.keeps_sign for p in candidates])
    if invalid == "drop_rows" or np.count_nonzero(~keepers) < 2:
        rows, usable = consistent, np.ones((len(before), len(candidates)), dtype=bool)
    else:  # an experiment with an inconsistent synapse keeps it and loses its sign-keeping candidates
        rows = seen
        usable = clean[:, None] | ~keepers[None, :]
    kept = rows.sum(axis=1)
    scores = np.full((len(before), len(candidates)), np.nan)
    enough = kept >= 3
    b_safe = np.where(rows, before, 1.0)  # values outside a row's mask are never looked at
    a_safe = np.where(rows, after, 1.0)
    todo = [np.flatnonzero(enough & usable[:, k]) for k in range(len(candidates))]
    changes = [phi.grad(a_safe[r]) - phi.grad(b_safe[r]) for phi, r in zip(candidates, todo) if r.size]
    if changes:  # one batch for all candidates: they share the row counts, hence the normal quantiles
        every = np.concatenate([r for r in todo if r.size])
        values = delta_cdf_batch(np.concatenate(changes), rows[every])
        start = 0
        for k, r in enumerate(todo):
            scores[r, k] = values[start:start + r.size]
            start += r.size
    return scores, kept


def simulation_cells(
    true_potentials: Sequence[str], n_values: Sequence[int], seed: int
) -> Iterator[tuple[tuple[int, str], tuple[int, int], np.random.Generator]]:
    """The cells of a simulate-then-score study: ``((i, truth), (j, n), rng)`` for each true
    potential and synapse count, truths outer, with one independent generator per cell (the
    children of ``SeedSequence(seed)`` in that order), so a cell's draws do not depend on the
    others. :func:`identification_accuracy` and the identify tool's calibration both loop over it.
    """
    children = np.random.SeedSequence(seed).spawn(len(true_potentials) * len(n_values))
    for i, truth in enumerate(true_potentials):
        for j, n in enumerate(n_values):
            yield (i, truth), (j, int(n)), np.random.default_rng(children[i * len(n_values) + j])


def identification_accuracy(
    n_values: Sequence[int],
    true_potentials: Sequence[str] = TRAINED_POTENTIALS,
    candidates: Sequence[str] = TRAINED_POTENTIALS,
    reps: int = 100,
    seed: int = 0,
    n_observed_fraction: float = 1.0,
    invalid: str = "drop_rows",
    **condition,
) -> dict[str, np.ndarray]:
    """Fraction of simulated experiments whose lowest Delta-CDF is the true potential.

    For each true potential and synapse count ``n`` (synapses that learn), ``reps`` experiments are
    simulated with :func:`simulate_measurement_batch` (keyword arguments ``condition``), in batches
    of about ``BATCH_SYNAPSES`` synapses (the batch size depends on ``n`` only, so results do not
    depend on the machine); a random fraction ``n_observed_fraction`` of the synapses is observed.
    Each experiment is scored by :func:`score_experiments` (``invalid`` as there); an experiment
    with fewer than 3 synapses left counts as a failure.
    Returns ``correct`` (truth x n), ``chosen`` (truth x n x candidate: share of experiments that
    picked each candidate), ``mean_delta_cdf`` (truth x n x candidate; over experiments that
    scored the candidate), ``kept`` (truth x n: mean number of rows analysed).
    """
    if not 0 < n_observed_fraction <= 1:
        raise ValueError(f"n_observed_fraction must be in (0, 1], got {n_observed_fraction}")
    if invalid not in ("drop_rows", "drop_candidates"):
        raise ValueError(f"invalid must be 'drop_rows' or 'drop_candidates', got {invalid!r}")
    phis = [get_potential(c) for c in candidates]
    names = [p.name for p in phis]
    truths = [get_potential(t).name for t in true_potentials]
    missing = [t for t in truths if t not in names]
    if missing:
        raise ValueError(f"true potentials {missing} are not among the candidates {names}")
    reps = _positive_int(reps, "reps")
    correct = np.zeros((len(truths), len(n_values)))
    chosen = np.zeros((len(truths), len(n_values), len(names)))
    delta_sum = np.zeros((len(truths), len(n_values), len(names)))
    scored = np.zeros((len(truths), len(n_values), len(names)))
    kept = np.zeros((len(truths), len(n_values)))
    for (i, truth), (j, n), rng in simulation_cells(truths, n_values, seed):
        batch = max(1, min(reps, BATCH_SYNAPSES // n))
        for start in range(0, reps, batch):
            size = min(batch, reps - start)
            before, after, seen = simulate_measurement_batch(n, truth, rng, size, **condition)
            if n_observed_fraction < 1:
                seen &= rng.random(seen.shape) < n_observed_fraction
            scores, rows = score_experiments(before, after, seen, phis, invalid)
            kept[i, j] += rows.sum() / reps
            done = ~np.isnan(scores).all(axis=1)
            delta_sum[i, j] += np.nansum(scores, axis=0)
            scored[i, j] += (~np.isnan(scores)).sum(axis=0)
            picks = np.nanargmin(scores[done], axis=1) if done.any() else np.zeros(0, dtype=int)
            chosen[i, j] += np.bincount(picks, minlength=len(names)) / reps
            correct[i, j] += np.count_nonzero(np.array(names)[picks] == truth) / reps
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_delta = delta_sum / scored
    return {"correct": correct, "chosen": chosen, "mean_delta_cdf": mean_delta, "kept": kept}


def power_analysis(
    conditions: Mapping[str, Mapping],
    n_values: Sequence[int],
    reps: int = 100,
    seed: int = 0,
    true_potentials: Sequence[str] = TRAINED_POTENTIALS,
    candidates: Sequence[str] = TRAINED_POTENTIALS,
) -> dict[str, np.ndarray]:
    """:func:`identification_accuracy` for each named condition (a dict of its keyword arguments).

    Condition number k (in order) uses seed ``seed + 1000 * k``.
    Returns arrays ``conditions`` (names), ``n_values``, ``true_potentials``, ``candidates``,
    ``correct`` (condition x truth x n), ``accuracy`` (condition x n: mean over truths, i.e. each
    truth equally likely), ``chosen``, ``mean_delta_cdf`` and ``kept``.
    """
    names = list(conditions)
    results = [
        identification_accuracy(n_values, true_potentials, candidates, reps, seed + 1000 * k, **conditions[name])
        for k, name in enumerate(names)
    ]
    return _power_arrays(names, n_values, results, true_potentials, candidates)


def _power_arrays(names, n_values, results, true_potentials=TRAINED_POTENTIALS, candidates=TRAINED_POTENTIALS):
    correct = np.stack([np.asarray(r["correct"]) for r in results])
    return {
        "conditions": np.array(names, dtype=str),
        "n_values": np.asarray(n_values, dtype=np.int64),
        "true_potentials": np.array([get_potential(t).name for t in true_potentials], dtype=str),
        "candidates": np.array([get_potential(c).name for c in candidates], dtype=str),
        "correct": correct,
        "accuracy": correct.mean(axis=1),
        "chosen": np.stack([np.asarray(r["chosen"]) for r in results]),
        "mean_delta_cdf": np.stack([np.asarray(r["mean_delta_cdf"]) for r in results]),
        "kept": np.stack([np.asarray(r["kept"]) for r in results]),
    }


@experiment("biology_power_condition")
def power_condition(condition: dict, n_values: list, reps: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """One condition of the power analysis, stored: :func:`identification_accuracy` with the
    trained potentials as truths and candidates."""
    return identification_accuracy([int(n) for n in n_values], reps=int(reps), seed=int(seed), **condition)


def sign_keeping_accuracy(power: Mapping[str, np.ndarray], keeper: str = "negative_entropy") -> np.ndarray:
    """Accuracy of the yes/no question "is the geometry ``keeper``?" (condition x n).

    From a :func:`power_analysis` result: an experiment is right if it picks ``keeper`` when that
    is the truth, and anything else when it is not; each truth equally likely. Confusing the
    2-norm with the 3-norm does not count as an error here.
    """
    truths, candidates = list(power["true_potentials"]), list(power["candidates"])
    k = candidates.index(keeper)
    chosen = np.asarray(power["chosen"])[:, :, :, k]  # condition x truth x n
    right = np.stack([chosen[:, t] if truth == keeper else 1 - chosen[:, t] for t, truth in enumerate(truths)], axis=1)
    return right.mean(axis=1)


def cached_power_analysis(
    conditions: Mapping[str, Mapping],
    n_values: Sequence[int],
    reps: int = 100,
    seed: int = 0,
    root=None,
    executor: str = "serial",
    workers: int = 1,
    threads: int | None = 1,
    cluster: str | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """:func:`power_analysis` through the results store, one stored job per condition.

    The conditions run as a sweep (:func:`synaptic_geometry.infra.sweep.run_sweep`: ``executor``
    ``"serial"``, ``"local"`` with ``workers`` processes, or ``"submitit"`` on ``cluster``), so
    they run in parallel, an interrupted analysis resumes with the conditions not yet stored, and a
    rerun with the same inputs loads. The result equals ``power_analysis(conditions, n_values,
    reps, seed)``.
    """
    names = list(conditions)
    jobs = [{"condition": {k: v for k, v in conditions[name].items()}, "n_values": [int(n) for n in n_values],
             "reps": int(reps), "seed": int(seed) + 1000 * k} for k, name in enumerate(names)]
    done = run_sweep(power_condition, jobs, root=root, executor=executor, workers=workers, threads=threads,
                     cluster=cluster, progress=progress)
    if not done.ok:
        raise RuntimeError(done.summary())
    results = [power_condition(**job, root=root) for job in jobs]  # all from the store now
    return _power_arrays(names, n_values, results)


def describe_condition(overrides: Mapping) -> str:
    """Words for a power-analysis condition, e.g. ``{"mult_noise": 0.1}`` -> "multiplicative noise 0.1"."""
    words = {
        "mult_noise": lambda v: f"multiplicative noise {v:g}",
        "add_noise": lambda v: f"additive noise {v:g}",
        "n_observed_fraction": lambda v: f"{100 * v:g}% of synapses observed",
        "detection_quantile": lambda v: f"smallest {100 * v:g}% undetected",
        "init": lambda v: "two-constant start" if v == "two_constant" else f"{v} start",
        "invalid": lambda v: "sign changes rule out negative entropy" if v == "drop_candidates" else "sign changes dropped",
        "sigma": lambda v: f"log-spread {v:g} at the start",
        "rel_change": lambda v: f"learning change {v:g}",
        "inhibitory_fraction": lambda v: f"{100 * v:g}% inhibitory",
    }
    parts = [words[k](v) if k in words else f"{k}={v}" for k, v in overrides.items()]
    return ", ".join(parts) if parts else "perfect measurements"


def synapses_for_accuracy(n_values: Sequence[int], accuracy: Sequence[float], target: float = 0.95) -> float:
    """Smallest synapse count at which ``accuracy`` reaches ``target`` and stays there.

    Interpolates linearly in log(n) between the last grid point below the target and the next
    one; ``nan`` if the accuracy at the largest ``n`` is below the target; the smallest ``n`` if
    every grid point reaches it.
    """
    n = np.asarray(n_values, dtype=float)
    acc = np.asarray(accuracy, dtype=float)
    if n.shape != acc.shape or n.ndim != 1 or n.size == 0:
        raise ValueError("n_values and accuracy must be 1-d sequences of equal, non-zero length")
    below = np.flatnonzero(acc < target)
    if below.size == 0:
        return float(n[0])
    last = below[-1]
    if last == n.size - 1:
        return float("nan")
    a0, a1 = acc[last], acc[last + 1]
    t = (target - a0) / (a1 - a0)
    return float(np.exp(np.log(n[last]) + t * (np.log(n[last + 1]) - np.log(n[last]))))


# --------------------------------------------------------------------------- tables of the chapter
LOG_COMPONENTS = {"lognormal": 1, "two_constant": 2}
"""Log-normal components expected after exponentiated gradient, per initial weight kind."""


def sign_change_table(runs: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per start and rule of :func:`learning_runs`: losses and sign changes by type of synapse.

    Columns: start (initial weight kind), rule (potential), loss before, loss after, sign
    changes, excitatory turned inhibitory, inhibitory turned excitatory.
    """
    rows = []
    for i, init in enumerate(runs["inits"]):
        for j, pot in enumerate(runs["potentials"]):
            w0, w1 = runs["w_before"][i], runs["w_after"][i, j]
            flips = ~domain_mask(w0, w1)  # changed sign (or touched zero)
            rows.append({
                "start": str(init), "rule": str(pot),
                "loss before": runs["first_loss"][i, j], "loss after": runs["final_loss"][i, j],
                "sign changes": int(flips.sum()),
                "excitatory turned inhibitory": int((flips & (w0 > 0)).sum()),
                "inhibitory turned excitatory": int((flips & (w0 < 0)).sum()),
            })
    return pd.DataFrame(rows)


def log_shape_table(runs: Mapping[str, np.ndarray], seed: int = 0) -> pd.DataFrame:
    """Per start and rule of :func:`learning_runs`: the shape of log|w| after learning.

    Synapses that changed sign are left out (their log-magnitude would mix the two signs).
    Columns: start, rule, synapses drawn, left out (sign changed), skewness of log|w| after and
    its standard error for a Gaussian sample of that size (:func:`skewness_se`),
    BIC(2 log-normals) - BIC(1) (negative: two components fit better), and the log-spread of
    each component of the :data:`LOG_COMPONENTS` fit for the start (a tuple of floats).
    """
    rows = []
    for i, init in enumerate(runs["inits"]):
        w0 = runs["w_before"][i]
        for j, pot in enumerate(runs["potentials"]):
            w1 = runs["w_after"][i, j]
            kept = w1[domain_mask(w0, w1)]
            fits = {k: log_mixture_fit(kept, k, seed) for k in (1, 2)}
            rows.append({
                "start": str(init), "rule": str(pot), "synapses drawn": int(kept.size),
                "left out (sign changed)": int(w1.size - kept.size),
                "skewness of log|w| after": float(scipy.stats.skew(np.log(np.abs(kept)))),
                "skewness standard error": skewness_se(kept.size),
                "BIC(2 log-normals) - BIC(1)": fits[2]["bic"] - fits[1]["bic"],
                "log-spread per component": tuple(float(s) for s in fits[LOG_COMPONENTS[str(init)]]["stds"]),
            })
    return pd.DataFrame(rows)


def identification_table(runs: Mapping[str, np.ndarray],
                         candidates: Sequence[str] = TRAINED_POTENTIALS) -> pd.DataFrame:
    """Per start and rule of :func:`learning_runs`: the identified potential and each candidate's Delta-CDF.

    Synapses that changed sign are left out for every candidate (negative entropy cannot
    analyse them), as the ``identify`` tool's ``--drop-rows`` does; ``left out`` counts them.
    Columns: start, trained with, analysed, left out, identified, ``Delta-CDF <candidate>``
    (ordered as ranked in the first row).
    """
    rows = []
    for i, init in enumerate(runs["inits"]):
        w0 = runs["w_before"][i]
        for j, pot in enumerate(runs["potentials"]):
            w1 = runs["w_after"][i, j]
            keep = domain_mask(w0, w1)
            table = identify(w0[keep], w1[keep], candidates=list(candidates))
            rows.append({"start": str(init), "trained with": str(pot), "analysed": int(keep.sum()),
                         "left out": int((~keep).sum()), "identified": table["candidate"].iloc[0],
                         **{f"Delta-CDF {c}": d for c, d in zip(table["candidate"], table["delta_cdf"])}})
    return pd.DataFrame(rows)


def synapses_needed_table(power: Mapping[str, np.ndarray], target: float = 0.95) -> pd.DataFrame:
    """Synapses needed to reach ``target`` (:func:`synapses_for_accuracy`), per condition and measure.

    Rows: the conditions of a :func:`power_analysis` result. Columns: accuracy, sign-keeping
    accuracy, and ``true <potential> named`` (share of experiments naming that true potential).
    ``nan`` where the target is not reached at the largest synapse count.
    """
    n_values = power["n_values"]
    sign_keeping = sign_keeping_accuracy(power)
    rows = {}
    for c, name in enumerate(power["conditions"]):
        row = {"accuracy": synapses_for_accuracy(n_values, power["accuracy"][c], target),
               "sign-keeping accuracy": synapses_for_accuracy(n_values, sign_keeping[c], target)}
        for t, truth in enumerate(power["true_potentials"]):
            row[f"true {truth} named"] = synapses_for_accuracy(n_values, power["correct"][c, t], target)
        rows[str(name)] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def noise_tolerance(levels: Sequence[float], shares: Sequence[float], target: float = 0.95) -> float:
    """Largest noise level whose share, and the share at every smaller level, reaches ``target``.

    ``nan`` if the smallest level already falls short.
    """
    levels, shares = np.asarray(levels, dtype=float), np.asarray(shares, dtype=float)
    if levels.shape != shares.shape or levels.ndim != 1:
        raise ValueError("levels and shares must be 1-d of equal length; "
                         f"got shapes {levels.shape} and {shares.shape}")
    tolerance = float("nan")
    for k in np.argsort(levels, kind="stable"):
        if shares[k] < target:
            break
        tolerance = float(levels[k])
    return tolerance


def skewness_se(n: int) -> float:
    """Standard error of the sample skewness of ``n`` Gaussian values, ``sqrt(6 / n)`` to leading order."""
    if n < 3:
        raise ValueError(f"a skewness needs at least 3 values, got {n}")
    return float(np.sqrt(6.0 / n))


def skewness_check(runs: Mapping[str, np.ndarray], init: str = "lognormal",
                   potential: str = "negative_entropy") -> dict[str, float]:
    """What makes log|w| skewed after exponentiated gradient from a log-normal start.

    If the change of log|w| is Gaussian and independent of the start (the assumption of the
    chapter's proposition on shapes), the skewness after is the start's, diluted. Returns
    the skewness of log|w| ``before`` and ``after``, their standard error ``se``
    (:func:`skewness_se`), the skewness of the change of log|w| (``change_skew``) and its
    correlation with log|w| before (``correlation``, with standard error ``correlation_se``
    ``1 / sqrt(n)``), on synapses that kept their sign, and ``beyond_noise``: whether the
    skewness after is more than two standard errors from zero.
    """
    i, j = list(runs["inits"]).index(init), list(runs["potentials"]).index(potential)
    w0, w1 = runs["w_before"][i], runs["w_after"][i, j]
    keep = domain_mask(w0, w1)
    log0, log1 = np.log(np.abs(w0[keep])), np.log(np.abs(w1[keep]))
    change = log1 - log0
    return {"before": float(scipy.stats.skew(log0)), "after": float(scipy.stats.skew(log1)),
            "se": skewness_se(int(keep.sum())), "change_skew": float(scipy.stats.skew(change)),
            "correlation": float(np.corrcoef(change, log0)[0, 1]), "correlation_se": float(1 / np.sqrt(keep.sum())),
            "beyond_noise": bool(abs(scipy.stats.skew(log1)) > 2 * skewness_se(int(keep.sum())))}


def count_words(n: float, n_values: Sequence[int]) -> str:
    """A synapse count from :func:`synapses_for_accuracy` in words: "about 130", "30 or fewer"
    (reached at the smallest count tried) or "not reached by 10,000" (``nan``)."""
    if not np.isfinite(n):
        return f"not reached by {int(n_values[-1]):,}"
    return f"{int(n_values[0]):,} or fewer" if n <= n_values[0] else f"about {n:,.0f}"


def needed_words_table(power: Mapping[str, np.ndarray], conditions: Mapping[str, Mapping],
                       target: float = 0.95) -> pd.DataFrame:
    """:func:`synapses_needed_table` in words (:func:`count_words`), with a ``condition`` column
    describing each condition (:func:`describe_condition` of ``conditions[name]``) and ``name``."""
    needed = synapses_needed_table(power, target)
    words = needed.map(lambda n: count_words(n, power["n_values"]))
    words.insert(0, "condition", [describe_condition(conditions[name]) for name in needed.index])
    words.insert(0, "name", list(needed.index))
    return words.reset_index(drop=True)


def confusion_table(power: Mapping[str, np.ndarray], conditions: Mapping[str, Mapping]) -> pd.DataFrame:
    """Where the answers go at the largest synapse count: one row per condition and true
    potential, one column ``picked <candidate>`` per candidate (share of experiments)."""
    rows = []
    for c, name in enumerate(power["conditions"]):
        for t, truth in enumerate(power["true_potentials"]):
            rows.append({"condition": describe_condition(conditions[str(name)]), "true": str(truth),
                         **{f"picked {k}": float(power["chosen"][c, t, -1, j]) for j, k in enumerate(power["candidates"])}})
    return pd.DataFrame(rows)


NOISE_KINDS = {"mult_noise": "multiplicative", "add_noise": "additive"}
"""The measurement noises of the tolerance sweep, and their names in words."""


def noise_sweep_conditions(baseline: Mapping, levels: Sequence[float]) -> dict[str, dict]:
    """Conditions of the tolerance sweep: each kind of :data:`NOISE_KINDS` at each level, on ``baseline``."""
    return {f"{kind}={level:g}": {**baseline, kind: float(level)} for kind in NOISE_KINDS for level in levels}


def sweep_curves(sweep: Mapping[str, np.ndarray], conditions: Mapping[str, Mapping], kind: str) -> dict[str, np.ndarray]:
    """The curves of one noise kind in a sweep at one synapse count: ``levels``, ``accuracy``,
    ``sign`` (sign-keeping accuracy) and ``correct`` (true potentials x levels)."""
    names = list(sweep["conditions"])
    picks = [k for k, name in enumerate(names) if name.startswith(f"{kind}=")]
    return {"levels": np.array([conditions[names[k]][kind] for k in picks]),
            "accuracy": sweep["accuracy"][picks, 0], "sign": sign_keeping_accuracy(sweep)[picks, 0],
            "correct": sweep["correct"][picks, :, 0].T}


def tolerance_table(sweep: Mapping[str, np.ndarray], conditions: Mapping[str, Mapping],
                    target: float = 0.95) -> pd.DataFrame:
    """Largest noise level, with every smaller level tried, at which each share reaches ``target``
    (:func:`noise_tolerance`): one row per noise kind, columns ``accuracy`` and ``sign`` (NaN:
    not even the smallest level)."""
    rows = []
    for kind, word in NOISE_KINDS.items():
        curves = sweep_curves(sweep, conditions, kind)
        rows.append({"noise": word, "kind": kind,
                     "accuracy": noise_tolerance(curves["levels"], curves["accuracy"], target),
                     "sign": noise_tolerance(curves["levels"], curves["sign"], target)})
    return pd.DataFrame(rows)
