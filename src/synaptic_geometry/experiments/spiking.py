"""Natural-gradient learning in a spiking neuron (Kreutzer, Senn and Petrovici, eLife 2022).

A neuron receives Poisson spike trains through ``n`` synapses. Each spike train is filtered by the
double-exponential postsynaptic-potential (PSP) kernel

    eps(t) = (exp(-t / tau_m) - exp(-t / tau_s)) / (tau_m - tau_s),   t >= 0,

giving the traces ``x_i(t)``. The somatic membrane potential is ``V = sum_i alpha_i w_i x_i``
(``alpha_i`` is the dendritic attenuation of synapse ``i``, ``v_i = alpha_i w_i`` its somatic
weight) and the neuron spikes as a Poisson process with rate ``phi(V) = phi_max sigmoid(beta (V -
theta))``. A teacher neuron with somatic weights ``v*`` produces target spikes ``Y*``; the student
learns with

* the Euclidean rule ``dw = lr [Y* - phi(V) dt] (phi'/phi)(V) alpha x`` (stochastic gradient of
  the log-likelihood of the teacher's spikes, i.e. of minus the teacher-student KL divergence);
* the natural-gradient rule ``dw = lr G^-1 (same gradient)``, where ``G`` is the Fisher metric of
  one time step, ``G = dt E[(phi'^2 / phi)(V) (alpha x)(alpha x)^T]``, either estimated from input
  samples and inverted numerically (``"natural_numeric"``) or in the Gaussian-membrane
  approximation with its closed-form inverse (``"natural_gaussian"``).

Units: seconds and hertz; ``x`` has units of 1/s (its mean equals the input rate), weights are in
potential units times seconds. Every simulation is vectorised over a leading batch of runs, and
over blocks of time steps: input spikes for a whole chunk are drawn at once (sparsely, exactly),
the teacher's potential is filtered over the chunk in compiled code, and the student's traces are
advanced a weight-update block of ``update_every`` steps at a time by :class:`BlockTraces`
(exact, without materialising the traces); the only Python loop runs over those blocks.
Randomness comes only from the explicit per-run seeds.

The chapter's experiments and the analysis of their results live in
:mod:`synaptic_geometry.experiments.spiking_experiments`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.signal import lfilter
from scipy.special import expit
from threadpoolctl import threadpool_limits

from synaptic_geometry.potentials import require_finite

RULES = ("euclidean", "natural_gaussian", "natural_numeric")
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_GH_WEIGHTS = _GH_WEIGHTS / np.sqrt(2.0 * np.pi)


class SingularMetricError(ValueError):
    """The Fisher metric cannot be inverted (it is singular or numerically so)."""


# ----------------------------------------------------------------------------------------------
# The neuron
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Neuron:
    """Kernel, transfer function and time step of the neuron (published values by default)."""

    tau_m: float = 0.010  # membrane time constant (s)
    tau_s: float = 0.003  # synaptic time constant (s)
    dt: float = 0.0005  # time step (s)
    phi_max: float = 100.0  # maximal rate (Hz)
    beta: float = 0.3  # slope of the sigmoid (1 / potential unit)
    theta: float = 10.0  # threshold of the sigmoid (potential units)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not np.isfinite(value):
                raise ValueError(f"Neuron.{name} must be finite, got {value!r}")
        for name in ("tau_m", "tau_s", "dt", "phi_max", "beta"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Neuron.{name} must be > 0, got {getattr(self, name)!r}")
        if self.tau_m == self.tau_s:
            raise ValueError(f"tau_m and tau_s must differ (both are {self.tau_m!r})")
        if self.dt >= min(self.tau_m, self.tau_s):
            raise ValueError(
                f"dt = {self.dt!r} s must be smaller than both kernel time constants "
                f"(tau_m = {self.tau_m!r} s, tau_s = {self.tau_s!r} s)"
            )

    # kernel -----------------------------------------------------------------------------------
    def kernel(self, t: np.ndarray) -> np.ndarray:
        """The PSP kernel eps(t) (zero for t < 0); its integral is 1."""
        t = np.asarray(t, dtype=float)
        value = (np.exp(-t / self.tau_m) - np.exp(-t / self.tau_s)) / (self.tau_m - self.tau_s)
        return np.where(t >= 0, value, 0.0)

    @property
    def decays(self) -> tuple[float, float]:
        """Per-step decay factors exp(-dt/tau_m), exp(-dt/tau_s) of the two exponential traces."""
        return float(np.exp(-self.dt / self.tau_m)), float(np.exp(-self.dt / self.tau_s))

    def psp_integrals(self, discrete: bool = True) -> tuple[float, float]:
        """``(a1, a2)`` with mean trace = rate * a1 and trace variance = rate * a2.

        Continuous time: a1 = int eps = 1 and a2 = int eps^2 = 1 / (2 (tau_m + tau_s)) (Campbell's
        theorem). ``discrete=True`` gives the exact values for the simulated process (spike counts
        per step, kernel sampled at the grid), dt * sum_k eps(k dt) and dt * sum_k eps(k dt)^2.
        """
        if not discrete:
            return 1.0, 1.0 / (2.0 * (self.tau_m + self.tau_s))
        dm, ds = self.decays
        scale = 1.0 / (self.tau_m - self.tau_s)
        a1 = self.dt * scale * (1.0 / (1.0 - dm) - 1.0 / (1.0 - ds))
        a2 = self.dt * scale**2 * (1.0 / (1.0 - dm**2) + 1.0 / (1.0 - ds**2) - 2.0 / (1.0 - dm * ds))
        return float(a1), float(a2)

    # transfer function ------------------------------------------------------------------------
    def _sig(self, V):
        return expit(self.beta * (np.asarray(V, dtype=float) - self.theta))

    def rate(self, V):
        """phi(V) = phi_max sigmoid(beta (V - theta)) in Hz."""
        return self.phi_max * self._sig(V)

    def rate_derivative(self, V):
        """phi'(V)."""
        s = self._sig(V)
        return self.phi_max * self.beta * s * (1.0 - s)

    def log_rate_derivative(self, V):
        """phi'(V) / phi(V) = beta (1 - sigmoid)."""
        return self.beta * (1.0 - self._sig(V))

    def fisher_weight(self, V, derivative: int = 0):
        """f(V) = phi'(V)^2 / phi(V) and its first two derivatives (``derivative`` in 0, 1, 2)."""
        s = self._sig(V)
        q = self.phi_max * s * (1.0 - s) ** 2
        if derivative == 0:
            return self.beta**2 * q
        if derivative == 1:
            return self.beta**3 * q * (1.0 - 3.0 * s)
        if derivative == 2:
            return self.beta**4 * q * ((1.0 - 3.0 * s) ** 2 - 3.0 * s * (1.0 - s))
        raise ValueError(f"derivative must be 0, 1 or 2, got {derivative!r}")

    def fisher_potential_derivative(self, V):
        """F'(V) with F'' = f: F'(V) = phi_max beta (s - s^2 / 2), s = sigmoid(beta (V - theta))."""
        s = self._sig(V)
        return self.phi_max * self.beta * (s - 0.5 * s**2)


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def check_rates(rates, allow_zero: bool = True) -> np.ndarray:
    """Input rates as a float array; raises ValueError for negative or non-finite rates."""
    r = np.asarray(rates, dtype=float)
    if r.ndim == 0 or r.size == 0:
        raise ValueError(f"rates must be a non-empty array of rates in Hz, got {rates!r}")
    require_finite(r, "rates")
    if np.any(r < 0):
        raise ValueError(f"rates must be >= 0 Hz, got minimum {r.min()!r}")
    if not allow_zero and np.any(r == 0):
        raise ValueError("every input rate must be > 0 Hz here (a silent input has no metric)")
    return r


