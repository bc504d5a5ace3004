"""The published protocols of Kreutzer, Senn and Petrovici (eLife 2022), simulated at scale.

The neuron is the one of :mod:`synaptic_geometry.experiments.spiking`; this module adds what the
paper's own experiments need:

* the paper's quantities: weights drawn from U(-s/n, s/n), a fixed per-trial test set of input
  states (each the trace vector at the end of an independent 250-ms spike train), the Bernoulli KL
  divergence per 0.5-ms bin and the output-rate RMSE on that test set;
* the mapping from the paper's per-step learning rates to the package's convention
  (:func:`package_learning_rate`);
* the approximate local rule of the paper's Eq 114 and the coefficients gamma_s, gamma_u,
  gamma_w of the exact rule (Eq 13), so that the two can be compared;
* :func:`simulate`, an event-driven teacher-student simulation vectorised over trials. Input
  spikes are sparse (about 1.5 per 0.5-ms step over 100 inputs at 10 and 50 Hz), so instead of
  dense (trials, steps, inputs) traces it keeps, per trial, only the two exponential trace states
  of each synapse and works with three scalar time series per block of steps: the weighted input
  sum_i w_i s_i(t) (scattered from the spikes), the membrane potential (filtered from it) and the
  error (e(t) = [Y*(t) - phi(V) dt] phi'/phi). The gradient sum_t e(t) x_i(t) of a block is the
  error filtered backwards in time with the PSP kernel, read out at each spike of input i. Both
  filters run in compiled code (``scipy.signal.lfilter``) over all trials at once. The result is
  the same as the dense computation of :class:`~synaptic_geometry.experiments.spiking.BlockTraces`
  for the same spikes (tested), at a cost linear in spikes plus steps instead of steps x inputs.

Weights are somatic (no dendritic attenuation), units as in the spiking module: seconds, hertz,
potential units (mV) for V and theta, traces in 1/s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter
from scipy.sparse import csc_matrix
from scipy.special import expit
from threadpoolctl import threadpool_limits

from synaptic_geometry.experiments.spiking import (
    GaussianMetric,
    Neuron,
    _gaussian_moments,
    check_rates,
    gaussian_metric,
    input_traces,
)
from synaptic_geometry.infra.store import experiment

PROTOCOL_RULES = ("euclidean", "natural", "approximate")

# Table 1 of the paper: per-step learning rates (eta_n, eta_a, eta_e) for the input-rate pairs of
# the two groups of 50 inputs (Fig 12C-F; the 10/50 Hz row is also Fig 3F's).
TABLE1_RATES = {
    (10.0, 30.0): {"natural": 6.55e-4, "approximate": 5.5e-4, "euclidean": 1.10e-6},
    (10.0, 50.0): {"natural": 6.00e-4, "approximate": 4.5e-4, "euclidean": 4.5e-7},
    (20.0, 20.0): {"natural": 6.50e-4, "approximate": 5.3e-4, "euclidean": 1.18e-6},
    (20.0, 40.0): {"natural": 5.80e-4, "approximate": 4.5e-4, "euclidean": 5.5e-7},
}
PAPER_KL_THRESHOLD = 5e-5  # convergence: the mean D_KL per 0.5-ms bin first falls below this
PAPER_RMSE_THRESHOLD = 0.8  # Hz, the residual output-rate RMSE the paper tuned its rates for
C_U, C_W = 0.95, 0.05  # the constants of the approximate rule (Eq 114)


def _check_rule(rule: str) -> str:
    if rule not in PROTOCOL_RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(PROTOCOL_RULES)}")
    return rule


# ----------------------------------------------------------------------------------------------
# Learning-rate convention
# ----------------------------------------------------------------------------------------------


def package_learning_rate(eta: float, rule: str, neuron: Neuron = Neuron()) -> float:
    """The package's learning rate for the paper's per-step rate ``eta`` of ``rule``.

    Both conventions apply one update per time step with the error [Y*_t - phi(V_t) dt], Y*_t the
    teacher's spike count in the bin, so the Euclidean rates are equal. The paper's natural and
    approximate rules multiply by gamma_s = 1 / E[phi'^2/phi], the inverse Fisher information of
    one *second* of output (its Eq 100 and the continuous-time limit at the end of its Methods);
    the package's rules multiply by the inverse Fisher information of one *time step*,
    G_step = dt G_second. Hence lr_package = eta dt for those two rules. (The paper's other
    normalisations coincide with ours: eps_0 = 1 mV ms makes the mean trace equal to the rate in
    1/s, c_eps = 1 / int eps^2, and its weights are somatic.)
    """
    _check_rule(rule)
    if not np.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    return float(eta) if rule == "euclidean" else float(eta) * neuron.dt


# ----------------------------------------------------------------------------------------------
# Weights, test set, KL
# ----------------------------------------------------------------------------------------------


def uniform_weights(n: int, n_trials: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """(n_trials, n) weights with independent components U(-scale/n, scale/n)."""
    if n < 1 or n_trials < 1:
        raise ValueError(f"n and n_trials must be >= 1, got {n!r}, {n_trials!r}")
    return rng.uniform(-scale / n, scale / n, size=(n_trials, n))


def test_states(rates, n_trials: int, n_states: int, rng: np.random.Generator,
                neuron: Neuron = Neuron(), duration: float = 0.25) -> np.ndarray:
    """(n_trials, n_states, n) trace vectors, each at the end of its own ``duration``-s spike train.

    Each train starts from rest; a spike in bin k of K contributes eps((K - 1 - k) dt) to the
    trace at the last bin, the convention of the simulation (a spike enters the trace one step
    after its bin).
    """
    r = check_rates(rates)
    K = int(round(duration / neuron.dt))
    if K < 1 or n_states < 1 or n_trials < 1:
        raise ValueError("duration, n_states and n_trials must be positive")
    n = r.size
    out = np.empty((n_trials, n_states, n))
    step = max(1, 20000 // (n_states * n))  # trials per chunk, to bound memory
    for start in range(0, n_trials, step):
        part = out[start:start + step]
        counts = rng.poisson(np.broadcast_to(r * K * neuron.dt, part.shape))
        owner = np.repeat(np.arange(counts.size), counts.ravel())
        lag = rng.integers(0, K, size=owner.size)  # K - 1 - k, uniform like k
        part[...] = np.bincount(owner, weights=neuron.kernel(lag * neuron.dt),
                                minlength=counts.size).reshape(part.shape)
    return out


def bernoulli_kl(p_target, p) -> np.ndarray:
    """KL divergence between Bernoulli(p_target) and Bernoulli(p), elementwise (nats)."""
    q = np.asarray(p_target, dtype=float)
    p = np.asarray(p, dtype=float)
    if np.any((q < 0) | (q > 1) | (p <= 0) | (p >= 1)):
        raise ValueError("probabilities must lie in [0, 1] (target) and (0, 1) (model)")
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(q > 0, q * np.log(q / p), 0.0)
        b = np.where(q < 1, (1 - q) * np.log((1 - q) / (1 - p)), 0.0)
    return a + b


def test_set_kl(weights, teacher, X, neuron: Neuron = Neuron()) -> np.ndarray:
    """Mean Bernoulli KL per time bin from the teacher's to the student's output, over a test set.

    weights, teacher: (..., n); X: (..., S, n) test states (or (S, n), shared). Returns (...).
    """
    p = neuron.rate(np.einsum("...sn,...n->...s", X, weights)) * neuron.dt
    q = neuron.rate(np.einsum("...sn,...n->...s", X, teacher)) * neuron.dt
    return bernoulli_kl(q, p).mean(axis=-1)


def test_set_rate_rmse(weights, teacher, X, neuron: Neuron = Neuron()) -> np.ndarray:
    """Root mean square over the test set of the student's minus the teacher's output rate (Hz)."""
    p = neuron.rate(np.einsum("...sn,...n->...s", X, weights))
    q = neuron.rate(np.einsum("...sn,...n->...s", X, teacher))
    return np.sqrt(np.mean((p - q) ** 2, axis=-1))


# ----------------------------------------------------------------------------------------------
# Coefficients of the exact rule and the approximate rule (Eq 13, Eq 114)
# ----------------------------------------------------------------------------------------------


def exact_coefficients(metric: GaussianMetric, x) -> dict[str, np.ndarray]:
    """gamma_s, gamma_u, gamma_w of the paper's Eq 13 for input states ``x`` (..., n).

    The natural direction of the per-step gradient e x is G_step^-1 e x =
    (e / dt) gamma_s [x / (c mu) - gamma_u 1 + gamma_w v], with c mu = the trace variance
    (c_eps^-1 r in the paper) and gamma_s = 1 / E[phi'^2/phi]. Read off the package's factored
    inverse: gamma_u = K_0 . P^T x / c and gamma_w = -K_1 . P^T x, P = [1/c, v]. ``g4`` is
    the coefficient of V in gamma_w (the paper's g_4, which Eq 113 replaces by c_w).
    """
    K, m0 = metric._coefficients()
    x = np.asarray(x, dtype=float)
    proj = np.stack([np.sum(x, -1) / metric.c, np.sum(metric.v * x, -1)], -1)
    gam = np.einsum("...ij,...j->...i", K, proj)
    return {"gamma_s": 1.0 / m0, "gamma_u": gam[..., 0] / metric.c, "gamma_w": -gam[..., 1],
            "V": proj[..., 1], "sum_x": np.sum(x, -1), "g4": -K[..., 1, 1]}


def approximate_coefficients(metric: GaussianMetric, x, c_u: float = C_U, c_w: float = C_W):
    """gamma_u = c_u c_eps and gamma_w = c_w V of the approximate rule (Eq 112-113), (...)."""
    V = np.sum(metric.v * np.asarray(x, dtype=float), -1)
    return {"gamma_u": np.full_like(V, c_u / metric.c), "gamma_w": c_w * V}


def approximate_direction(metric: GaussianMetric, grad, sum_e, sum_eV, c_u: float = C_U,
                          c_w: float = C_W) -> np.ndarray:
    """The approximate rule's update for a block, in the package convention (per-step metric).

    With e_t the per-step error (Y*_t - phi dt) phi'/phi, Eq 114 sums to
    (gamma_s / dt) [sum_t e_t x_t / (c mu) - c_u c_eps sum_t e_t + c_w v sum_t e_t V_t]:
    ``grad`` = sum_t e_t x_t (..., n), ``sum_e`` and ``sum_eV`` (...).
    """
    m0 = np.asarray(metric.m[0], dtype=float)
    out = (np.asarray(grad) / (metric.c * metric.mu) - (c_u / metric.c) * np.asarray(sum_e)[..., None]
           + c_w * metric.v * np.asarray(sum_eV)[..., None])
    return out / (metric.dt * m0[..., None])


def update_directions(rule: str, metric: GaussianMetric, x, e, c_u: float = C_U, c_w: float = C_W):
    """Per-step update direction (unit learning rate) of ``rule`` for states x (..., n), errors e (...)."""
    _check_rule(rule)
    x = np.asarray(x, dtype=float)
    e = np.asarray(e, dtype=float)
    grad = e[..., None] * x
    if rule == "euclidean":
        return grad
    if rule == "natural":
        return metric.solve(grad)
    V = np.sum(metric.v * x, -1)
    return approximate_direction(metric, grad, e, e * V, c_u, c_w)


def angle(a, b, metric: np.ndarray | None = None) -> np.ndarray:
    """Angle (degrees) between vectors a, b (..., n), in the Euclidean or a given metric (..., n, n)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if metric is None:
        ab, aa, bb = (np.sum(u * v, -1) for u, v in ((a, b), (a, a), (b, b)))
    else:
        Gb = np.einsum("...ij,...j->...i", metric, b)
        Ga = np.einsum("...ij,...j->...i", metric, a)
        ab, aa, bb = np.sum(a * Gb, -1), np.sum(a * Ga, -1), np.sum(b * Gb, -1)
    cos = np.clip(ab / np.sqrt(aa * bb), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


# ----------------------------------------------------------------------------------------------
# Event-driven teacher-student simulation
# ----------------------------------------------------------------------------------------------


class _Kernel:
    """The PSP kernel as a filter and the per-step powers needed within a block of L steps."""

    def __init__(self, neuron: Neuron, L: int):
        dm, ds = neuron.decays
        span = neuron.tau_m - neuron.tau_s
        self.b = np.array([0.0, (dm - ds) / span])  # x_t = sum_k s_k eps((t - k) dt), eps(0) = 0
        self.a = np.array([1.0, -(dm + ds), dm * ds])
        j = np.arange(L)
        self.from_state = np.stack([dm ** (j + 1), -(ds ** (j + 1))]) / span  # (2, L)
        self.to_state = np.stack([dm ** (L - 1 - j), ds ** (L - 1 - j)])  # (2, L)
        self.carry = np.array([dm**L, ds**L])

    def forward(self, z):
        return lfilter(self.b, self.a, z, axis=-1)

    def backward(self, e):
        return lfilter(self.b, self.a, e[..., ::-1], axis=-1)[..., ::-1]


def block_quantities(u, spikes, weights, kernel: _Kernel, L: int):
    """Potentials during a block, from trace states and sparse spikes (shared by simulate and tests).

    u: (B, 2, n) trace states (u_m, u_s) before the block; spikes: (run, step, input) index arrays;
    weights: (B, k, n) several weight vectors per run. Returns V (B, k, L).
    """
    B, k, n = weights.shape
    run, step, inp = spikes
    z = np.zeros((B, k, L))
    for j in range(k):
        z[:, j] = np.bincount(run * L + step, weights=weights[run, j, inp],
                              minlength=B * L).reshape(B, L)
    start = np.einsum("bdn,bkn->bkd", u, weights) @ kernel.from_state  # (B, k, L)
    return start + kernel.forward(z)


def block_gradient(u, spikes, e, kernel: _Kernel, n: int):
    """sum_t e_t x_t over a block, (B, n), from the trace states, the spikes and the error (B, L)."""
    B, L = e.shape
    run, step, inp = spikes
    R = kernel.backward(e)  # R_k = sum_{t >= k} e_t eps((t - k) dt)
    g = np.bincount(run * n + inp, weights=R[run, step], minlength=B * n).reshape(B, n)
    return g + np.einsum("bd,bdn->bn", e @ kernel.from_state.T, u)


def advance_state(u, spikes, kernel: _Kernel, n: int):
    """Trace states after the block."""
    B = u.shape[0]
    run, step, inp = spikes
    out = kernel.carry[None, :, None] * u
    for d in range(2):
        out[:, d] += np.bincount(run * n + inp, weights=kernel.to_state[d, step],
                                 minlength=B * n).reshape(B, n)
    return out


class _SpikeSource:
    """Sparse Poisson spikes of a block for B runs, as (run, step, input) index arrays.

    Exact: the count of each group of equal-rate inputs in a block is Poisson(r n_group L dt),
    each spike picks an input of its group and a step of the block uniformly at random, so the
    per-step counts of every input are independent Poisson(r dt).
    """

    def __init__(self, rates: np.ndarray, B: int, L: int, dt: float):
        values, group = np.unique(rates, return_inverse=True)
        self.order = np.argsort(group, kind="stable")
        self.size = np.bincount(group)
        self.offset = np.r_[0, np.cumsum(self.size)[:-1]]
        self.mean = values * self.size * L * dt
        self.B, self.L = B, L
        self.pair_run = np.repeat(np.arange(B), values.size)
        self.pair_group = np.tile(np.arange(values.size), B)

    def __call__(self, rng: np.random.Generator):
        counts = rng.poisson(np.broadcast_to(self.mean, (self.B, self.mean.size))).ravel()
        run = np.repeat(self.pair_run, counts)
        grp = np.repeat(self.pair_group, counts)
        within = (rng.random(run.size) * self.size[grp]).astype(np.int64)
        inp = self.order[self.offset[grp] + within]
        step = rng.integers(0, self.L, size=run.size)
        return run, step, inp


def simulate(rule, rates, w0, teacher, lr, duration: float, eval_every: float, X_test,
             seed: int, neuron: Neuron = Neuron(), block: int = 100, metric_every: int = 20,
             c_u: float = C_U, c_w: float = C_W, record_weights: bool = False,
             streams: int | None = None, progress=None, dtype=np.float64,
             reference: bool = False) -> dict[str, np.ndarray]:
    """Teacher-student learning of B trials at once, the paper's protocol.

    rule: "euclidean", "natural" (Gaussian-membrane metric, exact inverse) or "approximate"
    (Eq 114), or a sequence of B of them (one per trial). rates (n,); w0, teacher (B, n) somatic
    weights (each trial its own teacher, of the same kind, on the same input spikes); lr:
    package-convention learning rate, scalar or (B,) (see :func:`package_learning_rate`); X_test
    (B, S, n) test states. Updates are summed over blocks of ``block`` steps (50 ms by default;
    the rates are small enough that the weights move by a negligible fraction within a block) and
    the metric is recomputed every ``metric_every`` blocks (1 s). Teacher spikes are
    Bernoulli(phi(V*) dt) per bin. Input and teacher spikes do not depend on the student, so two
    rules run with the same seed see the same spikes (a paired comparison). ``streams`` = T (a
    divisor of B): trial b receives the input and teacher-spike stream b mod T, so that J = B / T
    configurations of the same T trials (rules or learning rates) are simulated together on
    identical spikes.

    The block work (potentials, gradients, trace states) is done once per stream for all J
    configurations: the trace states are shared, the spikes of a block form two sparse
    one-entry-per-spike matrices (spike -> time bin, spike -> synapse) that multiply the gathered
    weights of all configurations at once, and the teacher's potential is computed once when the
    J configurations share their teachers. ``dtype`` (float64 or float32) is the precision of
    that block work; weights, metric and updates stay in float64. ``reference=True`` runs the
    plain version instead (every trial of every configuration separately through
    :func:`block_quantities`, :func:`block_gradient` and :func:`advance_state`, in float64): the
    same numbers for the same seed, the check of the fast path (tested).

    Returns times (evals,), kl and rmse (B, evals), w_final (B, n), diverged (B,) and, if
    ``record_weights``, weights (B, evals, n).
    """
    w = np.array(w0, dtype=float, ndmin=2)
    w_star = np.array(teacher, dtype=float, ndmin=2)
    B, n = w.shape
    rule_of = np.array([rule] * B if isinstance(rule, str) else list(rule), dtype=object)
    if rule_of.shape != (B,):
        raise ValueError(f"need one rule or {B} rules, got {len(rule_of)}")
    for name in set(rule_of):
        _check_rule(name)
    is_euclid = rule_of == "euclidean"
    is_natural = rule_of == "natural"
    is_approx = rule_of == "approximate"
    r = check_rates(rates, allow_zero=bool(np.all(is_euclid)))
    T = B if streams is None else int(streams)
    if T < 1 or B % T:
        raise ValueError(f"streams ({streams!r}) must divide the number of trials ({B})")
    J = B // T
    if w_star.shape != (B, n) or r.shape != (n,):
        raise ValueError(f"w0 {w.shape}, teacher {w_star.shape} and rates {r.shape} disagree")
    X_test = np.asarray(X_test, dtype=float)
    if X_test.ndim != 3 or X_test.shape[0] != B or X_test.shape[2] != n:
        raise ValueError(f"X_test must have shape ({B}, S, {n}), got {X_test.shape}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    lr = np.broadcast_to(np.asarray(lr, dtype=float), (B,))
    L = int(block)
    steps_per_eval = int(round(eval_every / neuron.dt))
    if L < 1 or steps_per_eval % L:
        raise ValueError(f"eval_every ({eval_every} s) must be a whole number of blocks of {L} steps")
    n_evals = int(np.ceil(duration / eval_every))
    blocks_per_eval = steps_per_eval // L
    kernel = _Kernel(neuron, L)
    rng = np.random.default_rng([*map(int, np.atleast_1d(seed)), 11])
    dt = neuron.dt
    source = _SpikeSource(r, T, L, dt)
    engine = (_ReferenceBlocks(B, T, n, L, kernel) if reference else
              _SharedBlocks(w_star, T, n, L, kernel, dtype))
    kl = np.empty((B, n_evals + 1))
    rmse = np.empty((B, n_evals + 1))
    weights = np.empty((B, n_evals + 1, n)) if record_weights else None
    alive = np.ones(B, dtype=bool)

    def record(k):
        kl[:, k] = np.where(alive, test_set_kl(w, w_star, X_test, neuron), np.nan)
        rmse[:, k] = np.where(alive, test_set_rate_rmse(w, w_star, X_test, neuron), np.nan)
        if weights is not None:
            weights[:, k] = w

    with threadpool_limits(limits=1), np.errstate(over="ignore", invalid="ignore"):
        record(0)
        metric = None
        n_block = 0
        for k in range(1, n_evals + 1):
            for _ in range(blocks_per_eval):
                spikes = source(rng)
                Vs, Vt = engine.potentials(spikes, w, w_star)  # (J, T, L); (J or 1, T, L)
                y = rng.random((T, L)) < neuron.rate(Vt) * dt  # teacher spikes, shared by stream
                sig = expit(neuron.beta * (Vs - neuron.theta))
                e = (y - neuron.phi_max * dt * sig) * (neuron.beta * (1.0 - sig))
                g = engine.gradient(spikes, e)
                e, Vs = e.reshape(B, L), Vs.reshape(B, L)
                engine.advance(spikes)
                if not np.all(is_euclid) and n_block % metric_every == 0:
                    metric = gaussian_metric(w, r, neuron)
                n_block += 1
                dw = g
                if np.any(is_natural):
                    dw = np.where(is_natural[:, None], metric.solve(g, strict=False), dw)
                if np.any(is_approx):
                    approx = approximate_direction(metric, g, e.sum(-1), (e * Vs).sum(-1), c_u, c_w)
                    dw = np.where(is_approx[:, None], approx, dw)
                w_new = w + lr[:, None] * dw
                ok = alive & np.all(np.isfinite(w_new), -1) & (np.abs(w_new).max(-1) < 1e3)
                alive = ok
                w = np.where(alive[:, None], w_new, w)
            record(k)
            if progress is not None:
                progress(k, n_evals)
    out = {"times": np.arange(n_evals + 1) * eval_every, "kl": kl, "rmse": rmse,
           "w_final": w, "diverged": ~alive}
    if weights is not None:
        out["weights"] = weights
    return out


class _ReferenceBlocks:
    """The plain block work of :func:`simulate`: every one of the B = J T trials on its own copy
    of its stream's spikes and trace states, through the tested block functions."""

    def __init__(self, B, T, n, L, kernel):
        self.B, self.T, self.n, self.L, self.kernel = B, T, n, L, kernel
        self.u = np.zeros((B, 2, n))

    def _tiled(self, spikes):
        run, step, inp = spikes
        J = self.B // self.T
        return ((run[None] + self.T * np.arange(J)[:, None]).ravel(), np.tile(step, J), np.tile(inp, J))

    def potentials(self, spikes, w, w_star):
        V = block_quantities(self.u, self._tiled(spikes), np.stack([w, w_star], 1), self.kernel, self.L)
        shape = (self.B // self.T, self.T, self.L)
        return V[:, 0].reshape(shape), V[:, 1].reshape(shape)

    def gradient(self, spikes, e):
        return block_gradient(self.u, self._tiled(spikes), e.reshape(self.B, self.L), self.kernel, self.n)

    def advance(self, spikes):
        self.u = advance_state(self.u, self._tiled(spikes), self.kernel, self.n)


class _SharedBlocks:
    """The fast block work of :func:`simulate`: one trace state and one set of spike matrices per
    stream, shared by the J configurations; potentials and gradients of all configurations (and
    the teacher, once if the configurations share it) as sparse-times-dense products."""

    def __init__(self, w_star, T, n, L, kernel, dtype):
        B = w_star.shape[0]
        self.J, self.T, self.n, self.L, self.kernel, self.dtype = B // T, T, n, L, kernel, dtype
        stacked = w_star.reshape(self.J, T, n)
        self.shared_teacher = bool(np.all(stacked == stacked[:1]))
        self.u = np.zeros((T * n, 2), dtype=dtype)  # trace states u_m, u_s per (stream, synapse)
        self.from_state = kernel.from_state.astype(dtype)  # (2, L)
        self.to_state = kernel.to_state.T.astype(dtype)  # (L, 2)
        self.carry = kernel.carry.astype(dtype)
        self.b, self.a = kernel.b.astype(dtype), kernel.a.astype(dtype)

    def _matrices(self, spikes):
        run, step, inp = spikes
        m = run.size
        ones = np.ones(m, dtype=self.dtype)
        ptr = np.arange(m + 1)
        to_bin = csc_matrix((ones, run * self.L + step, ptr), shape=(self.T * self.L, m))
        to_syn = csc_matrix((ones, run * self.n + inp, ptr), shape=(self.T * self.n, m))
        return to_bin, to_syn

    def potentials(self, spikes, w, w_star):
        J, T, n, L = self.J, self.T, self.n, self.L
        self._mats = self._matrices(spikes)
        self._spikes = spikes
        run, step, inp = spikes
        cols = [w.reshape(J, T, n)]
        cols.append(w_star.reshape(J, T, n)[:1] if self.shared_teacher else w_star.reshape(J, T, n))
        W = np.concatenate(cols).transpose(1, 2, 0).astype(self.dtype)  # (T, n, k)
        k = W.shape[-1]
        z = (self._mats[0] @ W[run, inp]).reshape(T, L, k)  # summed weights per bin
        u = self.u.reshape(T, n, 2)
        start = np.stack([(u[..., d:d + 1] * W).sum(1) for d in range(2)], -1) @ self.from_state  # (T, k, L)
        V = start + lfilter(self.b, self.a, z.transpose(0, 2, 1), axis=-1)
        V = V.transpose(1, 0, 2)  # (k, T, L)
        return V[:J], V[J:]

    def gradient(self, spikes, e):
        J, T, n, L = self.J, self.T, self.n, self.L
        run, step, inp = spikes
        e = e.astype(self.dtype, copy=False).transpose(1, 0, 2)  # (T, J, L)
        R = lfilter(self.b, self.a, e[..., ::-1], axis=-1)[..., ::-1]  # sum_{t>=k} e_t eps((t-k) dt)
        g = (self._mats[1] @ R[run, :, step]).reshape(T, n, J)
        g = g + np.matmul(self.u.reshape(T, n, 2), (e @ self.from_state.T).transpose(0, 2, 1))
        return g.transpose(2, 0, 1).reshape(J * T, n).astype(float)

    def advance(self, spikes):
        run, step, inp = spikes
        self.u = self.carry * self.u + self._mats[1] @ self.to_state[step]


def expected_update(rule: str, w, w_star, X, neuron: Neuron = Neuron(), rates=None,
                    c_u: float = C_U, c_w: float = C_W) -> np.ndarray:
    """Mean per-step update direction over input states X (M, n) at weights w (..., n).

    The teacher's spike is averaged out: E[Y* - phi dt | x] = (phi(V*) - phi(V)) dt. The metric
    (natural, approximate) is the Gaussian one at the rates ``rates``.
    """
    _check_rule(rule)
    w = np.asarray(w, dtype=float)
    X = np.asarray(X, dtype=float)
    V = np.einsum("mn,...n->...m", X, w)
    Vs = X @ np.asarray(w_star, dtype=float)
    e = (neuron.rate(Vs) - neuron.rate(V)) * neuron.dt * neuron.log_rate_derivative(V)
    grad = np.einsum("...m,mn->...n", e, X) / X.shape[0]
    if rule == "euclidean":
        return grad
    metric = gaussian_metric(w, rates, neuron)
    if rule == "natural":
        return metric.solve(grad)
    return approximate_direction(metric, grad, e.mean(-1), (e * V).mean(-1), c_u, c_w)


def first_crossing(times, curve, threshold: float) -> float:
    """First time at which ``curve`` is below ``threshold`` (inf if never)."""
    below = np.flatnonzero(np.asarray(curve) < threshold)
    return float(np.asarray(times)[below[0]]) if below.size else np.inf


def bootstrap_crossing(times, curves, threshold: float, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float, float]:
    """Time at which the trial-mean curve first falls below threshold, with a bootstrap interval.

    curves: (trials, times). Trials are resampled with replacement; a resample that never
    crosses gives inf (the interval's upper end is then inf).
    """
    curves = np.asarray(curves, dtype=float)
    rng = np.random.default_rng(seed)
    point = first_crossing(times, np.nanmean(curves, 0), threshold)
    idx = rng.integers(0, curves.shape[0], size=(n_boot, curves.shape[0]))
    boots = np.array([first_crossing(times, np.nanmean(curves[i], 0), threshold) for i in idx])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return point, float(lo), float(hi)


def bootstrap_mean_band(curves, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Trial mean of curves (trials, times) with a percentile bootstrap band over trials."""
    curves = np.asarray(curves, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, curves.shape[0], size=(n_boot, curves.shape[0]))
    boots = np.stack([np.nanmean(curves[i], 0) for i in idx])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return np.nanmean(curves, 0), lo, hi


# ----------------------------------------------------------------------------------------------
# The chapter's cached experiments
# ----------------------------------------------------------------------------------------------


def two_group_rates(n: int, low: float, high: float) -> np.ndarray:
    """n input rates: the first half at ``low`` Hz, the second half at ``high`` Hz."""
    return np.r_[np.full(n // 2, float(low)), np.full(n - n // 2, float(high))]


def trial_draws(n: int, low: float, high: float, n_trials: int, seed: int, neuron: Neuron = Neuron(),
                first_trial: int = 0):
    """Initial weights, teacher weights (both U(-1/n, 1/n)) and test states of trials
    ``first_trial`` ... ``first_trial + n_trials - 1``.

    Trial k's draws come from its own generator (seed, k), so they depend only on (n, rates,
    seed, k): every rule and learning rate learns the same teachers from the same starts (as in
    the paper), and a run split into chunks of trials has the same trials as one run.
    """
    rates = two_group_rates(n, low, high)
    w0, teacher, X = [], [], []
    for k in range(int(first_trial), int(first_trial) + int(n_trials)):
        rng = np.random.default_rng([int(seed), 5, k])
        w0.append(uniform_weights(n, 1, rng))
        teacher.append(uniform_weights(n, 1, rng))
        X.append(test_states(rates, 1, 50, rng, neuron))
    return rates, np.concatenate(w0), np.concatenate(teacher), np.concatenate(X)


@experiment("spiking_paper_teacher_student")
def teacher_student_run(rules: Sequence[str], etas: Sequence[float], low: float = 10.0, high: float = 50.0,
                        n_trials: int = 16, duration: float = 8000.0, eval_every: float = 100.0,
                        n_inputs: int = 100, seed: int = 0, first_trial: int = 0,
                        weight_configs: Sequence[int] = (), dtype: str = "float32",
                        block: int = 400) -> dict[str, np.ndarray]:
    """The paper's teacher-student task (Fig 3F, 9D, 12C-F) for J configurations (rules[j] at the
    paper's per-step rate etas[j]), each on the same trials (``first_trial`` onwards, see
    :func:`trial_draws`) and the same spikes. ``dtype``: precision of the block work of
    :func:`simulate` (float32 is tested against float64). Updates are summed over blocks of
    ``block`` steps (200 ms; the natural rule at eight times the paper's rate moves the weights by
    at most 1e-3 of their distance to the teacher within one) and the metric is recomputed every
    second.

    Returns times (evals,), kl and rmse (J, trials, evals), diverged (J, trials); for the
    configurations in ``weight_configs`` also weights (len, trials, evals, n), and w0 and teacher
    (trials, n) and rates.
    """
    if len(rules) != len(etas) or not rules:
        raise ValueError(f"need one eta per rule, got {len(rules)} rules and {len(etas)} etas")
    rates, w0, teacher, X = trial_draws(n_inputs, low, high, n_trials, seed, first_trial=first_trial)
    J = len(rules)
    weight_configs = [int(j) for j in weight_configs]
    if any(not 0 <= j < J for j in weight_configs):
        raise ValueError(f"weight_configs must index the {J} configurations, got {weight_configs}")
    lr = np.repeat([package_learning_rate(eta, rule) for rule, eta in zip(rules, etas)], n_trials)
    res = simulate(np.repeat(np.array(rules, dtype=object), n_trials), rates, np.tile(w0, (J, 1)),
                   np.tile(teacher, (J, 1)), lr, duration, eval_every, np.tile(X, (J, 1, 1)),
                   [int(seed), int(first_trial)], record_weights=bool(weight_configs), streams=n_trials,
                   dtype=np.dtype(dtype), block=int(block), metric_every=_blocks_per_second(block))
    out = {"times": res["times"], "w0": w0, "teacher": teacher, "rates": rates}
    for key in ("kl", "rmse", "diverged"):
        out[key] = res[key].reshape((J, n_trials) + res[key].shape[1:])
    if weight_configs:
        out["weights"] = res["weights"].reshape((J, n_trials) + res["weights"].shape[1:])[weight_configs]
    return out


def _blocks_per_second(block: int, neuron: Neuron = Neuron()) -> int:
    count = 1.0 / (int(block) * neuron.dt)
    if abs(count - round(count)) > 1e-9 or count < 1:
        raise ValueError(f"a block of {block} steps must divide one second")
    return int(round(count))


def concatenate_trials(parts: Sequence[dict]) -> dict[str, np.ndarray]:
    """One :func:`teacher_student_run` result from chunks of consecutive trials of the same job."""
    if not parts:
        raise ValueError("need at least one chunk")
    out = {"times": parts[0]["times"], "rates": parts[0]["rates"]}
    for key, axis in (("kl", 1), ("rmse", 1), ("diverged", 1), ("weights", 1), ("w0", 0), ("teacher", 0)):
        if key in parts[0]:
            out[key] = np.concatenate([np.asarray(p[key]) for p in parts], axis=axis)
    return out


@experiment("spiking_paper_two_synapses")
def two_synapse_run(rules: Sequence[str] = ("euclidean", "natural"), etas: Sequence[float] = (7e-7, 2.5e-4),
                    n_trials: int = 500, duration: float = 6000.0, record_every: float = 20.0,
                    seed: int = 0, block: int = 400) -> dict[str, np.ndarray]:
    """Fig 3E: the two-synapse task from w0 = (-0.3, 0.5)/n to w* = (0.15, 0.15)/n, n = 2; the
    mean weight path (J, evals, 2) of each configuration over its trials (same spikes for all),
    updates summed over blocks of ``block`` steps."""
    n = 2
    rates = np.array([10.0, 50.0])
    J = len(rules)
    w0 = np.tile([-0.3 / n, 0.5 / n], (J * n_trials, 1))
    teacher = np.tile([0.15 / n, 0.15 / n], (J * n_trials, 1))
    X = np.tile(test_states(rates, n_trials, 50, np.random.default_rng([int(seed), 6])), (J, 1, 1))
    lr = np.repeat([package_learning_rate(eta, rule) for rule, eta in zip(rules, etas)], n_trials)
    res = simulate(np.repeat(np.array(rules, dtype=object), n_trials), rates, w0, teacher, lr, duration,
                   record_every, X, seed, record_weights=True, streams=n_trials, block=int(block),
                   metric_every=_blocks_per_second(block))
    weights = res["weights"].reshape(J, n_trials, -1, n)
    return {"times": res["times"], "mean_path": np.nanmean(weights, 1),
            "kl": res["kl"].reshape(J, n_trials, -1), "diverged": res["diverged"].reshape(J, n_trials)}


@experiment("spiking_paper_two_synapse_fields")
def two_synapse_fields(n_samples: int = 2000, grid_step: float = 0.006, seed: int = 0) -> dict[str, np.ndarray]:
    """Fig 3D-E: mean normalised update directions on the paper's grid and KL on a fine grid."""
    n = 2
    rates = np.array([10.0, 50.0])
    teacher = np.array([0.15 / n, 0.15 / n])
    X = test_states(rates, 1, n_samples, np.random.default_rng([int(seed), 8]), duration=1.0)[0]
    g1 = np.array([-0.28, -0.1, 0.08, 0.26, 0.44]) / n
    g2 = np.array([-0.22, -0.02, 0.26, 0.5]) / n
    W = np.stack(np.meshgrid(g1, g2, indexing="ij"), -1).reshape(-1, n)
    out = {"grid": W, "teacher": teacher}
    for rule in ("euclidean", "natural"):
        d = expected_update(rule, W, teacher, X, rates=rates)
        out[f"field_{rule}"] = d / np.linalg.norm(d, axis=-1, keepdims=True)
    axis = np.arange(-0.4, 0.6 + 1e-12, grid_step) / n
    Wf = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, n)
    out["axis"] = axis
    out["kl"] = np.concatenate([test_set_kl(c, teacher, X) for c in np.array_split(Wf, 20)]).reshape(
        axis.size, axis.size)
    return out


@experiment("spiking_paper_angles")
def update_angles(pairs=((10, 10), (10, 30), (10, 50), (20, 20), (20, 40)), n_weights: int = 100,
                  n_states: int = 100, n_inputs: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Fig 12A-B: mean angle per initial weight between the natural update and the approximate or
    the Euclidean one, in the Euclidean and in the Fisher (Gaussian-metric) geometry.

    Initial weights U(-5/n, 5/n), teacher w*_i = 0.15/n; input states from 1-s spike trains. The
    error factor e of a single step is common to the three rules, so it cancels in the angles.
    """
    rng = np.random.default_rng([int(seed), 9])
    out = {"pairs": np.asarray(pairs, dtype=float)}
    for low, high in pairs:
        rates = two_group_rates(n_inputs, low, high)
        w = uniform_weights(n_inputs, n_weights, rng, 5.0)
        X = np.swapaxes(test_states(rates, n_weights, n_states, rng, duration=1.0), 0, 1)  # (S, W, n)
        metric = gaussian_metric(w, rates)
        G = metric.matrix()
        ones = np.ones(X.shape[:2])
        nat = metric.solve(X)
        approx = approximate_direction(metric, X, ones, np.sum(w * X, -1))
        for name, other in (("approximate", approx), ("euclidean", X)):
            out[f"euclid_{name}_{low:g}_{high:g}"] = angle(nat, other).mean(0)
            out[f"fisher_{name}_{low:g}_{high:g}"] = angle(nat, other, G[None]).mean(0)
        out[f"g4_{low:g}_{high:g}"] = exact_coefficients(metric, X[0])["g4"]
    return out


# ----------------------------------------------------------------------------------------------
# Fig 5 (presynaptic variance) and Fig 7 (homo- and heterosynaptic map) in the paper's parameters
# ----------------------------------------------------------------------------------------------


def rescaled_metric(weights, mean_trace, trace_variance, neuron: Neuron = Neuron()) -> GaussianMetric:
    """The Gaussian-membrane metric for traces of any mean (n,) and variance (n,) per input,
    variance proportional to the mean with one constant c (a rescaled kernel, Fig 5), a zero mean
    marking a silent input (Fig 7). Somatic weights (..., n)."""
    mu = np.asarray(mean_trace, dtype=float)
    var = np.asarray(trace_variance, dtype=float)
    if np.any(mu < 0) or np.any(var < 0) or mu.shape != var.shape:
        raise ValueError("mean_trace and trace_variance must be >= 0 and of the same shape")
    active = mu > 0
    if not np.any(active):
        raise ValueError("at least one input must be active")
    c = var[active] / mu[active]
    if not np.allclose(c, c[0], rtol=1e-9):
        raise ValueError("the trace variance must be the same multiple of the mean for every active input")
    v = np.asarray(weights, dtype=float)
    mean_V = v @ mu
    var_V = c[0] * np.sum(mu * v**2, axis=-1)
    return GaussianMetric(mu=mu, c=float(c[0]), dt=neuron.dt, v=v, m=_gaussian_moments(neuron, mean_V, var_V))


def variance_protocol(tau_s: float, rate: float, n_trials: int, seed: int, w0: float = 0.01,
                      teacher_rate: float = 80.0, duration: float = 5.0) -> dict[str, np.ndarray]:
    """One point of the paper's Fig 5: one synapse at ``rate`` Hz with synaptic time constant
    ``tau_s`` (s), its kernel divided by the rate so that the mean trace is 1 whatever the rate
    and the kernel; a Poisson teacher at ``teacher_rate`` Hz; weight ``w0`` held fixed over
    ``duration`` s (the total change at unit learning rate, the first order of the paper's run).

    Returns the summed natural (Gaussian metric of the rescaled trace) and Euclidean updates per
    trial (n_trials,), the theoretical trace variance (a2 / rate) and the measured one.
    """
    neuron = Neuron(tau_s=float(tau_s))
    n_steps = int(round(duration / neuron.dt))
    _, x = input_traces([rate], n_steps, [int(seed) * 100003 + k for k in range(n_trials)], neuron)
    x = x[..., 0] / rate  # (trials, steps): the rescaled trace, mean a1 (= 1 up to the grid)
    rng = np.random.default_rng([int(seed), 19])
    y = rng.poisson(teacher_rate * neuron.dt, size=x.shape)
    V = w0 * x
    e = (y - neuron.rate(V) * neuron.dt) * neuron.log_rate_derivative(V)
    grad = np.sum(e * x, axis=1)
    a1, a2 = neuron.psp_integrals()
    metric = rescaled_metric(np.array([w0]), np.array([a1]), np.array([a2 / rate]), neuron)
    natural = metric.solve(grad[:, None])[:, 0]
    return {"natural": natural, "euclidean": grad, "variance": np.array(a2 / rate),
            "measured_variance": np.array(np.var(x[:, int(0.1 / neuron.dt):]))}


@experiment("spiking_paper_variance")
def variance_sweep(tau_s_values: Sequence[float] = (0.001, 0.002, 0.003, 0.005, 0.007, 0.014, 0.02),
                   rate_values: Sequence[float] = (10.0, 15.0, 20.0, 30.0, 40.0, 50.0),
                   n_trials: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """The paper's Fig 5H: :func:`variance_protocol` for tau_s in ``tau_s_values`` at 10 Hz, and for
    rates in ``rate_values`` at tau_s = 20 ms. Arrays per point, in that order (tau_s sweep first)."""
    points = [(t, 10.0) for t in tau_s_values] + [(0.02, r) for r in rate_values]
    runs = [variance_protocol(t, r, n_trials, seed + k) for k, (t, r) in enumerate(points)]
    return {"tau_s": np.array([p[0] for p in points]), "rate": np.array([p[1] for p in points]),
            "sweep": np.array([0] * len(tau_s_values) + [1] * len(rate_values)),
            **{key: np.stack([np.asarray(run[key]) for run in runs])
               for key in ("natural", "euclidean", "variance", "measured_variance")}}


def heterosynaptic_learning(w_stim, w_unstim, n_trials: int, seed: int, rule: str = "natural", n: int = 10,
                            n_stim: int = 5, rate: float = 5.0, teacher_rate: float = 20.0,
                            duration: float = 60.0, eta: float = 0.01, inhibition: float = 5.0,
                            record_every: float = 1.0, block: int = 100) -> dict[str, np.ndarray]:
    """The paper's Fig 7: ``n`` synapses, the first ``n_stim`` stimulated at ``rate`` Hz, the others
    silent; a Poisson teacher at ``teacher_rate`` Hz; tonic inhibition lowering the membrane
    potential by ``inhibition`` mV (a threshold of theta + inhibition); ``duration`` s of learning
    at the paper's rate ``eta`` from every pair (stimulated, unstimulated) of initial weights, equal
    within each group. The natural rule treats the silent synapses as inputs at a vanishing rate
    (no homosynaptic term, as the paper does).

    Returns times (records,), w_stim and w_unstim (pairs,), and the mean weight of each group
    per pair, trial and record: stim and unstim (pairs, trials, records).
    """
    _check_rule(rule)
    if rule == "approximate":
        raise ValueError("the Fig 7 protocol runs the natural and the Euclidean rule")
    ws = np.asarray(w_stim, dtype=float).ravel()
    wu = np.asarray(w_unstim, dtype=float).ravel()
    if ws.shape != wu.shape or not 0 < n_stim <= n:
        raise ValueError("w_stim and w_unstim need the same shape, and 0 < n_stim <= n")
    neuron = Neuron(theta=Neuron().theta + float(inhibition))
    dt = neuron.dt
    rates = np.r_[np.full(n_stim, float(rate)), np.zeros(n - n_stim)]
    a1, a2 = neuron.psp_integrals()
    J, T = ws.size, int(n_trials)
    w = np.repeat(np.stack([np.r_[np.full(n_stim, s), np.full(n - n_stim, u)] for s, u in zip(ws, wu)]), T, 0)
    B = J * T
    lr = package_learning_rate(eta, rule, neuron)
    L = int(block)
    per_record = int(round(record_every / dt / L))
    n_records = int(round(duration / record_every))
    if per_record < 1 or abs(per_record * L * dt - record_every) > 1e-9:
        raise ValueError("record_every must be a whole number of blocks")
    kernel = _Kernel(neuron, L)
    source = _SpikeSource(rates[:n_stim], T, L, dt)
    engine = _ReferenceBlocks(B, T, n, L, kernel)
    rng = np.random.default_rng([int(seed), 23])
    stim = np.empty((B, n_records + 1))
    unstim = np.empty((B, n_records + 1))
    stim[:, 0], unstim[:, 0] = w[:, :n_stim].mean(1), w[:, n_stim:].mean(1) if n > n_stim else 0.0
    with threadpool_limits(limits=1):
        for k in range(1, n_records + 1):
            for _ in range(per_record):
                spikes = source(rng)
                Vs, _ = engine.potentials(spikes, w, w)
                y = rng.random((T, L)) < teacher_rate * dt
                e = (y - neuron.rate(Vs) * dt) * neuron.log_rate_derivative(Vs)
                g = engine.gradient(spikes, e)
                engine.advance(spikes)
                if rule == "natural":
                    g = rescaled_metric(w, a1 * rates, a2 * rates, neuron).solve(g)
                w = w + lr * g
            stim[:, k] = w[:, :n_stim].mean(1)
            unstim[:, k] = w[:, n_stim:].mean(1) if n > n_stim else 0.0
    return {"times": np.arange(n_records + 1) * record_every, "w_stim": ws, "w_unstim": wu,
            "stim": stim.reshape(J, T, -1), "unstim": unstim.reshape(J, T, -1)}


@experiment("spiking_paper_heterosynaptic_map")
def heterosynaptic_map(grid: Sequence[float] = tuple(np.linspace(1.0, 5.0, 9)), n_trials: int = 8,
                       duration: float = 60.0, seed: int = 0) -> dict[str, np.ndarray]:
    """The paper's Fig 7B-D: :func:`heterosynaptic_learning` for every pair of initial weights
    (stimulated, unstimulated) on ``grid`` (in units of 1/n, n = 10), natural and Euclidean rule."""
    n = 10
    g = np.asarray(grid, dtype=float) / n
    S, U = np.meshgrid(g, g, indexing="ij")
    out = {"grid": g}
    for rule in ("natural", "euclidean"):
        res = heterosynaptic_learning(S.ravel(), U.ravel(), n_trials, seed, rule=rule, n=n, duration=duration)
        out[f"stim_{rule}"] = res["stim"]
        out[f"unstim_{rule}"] = res["unstim"]
        out["times"] = res["times"]
    out["w_stim"], out["w_unstim"] = S.ravel(), U.ravel()
    return out