def _finite(a, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    require_finite(a, what)
    return a


def _attenuation(attenuation, shape) -> np.ndarray:
    if attenuation is None:
        return np.ones(shape)
    a = _finite(attenuation, "attenuation")
    if np.any(a <= 0):
        raise ValueError(f"attenuation must be > 0, got minimum {a.min()!r}")
    return np.broadcast_to(a, shape)


def _generators(seeds: Sequence[int], stream: int) -> list[np.random.Generator]:
    if isinstance(seeds, (int, np.integer)):
        raise TypeError("seeds must be a sequence of ints, one per run (e.g. [0, 1, 2])")
    return [np.random.default_rng([int(s), stream]) for s in seeds]


# ----------------------------------------------------------------------------------------------
# Inputs: Poisson spikes and PSP traces
# ----------------------------------------------------------------------------------------------


class PSPFilter:
    """Exact per-step double-exponential filter with state, batched over leading dimensions.

    Two traces u_m, u_s decay by exp(-dt/tau_m), exp(-dt/tau_s) per step and both jump by the
    spike count, and ``x = (u_m - u_s) / (tau_m - tau_s)`` equals sum_k count_k eps(t - t_k) at
    every grid time, exactly. The two first-order recursions are run as the one equivalent
    second-order recursion x_t = (d_m + d_s) x_{t-1} - d_m d_s x_{t-2} + (d_m - d_s) s_{t-1} /
    (tau_m - tau_s), in compiled code over a whole chunk of steps (``scipy.signal.lfilter``).
    Call it repeatedly on consecutive chunks (time on ``axis``); the state carries over.
    """

    def __init__(self, neuron: Neuron, shape: tuple[int, ...]):
        self.neuron = neuron
        self.shape = tuple(shape)
        self.state: np.ndarray | None = None
        self.state_axis: int | None = None
        dm, ds = neuron.decays
        self.b = np.array([0.0, (dm - ds) / (neuron.tau_m - neuron.tau_s)])
        self.a = np.array([1.0, -(dm + ds), dm * ds])

    def __call__(self, spikes: np.ndarray, axis: int = -2) -> np.ndarray:
        spikes = np.asarray(spikes, dtype=float)
        axis = axis % spikes.ndim
        if self.state is None:
            shape = list(spikes.shape)
            shape[axis] = 2
            self.state, self.state_axis = np.zeros(shape), axis
        elif axis != self.state_axis:
            raise ValueError(f"time axis changed from {self.state_axis} to {axis} between chunks")
        x, self.state = lfilter(self.b, self.a, spikes, axis=axis, zi=self.state)
        return x


class BlockTraces:
    """Student-side PSP traces advanced a block of L steps at a time without storing them.

    Within a block the weights are fixed, so everything the learning rule needs is linear in the
    block's spike counts s (runs, L, n) and the per-synapse trace state (u_m, u_s) before it:
    x_j = (d_m^(j+1) u_m - d_s^(j+1) u_s) / (tau_m - tau_s) + sum_k E_jk s_k with the kernel
    matrix E_jk = eps((j - k) dt). Hence V = v.x and the summed gradient sum_j c_j x_j cost one
    pass over the spikes each, and the state update a third: exact, no dense trace array.
    """

    def __init__(self, neuron: Neuron, shape: tuple[int, int], block: int):
        self.neuron, self.block = neuron, block
        dm, ds = neuron.decays
        j = np.arange(block)
        lag = j[:, None] - j[None, :]
        self.E = np.where(lag >= 0, (dm ** np.maximum(lag, 0) - ds ** np.maximum(lag, 0)), 0.0) / (
            neuron.tau_m - neuron.tau_s)
        self.from_state = np.stack([dm ** (j + 1), -(ds ** (j + 1))]) / (neuron.tau_m - neuron.tau_s)
        self.to_state = np.stack([dm ** (block - 1 - j), ds ** (block - 1 - j)])  # (2, L)
        self.carry = np.array([dm**block, ds**block])
        self.u = np.zeros((shape[0], 2, shape[1]))  # (runs, 2, n): u_m, u_s

    def potential(self, spikes: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Membrane potential (runs, L) during the block for somatic weights v (runs, n)."""
        start = np.einsum("bdn,bn->bd", self.u, v) @ self.from_state
        return start + np.einsum("bkn,bn->bk", spikes, v) @ self.E.T

    def weighted_sum(self, spikes: np.ndarray, c: np.ndarray) -> np.ndarray:
        """sum_j c_j x_j over the block, (runs, n), for coefficients c (runs, L)."""
        from_state = c @ self.from_state.T  # (runs, 2)
        return np.einsum("bd,bdn->bn", from_state, self.u) + np.einsum("bk,bkn->bn", c @ self.E, spikes)

    def advance(self, spikes: np.ndarray) -> None:
        """Move the trace state to the end of the block."""
        self.u = self.carry[:, None] * self.u + np.einsum("dk,bkn->bdn", self.to_state, spikes)


def poisson_spikes(rates, n_steps: int, dt: float, rng: np.random.Generator,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Spike counts per time step of independent Poisson processes, shape (n_steps, n).

    Drawn sparsely and exactly: the total count of input i over the n_steps bins is
    Poisson(rate_i n_steps dt) and each spike falls in a uniformly random bin, which makes the
    counts of different bins independent Poisson(rate_i dt) variables.
    """
    r = check_rates(rates)
    n = r.size
    counts = rng.poisson(r * n_steps * dt)
    inputs = np.repeat(np.arange(n), counts)
    bins = rng.integers(0, n_steps, size=inputs.size)
    counts = np.bincount(bins * n + inputs, minlength=n_steps * n).reshape(n_steps, n)
    if out is None:
        return counts.astype(float)
    out[...] = counts
    return out


def input_traces(rates, n_steps: int, seeds: Sequence[int], neuron: Neuron = Neuron()):
    """Poisson spike counts and PSP traces, shape (runs, n_steps, n), starting from rest."""
    r = check_rates(rates)
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps!r}")
    gens = _generators(seeds, 0)
    spikes = np.stack([poisson_spikes(r, n_steps, neuron.dt, g) for g in gens])
    x = PSPFilter(neuron, (len(gens), r.size))(spikes, axis=1)
    return spikes, x


def stationary_samples(rates, n_samples: int, seed: int, neuron: Neuron = Neuron(),
                       spacing: float | None = None) -> np.ndarray:
    """``n_samples`` PSP-trace vectors from the stationary input process, shape (n_samples, n).

    One long input simulation is subsampled every ``spacing`` seconds (default 4 tau_m, so that
    neighbouring samples are nearly independent) after a burn-in of 10 tau_m.
    """
    r = check_rates(rates)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples!r}")
    spacing = 4 * max(neuron.tau_m, neuron.tau_s) if spacing is None else spacing
    stride = max(1, int(round(spacing / neuron.dt)))
    burn = int(np.ceil(10 * max(neuron.tau_m, neuron.tau_s) / neuron.dt))
    rng = np.random.default_rng([int(seed), 7])
    filt = PSPFilter(neuron, (r.size,))
    filt(poisson_spikes(r, burn, neuron.dt, rng), axis=0)
    out = np.empty((n_samples, r.size))
    done, block = 0, max(1, 20000 // stride)
    while done < n_samples:
        k = min(block, n_samples - done)
        x = filt(poisson_spikes(r, k * stride, neuron.dt, rng), axis=0)
        out[done:done + k] = x[stride - 1::stride]
        done += k
    return out


# ----------------------------------------------------------------------------------------------
# Gradients and metrics
# ----------------------------------------------------------------------------------------------


def euclidean_gradient(x, target_spikes, weights, neuron: Neuron = Neuron(), attenuation=None):
    """Per-step gradient of the log-likelihood of the target spikes, [Y* - phi dt](phi'/phi) alpha x.

    ``x``: (..., n) traces; ``target_spikes``: (...) counts; ``weights``: (..., n) dendritic.
    """
    x = _finite(x, "x")
    w = _finite(weights, "weights")
    a = _attenuation(attenuation, w.shape)
    V = np.sum(a * w * x, axis=-1)
    err = np.asarray(target_spikes, dtype=float) - neuron.rate(V) * neuron.dt
    return (err * neuron.log_rate_derivative(V))[..., None] * a * x


def fisher_metric_estimate(weights, x_samples, neuron: Neuron = Neuron(), attenuation=None,
                           ridge: float = 0.0) -> np.ndarray:
    """Sample estimate of G = dt E[f(V) (alpha x)(alpha x)^T], f = phi'^2/phi.

    ``weights``: (..., n); ``x_samples``: (M, n), shared by all runs. ``ridge`` > 0 adds
    ridge * mean(diag G) * I (off by default: no regularisation unless asked).
    """
    w = _finite(weights, "weights")
    X = _finite(x_samples, "x_samples")
    a = _attenuation(attenuation, w.shape)
    if ridge < 0 or not np.isfinite(ridge):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    V = np.einsum("mn,...n->...m", X, a * w)
    fw = neuron.fisher_weight(V) * neuron.dt / X.shape[0]
    flat = fw.reshape(-1, fw.shape[-1])
    G = np.stack([(X.T * f) @ X for f in flat]).reshape(fw.shape[:-1] + (X.shape[1],) * 2)
    G = G * a[..., :, None] * a[..., None, :]
    if ridge > 0:
        diag_mean = np.trace(G, axis1=-2, axis2=-1) / G.shape[-1]
        G = G + ridge * diag_mean[..., None, None] * np.eye(G.shape[-1])
    return G


def invert_metric(G, rtol: float | None = None, strict: bool = True) -> np.ndarray:
    """Inverse of a (batch of) symmetric positive definite metric(s), through Cholesky factors.

    Raises :class:`SingularMetricError` if a matrix is not finite, not positive definite, or has
    reciprocal condition number 1 / (|G|_1 |G^-1|_1) <= rtol (default n * 1e-12). With
    ``strict=False`` the inverses of such matrices are returned as NaN instead (used to stop
    single runs of a batch).
    """
    G = np.asarray(G, dtype=float)
    if G.ndim < 2 or G.shape[-1] != G.shape[-2]:
        raise ValueError(f"metric must be square matrices (..., n, n), got shape {G.shape}")
    n = G.shape[-1]
    rtol = n * 1e-12 if rtol is None else rtol
    flat = G.reshape(-1, n, n)
    out = np.full_like(flat, np.nan)
    worst = np.inf
    for k, g in enumerate(flat):
        rcond = 0.0
        if np.all(np.isfinite(g)):
            try:
                factor = cho_factor(0.5 * (g + g.T), lower=True)
                inv = cho_solve(factor, np.eye(n))
                rcond = 1.0 / (np.abs(g).sum(0).max() * np.abs(inv).sum(0).max())
            except np.linalg.LinAlgError:
                rcond = 0.0
        worst = min(worst, rcond)
        if rcond > rtol:
            out[k] = inv
    if strict and worst <= rtol:
        raise SingularMetricError(
            f"the Fisher metric is singular: reciprocal condition number {worst:.3g} <= {rtol:.3g} "
            "(or not positive definite). Typical causes: an input that never spikes (rate 0), fewer "
            "samples than synapses, or a saturated neuron. Use more samples, remove silent inputs, "
            "or pass ridge > 0."
        )
    return out.reshape(G.shape)


def _gaussian_moments(neuron: Neuron, mean_V, var_V):
    """E[f(V)], E[f'(V)], E[f''(V)] for V ~ N(mean_V, var_V) by Gauss-Hermite quadrature."""
    V = np.asarray(mean_V)[..., None] + np.sqrt(np.asarray(var_V))[..., None] * _GH_NODES
    return tuple(np.sum(neuron.fisher_weight(V, k) * _GH_WEIGHTS, axis=-1) for k in range(3))


@dataclass
class GaussianMetric:
    """The Gaussian-membrane Fisher metric in somatic coordinates, in factored form.

    With mean traces mu (n,), trace covariance Sigma = c diag(mu), somatic weights v and
    s = Sigma v: G_v = dt [ m0 (Sigma + mu mu^T) + m1 (mu s^T + s mu^T) + m2 s s^T ],
    m_k = E[f^(k)(V)] for V ~ N(mu.v, v.Sigma.v), f = phi'^2/phi. See the chapter for the derivation.
    """

    mu: np.ndarray  # (n,) mean of the traces, a1 * rates
    c: float  # variance / mean of a trace, a2 / a1
    dt: float
    v: np.ndarray  # (..., n) somatic weights
    m: tuple  # (m0, m1, m2), each of shape (...)

    def matrix(self) -> np.ndarray:
        """G_v assembled as (..., n, n)."""
        mu = self.mu
        s = self.c * mu * self.v
        m0, m1, m2 = (np.asarray(mk)[..., None, None] for mk in self.m)
        ms = mu[:, None] * s[..., None, :]
        G = (m0 * (np.diag(self.c * mu) + np.outer(mu, mu)) + m1 * (ms + np.swapaxes(ms, -1, -2))
             + m2 * s[..., :, None] * s[..., None, :])
        return self.dt * G

    def _coefficients(self, strict: bool = True):
        if getattr(self, "_cache", None) is None or self._cache[0] != strict:
            self._cache = (strict, self._compute_coefficients(strict))
        return self._cache[1]

    def _compute_coefficients(self, strict: bool):
        """2x2 matrix K with G_v^-1 = (1/(dt m0)) [Sigma^-1 - P K P^T], P = [1/c, v] (n x 2).

        Runs whose metric is singular raise (``strict``) or get NaN coefficients."""
        m0, m1, m2 = (np.asarray(mk, dtype=float) for mk in self.m)
        bad = ~(m0 > 1e-300)
        if not strict:
            m0 = np.where(bad, np.nan, m0)
        elif np.any(bad):
            raise SingularMetricError(
                "the Gaussian Fisher metric is singular: E[phi'^2/phi] = 0 (the neuron is saturated "
                "or silent for all membrane potentials it visits)")
        mean_V = self.v @ self.mu
        var_V = self.c * np.sum(self.mu * self.v**2, axis=-1)
        C = np.stack([np.stack([m0, m1], -1), np.stack([m1, m2], -1)], -2) / m0[..., None, None]
        M = np.stack([np.stack([np.sum(self.mu) / self.c * np.ones_like(mean_V), mean_V], -1),
                      np.stack([mean_V, var_V], -1)], -2)  # U^T Sigma^-1 U, U = [mu, Sigma v]
        with np.errstate(invalid="ignore"):
            IMC = np.eye(2) + M @ C
            IMC = np.where(np.isfinite(IMC), IMC, np.eye(2))
            K = C @ np.linalg.inv(IMC)
        return K, m0

    def inverse(self) -> np.ndarray:
        """Closed-form G_v^-1 (diagonal plus rank two), assembled as (..., n, n)."""
        K, m0 = self._coefficients()
        P = np.stack([np.broadcast_to(1.0 / self.c, self.v.shape), self.v], -1)  # (..., n, 2)
        low = P @ K @ np.swapaxes(P, -1, -2)
        return (np.diag(1.0 / (self.c * self.mu)) - low) / (self.dt * m0[..., None, None])

    def solve(self, grad, strict: bool = True) -> np.ndarray:
        """G_v^-1 grad in O(n): grad_i/(c mu_i), minus a term shared by all synapses, minus one ~ v_i.

        A silent input (mu_i = 0, its gradient then zero) gets no homosynaptic term: the limit of
        an input at a vanishing rate, as in the paper's Fig 7; its heterosynaptic terms remain.
        """
        K, m0 = self._coefficients(strict)
        grad = np.asarray(grad, dtype=float)
        proj = np.stack([np.sum(grad, -1) / self.c, np.sum(self.v * grad, -1)], -1)  # P^T grad
        gam = np.einsum("...ij,...j->...i", K, proj)
        silent = self.mu == 0
        if np.any(silent & np.any(grad != 0, axis=tuple(range(grad.ndim - 1)))):
            raise ValueError("a silent input (mean trace 0) cannot have a nonzero gradient")
        homo = grad / np.where(silent, 1.0, self.c * self.mu)
        out = homo - gam[..., :1] / self.c - gam[..., 1:] * self.v
        return out / (self.dt * m0[..., None])


def gaussian_metric(weights, rates, neuron: Neuron = Neuron(), attenuation=None) -> GaussianMetric:
    """Gaussian-membrane approximation of the Fisher metric, in somatic coordinates v = alpha w.

    The dendritic metric is A G_v A with A = diag(alpha); see :func:`natural_direction`.
    """
    r = check_rates(rates, allow_zero=False)
    w = _finite(weights, "weights")
    a = _attenuation(attenuation, w.shape)
    v = a * w
    a1, a2 = neuron.psp_integrals()
    mean_V = a1 * v @ r
    var_V = a2 * np.sum(r * v**2, axis=-1)
    m = _gaussian_moments(neuron, mean_V, var_V)
    return GaussianMetric(mu=a1 * r, c=a2 / a1, dt=neuron.dt, v=v, m=m)


def gaussian_metric_matrix(weights, rates, neuron: Neuron = Neuron(), attenuation=None) -> np.ndarray:
    """The Gaussian-approximation metric in dendritic coordinates, A G_v A, as (..., n, n)."""
    w = _finite(weights, "weights")
    a = _attenuation(attenuation, w.shape)
    Gv = gaussian_metric(w, rates, neuron, a).matrix()
    return Gv * a[..., :, None] * a[..., None, :]


def gaussian_metric_inverse(weights, rates, neuron: Neuron = Neuron(), attenuation=None) -> np.ndarray:
    """Closed-form inverse of :func:`gaussian_metric_matrix`: A^-1 G_v^-1 A^-1."""
    w = _finite(weights, "weights")
    a = _attenuation(attenuation, w.shape)
    Gv_inv = gaussian_metric(w, rates, neuron, a).inverse()
    return Gv_inv / (a[..., :, None] * a[..., None, :])


def natural_direction(grad, weights, rates, neuron: Neuron = Neuron(), attenuation=None,
                      strict: bool = True) -> np.ndarray:
    """G^-1 grad for the Gaussian-approximation metric in dendritic coordinates, in O(n).

    With v = alpha w, G_w = A G_v A and grad_w = A grad_v, so G_w^-1 grad_w = A^-1 G_v^-1 A^-1 grad_w.
    """
    w = _finite(weights, "weights")
    a = _attenuation(attenuation, w.shape)
    metric = gaussian_metric(w, rates, neuron, a)
    return metric.solve(np.asarray(grad, dtype=float) / a, strict) / a


def fisher_potential_gradient(weights, x_samples, neuron: Neuron = Neuron(), attenuation=None) -> np.ndarray:
    """Dual map of the Fisher metric's potential: grad Psi(w) = dt E[F'(V) alpha x], F'' = f.

    G(w) = hess Psi(w) with Psi(w) = dt E[F(alpha w . x)], so natural-gradient flow is
    mirror-descent flow with potential Psi; this returns its dual coordinates (..., n).
    """
    w = _finite(weights, "weights")
    X = _finite(x_samples, "x_samples")
    a = _attenuation(attenuation, w.shape)
    V = np.einsum("mn,...n->...m", X, a * w)
    return neuron.dt * np.einsum("...m,mn->...n", neuron.fisher_potential_derivative(V), X) / X.shape[0] * a


def kl_rate(weights, teacher, x_samples, neuron: Neuron = Neuron(), attenuation=None) -> np.ndarray:
    """KL divergence rate (nats/s) from the teacher's to the student's output spike process,
    E[phi* log(phi*/phi) - phi* + phi], averaged over ``x_samples``."""
    w = _finite(weights, "weights")
    a = _attenuation(attenuation, w.shape)
    X = _finite(x_samples, "x_samples")
    p = neuron.rate(np.einsum("mn,...n->...m", X, a * w))
    q = neuron.rate(X @ np.asarray(teacher, dtype=float))
    return np.mean(q * np.log(q / p) - q + p, axis=-1)


# ----------------------------------------------------------------------------------------------
# Learning
# ----------------------------------------------------------------------------------------------


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    return rule


def learn(rule: str, rates, teacher, w0, lr, seeds: Sequence[int], duration: float,
          neuron: Neuron = Neuron(), attenuation=None, update_every: int = 10,
          chunk_steps: int = 4000, record_every: float = 0.5, n_metric_samples: int = 2000,
          metric_every: int = 10, metric_seed: int = 12345, ridge: float = 0.0,
          record_weights: bool = False, on_divergence: str = "raise") -> dict[str, np.ndarray]:
    """Teacher-student learning, a batch of runs simulated together.

    rule: "euclidean", "natural_gaussian" or "natural_numeric". rates: (n,) input rates (Hz).
    teacher: (n,) somatic teacher weights. w0: (runs, n) initial dendritic weights. lr: scalar or
    (runs,). seeds: one int per run (inputs and teacher spikes of run k depend only on seeds[k]).
    attenuation: None, (n,) or (runs, n). The summed per-step updates are applied every
    ``update_every`` steps (1 = the exact per-step rule). Natural-gradient rules recompute the
    metric at the current weights every ``metric_every`` updates (1 = every update);
    "natural_numeric" estimates it from ``n_metric_samples`` stationary input samples (shared by
    all runs, seeded by ``metric_seed``), which are also used to measure KL and rate errors.

    The duration is rounded up to a whole number of recording intervals (``record_every``).
    on_divergence: "raise" (a singular metric or non-finite weights raise an error) or "stop"
    (that run is frozen, its later records are NaN and ``diverged`` is True; for lr sweeps).

    Returns times (s), kl (nats/s), rate_error (Hz, RMS over inputs), weight_error (relative
    somatic ||v - v*|| / ||v*||), each (runs, records); w_final (runs, n); diverged (runs,);
    optionally weights (runs, records, n).
    """
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}")
    # The matrices here are small (n x n, n ~ 100): one BLAS thread is faster than several
    # threads contending for a busy machine.
    with threadpool_limits(limits=1):
        return _learn(rule, rates, teacher, w0, lr, seeds, duration, neuron, attenuation,
                      update_every, chunk_steps, record_every, n_metric_samples, metric_every,
                      metric_seed, ridge, record_weights, on_divergence == "raise")


def _learn(rule, rates, teacher, w0, lr, seeds, duration, neuron, attenuation, update_every,
           chunk_steps, record_every, n_metric_samples, metric_every, metric_seed, ridge,
           record_weights, strict):
    _check_rule(rule)
    r = check_rates(rates, allow_zero=(rule == "euclidean"))
    v_star = _finite(teacher, "teacher")
    w = np.array(_finite(w0, "w0"), dtype=float, ndmin=2)
    B, n = w.shape
    if v_star.shape != (n,) or r.shape != (n,):
        raise ValueError(f"rates {r.shape} and teacher {v_star.shape} must both have shape ({n},)")
    if len(seeds) != B:
        raise ValueError(f"need one seed per run: {B} runs but {len(seeds)} seeds")
    lr = np.broadcast_to(_finite(lr, "lr"), (B,)).astype(float)
    if np.any(lr < 0):
        raise ValueError("lr must be >= 0")
    a = np.array(_attenuation(attenuation, (B, n)))
    for name, value in (("update_every", update_every), ("chunk_steps", chunk_steps),
                        ("metric_every", metric_every), ("n_metric_samples", n_metric_samples)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not duration > 0:
        raise ValueError(f"duration must be > 0 s, got {duration!r}")
    dt = neuron.dt
    steps_per_record = max(update_every, int(round(record_every / dt / update_every)) * update_every)
    n_records = int(np.ceil(duration / dt / steps_per_record))
    n_steps = n_records * steps_per_record
    chunk = max(update_every, (chunk_steps // update_every) * update_every)

    X_bank = stationary_samples(r, n_metric_samples, metric_seed, neuron)
    in_gens = _generators(seeds, 1)
    out_gens = _generators(seeds, 2)
    traces = BlockTraces(neuron, (B, n), update_every)
    teacher_filter = PSPFilter(neuron, (B,))

    out = {k: np.empty((B, n_records + 1)) for k in ("kl", "rate_error", "weight_error")}
    weights = np.empty((B, n_records + 1, n)) if record_weights else None
    v_star_norm = np.linalg.norm(v_star)
    q_bank = neuron.rate(X_bank @ v_star)

    alive = np.ones(B, dtype=bool)

    def record(k: int) -> None:
        p = neuron.rate(np.einsum("mn,bn->bm", X_bank, a * w))
        with np.errstate(divide="ignore"):
            out["kl"][:, k] = np.mean(q_bank * np.log(q_bank / p) - q_bank + p, axis=-1)
        out["rate_error"][:, k] = np.sqrt(np.mean((p - q_bank) ** 2, axis=-1))
        out["weight_error"][:, k] = np.linalg.norm(a * w - v_star, axis=-1) / v_star_norm
        for key in out:
            out[key][~alive, k] = np.nan
        if weights is not None:
            weights[:, k] = np.where(alive[:, None], w, np.nan)

    record(0)
    G_inv = None
    n_updates = 0
    step = 0
    while step < n_steps:
        c = min(chunk, n_steps - step)
        spikes = np.empty((B, c, n))
        for b, g in enumerate(in_gens):
            poisson_spikes(r, c, dt, g, out=spikes[b])
        target_rate = neuron.rate(teacher_filter(spikes @ v_star, axis=1))  # (B, c): V* is linear

        target = np.empty((B, c))
        for b, g in enumerate(out_gens):
            target[b] = g.poisson(target_rate[b] * dt)
        for s0 in range(0, c, update_every):
            sb = spikes[:, s0:s0 + update_every]
            V = traces.potential(sb, a * w)
            e = (target[:, s0:s0 + update_every] - neuron.rate(V) * dt) * neuron.log_rate_derivative(V)
            grad = traces.weighted_sum(sb, e) * a
            traces.advance(sb)
            if rule == "euclidean":
                dw = grad
            elif rule == "natural_gaussian":
                if n_updates % metric_every == 0:
                    metric = gaussian_metric(w, r, neuron, a)
                dw = metric.solve(grad / a, strict) / a
            else:
                if n_updates % metric_every == 0:
                    G_inv = invert_metric(fisher_metric_estimate(w, X_bank, neuron, a, ridge), strict=strict)
                dw = np.einsum("bij,bj->bi", G_inv, grad)
            w_new = w + lr[:, None] * dw
            ok = np.all(np.isfinite(w_new), axis=-1)
            if strict and not np.all(ok):
                raise FloatingPointError(
                    f"weights became non-finite at t = {(step + s0 + update_every) * dt:.3f} s "
                    f"in run(s) {np.flatnonzero(~ok).tolist()}; lower lr")
            alive &= ok
            w = np.where(alive[:, None], w_new, w)
            n_updates += 1
            if (step + s0 + update_every) % steps_per_record == 0:
                record((step + s0 + update_every) // steps_per_record)
        step += c
    result = dict(out, times=np.arange(n_records + 1) * steps_per_record * dt,
                  w_final=np.where(alive[:, None], w, np.nan), diverged=~alive)
    if weights is not None:
        result["weights"] = weights
    return result


def learn_reference(rule: str, rates, teacher, w0, lr, seeds: Sequence[int], duration: float,
                    neuron: Neuron = Neuron(), attenuation=None, chunk_steps: int = 4000) -> np.ndarray:
    """The same learning as :func:`learn` with ``update_every=1, metric_every=1``, written as a
    plain Python loop over runs and time steps: traces, teacher spikes and weights are advanced one
    step at a time. Input spikes are drawn with the same generator calls as :func:`learn` (per
    chunk of ``chunk_steps``), so both give the same numbers for the same seeds.

    Slow on purpose: the reference for tests and the benchmark. Returns final weights (runs, n).
    Supports "euclidean" and "natural_gaussian".
    """
    if rule not in ("euclidean", "natural_gaussian"):
        raise ValueError(f"learn_reference supports 'euclidean' and 'natural_gaussian', got {rule!r}")
    r = check_rates(rates)
    v_star = np.asarray(teacher, dtype=float)
    W = np.array(w0, dtype=float, ndmin=2)
    B, n = W.shape
    lr = np.broadcast_to(np.asarray(lr, dtype=float), (B,))
    A = np.array(_attenuation(attenuation, (B, n)))
    dm, ds = neuron.decays
    n_steps = int(round(duration / neuron.dt))
    in_gens, out_gens = _generators(seeds, 1), _generators(seeds, 2)
    for b in range(B):
        um, us, w = np.zeros(n), np.zeros(n), W[b]
        for t in range(n_steps):
            if t % chunk_steps == 0:
                spikes = poisson_spikes(r, min(chunk_steps, n_steps - t), neuron.dt, in_gens[b])
            um = dm * um + spikes[t % chunk_steps]
            us = ds * us + spikes[t % chunk_steps]
            x = (um - us) / (neuron.tau_m - neuron.tau_s)
            target = out_gens[b].poisson(neuron.rate(x @ v_star) * neuron.dt)
            grad = euclidean_gradient(x, target, w, neuron, A[b])
            if rule == "natural_gaussian":
                grad = natural_direction(grad, w, r, neuron, A[b])
            w = w + lr[b] * grad
        W[b] = w
    return W


def teacher_student(n: int, rates, seed: int, n_students: int, neuron: Neuron = Neuron(),
                    spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A teacher (n,) and ``n_students`` initial students (n_students, n), somatic weights.

    All weights are drawn independently from N(m, (spread m)^2) with m = theta / sum(rates), so
    that the mean membrane potential of a typical neuron sits at the sigmoid's threshold.
    """
    r = check_rates(rates)
    if r.shape != (n,):
        raise ValueError(f"rates must have shape ({n},), got {r.shape}")
    m = neuron.theta / np.sum(r)
    rng = np.random.default_rng([int(seed), 3])
    teacher = rng.normal(m, spread * m, size=n)
    students = rng.normal(m, spread * m, size=(n_students, n))
    return teacher, students


def protocol_updates(rule: str, weights, x, target_spikes, metric_rates,
                     neuron: Neuron = Neuron(), attenuation=None, x_samples=None) -> np.ndarray:
    """Summed weight updates (unit learning rate) over a stimulation protocol at fixed weights.

    ``x``: (runs, steps, n) traces during the protocol; ``target_spikes``: (runs, steps);
    ``metric_rates``: the input rates the metric is built from (the neuron's long-run input
    statistics). "natural_numeric" needs ``x_samples`` (stationary samples at ``metric_rates``).
    """
    _check_rule(rule)
    w = np.array(_finite(weights, "weights"), ndmin=2)
    a = np.array(_attenuation(attenuation, w.shape))
    x = _finite(x, "x")
    V = np.einsum("btn,bn->bt", x, a * w)
    e = (np.asarray(target_spikes, dtype=float) - neuron.rate(V) * neuron.dt) * neuron.log_rate_derivative(V)
    grad = np.einsum("bt,btn->bn", e, x) * a
    if rule == "euclidean":
        return grad
    if rule == "natural_gaussian":
        return natural_direction(grad, w, metric_rates, neuron, a)
    if x_samples is None:
        raise ValueError("rule 'natural_numeric' needs x_samples to estimate the metric")
    return np.einsum("bij,bj->bi", invert_metric(fisher_metric_estimate(w, x_samples, neuron, a)), grad)
