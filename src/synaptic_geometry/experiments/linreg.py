"""Linear regression: correlated inputs, the exact limit of mirror descent, and the sweeps.

Mirror descent on the squared loss of an underdetermined linear model (N data points, D > N
weights) keeps every dual step in the row space of X, so a limit that fits the data is the
*Bregman projection* of the start w0 onto {w : Xw = y}:

    grad phi(w_inf) - grad phi(w0) = X^T alpha,      X w_inf = y.

:func:`bregman_projection` computes it from the N-dimensional concave dual with Newton's method.
:func:`published_protocol` is the iterative protocol of the paper's code (mirror descent with
momentum and a cosine learning rate, with a learning-rate search), kept to show both agree.
:func:`nested_draws` samples the paper's inputs, X = Z L^T + U, with the FFT instead of a D x D
Cholesky factor. :func:`figure_grid`, :func:`compare_protocols`, :func:`robustness_sweep` and
:func:`failure_sweep` run the chapter's experiments through the results store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.special
import torch
from threadpoolctl import threadpool_limits

from synaptic_geometry.experiments.trajectory import descend
from synaptic_geometry.gaussianity import change_magnitude, delta_cdf, domain_mask, dual_change, gaussian_floor
from synaptic_geometry.infra.store import experiment
from synaptic_geometry.infra.sweep import run_sweep
from synaptic_geometry.potentials import TRAINED_POTENTIALS, Potential, get_potential, require_finite

__all__ = [
    "correlation",
    "circulant_spectrum",
    "sample_inputs",
    "nested_draws",
    "paper_widths",
    "n_points",
    "BregmanProjection",
    "ProjectionError",
    "bregman_projection",
    "coordinate_leverage",
    "ProtocolResult",
    "published_protocol",
    "figure_grid",
    "compare_protocols",
    "robustness_sweep",
    "failure_sweep",
    "frozen_field_sweep",
    "floor_reference",
    "floor_ratio",
    "mean_variance_factor",
    "robustness_minimum",
    "candidate_p",
    "lipschitz_change",
    "ROBUSTNESS_CANDIDATES",
    "INPUTS",
    "STARTS",
]

# negative entropy and the p-norms p = 1.1, 1.2, ..., 4.0: the grid extends beyond the largest true p (3)
ROBUSTNESS_CANDIDATES = ("negative_entropy",) + tuple(f"{p / 10:g}-norm" for p in range(11, 41))
UNIFORM_VARIANCE = 1.0 / 12.0  # variance of the uniform(-0.5, 0.5) part of the paper's inputs
INPUTS = ("correlated", "independent", "student_t:<df>")
STARTS = ("normal", "zero", "cauchy")


# --------------------------------------------------------------------------- inputs


def correlation(d: int, s: float = 1.0, q: float = 2.0) -> np.ndarray:
    """First row of the Toeplitz correlation, c_k = (-1)^k / (1 + (k/s)^q) for k = 0..d-1."""
    if d < 1:
        raise ValueError(f"width d must be >= 1, got {d}")
    if not (s > 0 and q > 0 and math.isfinite(s) and math.isfinite(q)):
        raise ValueError(f"correlation needs finite s > 0 and q > 0, got s = {s}, q = {q}")
    k = np.arange(d, dtype=np.float64)
    return np.where(k % 2 == 0, 1.0, -1.0) / (1.0 + (k / s) ** q)


def circulant_spectrum(c: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Eigenvalues of the minimal circulant embedding (size 2(d-1)) of the Toeplitz row ``c``.

    Raises ValueError if the embedding is not positive semidefinite (then it cannot be sampled
    exactly); eigenvalues within ``tol * max`` of zero are set to zero.
    """
    c = np.asarray(c, dtype=np.float64)
    if len(c) < 2:
        return c[:1].copy()
    row = np.concatenate([c, c[-2:0:-1]])
    spectrum = np.fft.rfft(row).real
    floor = -tol * spectrum.max()
    if spectrum.min() < floor:
        raise ValueError(
            f"circulant embedding of this correlation has a negative eigenvalue "
            f"({spectrum.min():.3g}, largest {spectrum.max():.3g}): it cannot be sampled exactly by the "
            "FFT; the accepted correlations are those whose embedding is nonnegative "
            "(e.g. s = 1 with q in {1, 2})"
        )
    return np.clip(spectrum, 0.0, None)


def sample_inputs(n: int, d: int, s: float = 1.0, q: float = 2.0, *, rng: np.random.Generator) -> np.ndarray:
    """n rows of X = Z L^T + U: Gaussian with the Toeplitz correlation plus uniform(-0.5, 0.5).

    The Gaussian part is sampled exactly by circulant embedding: a complex Gaussian vector
    scaled by the square root of the embedding's spectrum and transformed by the FFT gives two
    independent rows (real and imaginary parts); the leading d coordinates have covariance C.
    """
    if n < 1:
        raise ValueError(f"number of rows n must be >= 1, got {n}")
    c = correlation(d, s, q)
    if d == 1:
        gauss = rng.standard_normal((n, 1))
    else:
        spectrum = circulant_spectrum(c)            # length d (rfft of 2(d-1) points)
        m = 2 * (d - 1)
        full = np.concatenate([spectrum, spectrum[-2:0:-1]])  # all m eigenvalues
        scale = np.sqrt(full / m)
        pairs = (n + 1) // 2
        gauss = np.empty((2 * pairs, d))
        chunk = max(1, 2**22 // m)                   # bound the complex buffer to ~64 MB
        for start in range(0, pairs, chunk):
            k = min(pairs, start + chunk) - start
            z = np.empty((k, m), dtype=np.complex128)
            z.real = rng.standard_normal((k, m))
            z.imag = rng.standard_normal((k, m))
            z *= scale
            f = np.fft.fft(z, axis=1)[:, :d]
            gauss[2 * start: 2 * (start + k): 2] = f.real
            gauss[2 * start + 1: 2 * (start + k): 2] = f.imag
        gauss = gauss[:n]
    gauss += rng.uniform(-0.5, 0.5, size=(n, d))
    return gauss


def paper_widths(count: int = 10, lo: int = 100, hi: int = 20000) -> np.ndarray:
    """Widths as in the paper's code: int(logspace(log10 lo, log10 hi, count))."""
    return np.logspace(np.log10(lo), np.log10(hi), count).astype(int)


def n_points(width: int, exponent: float) -> int:
    """Number of data points N = floor(D^a) (with a guard against rounding just below an integer)."""
    return int(math.floor(width**exponent + 1e-9))


def _draw(n: int, d: int, s: float, q: float, seed: int, inputs: str = "correlated"):
    """One draw: inputs (n, d), labels +-1 (n,), and a standard normal vector (d,) for the start."""
    rng_x, rng_y, rng_w = (np.random.default_rng(s_) for s_ in np.random.SeedSequence(seed).spawn(3))
    if inputs == "correlated":
        X = sample_inputs(n, d, s, q, rng=rng_x)
    elif inputs == "independent":  # the same marginals without correlation: N(0, 1) + uniform(-0.5, 0.5)
        X = rng_x.standard_normal((n, d)) + rng_x.uniform(-0.5, 0.5, size=(n, d))
    elif inputs.startswith("student_t:"):
        df = float(inputs.split(":", 1)[1])
        X = rng_x.standard_t(df, size=(n, d))
    else:
        raise ValueError(f"unknown inputs {inputs!r}; accepted: {', '.join(map(repr, INPUTS))}")
    y = rng_y.choice(np.array([-1.0, 1.0]), size=n)
    return X, y, rng_w.standard_normal(d)


def _start(kind: str, z: np.ndarray) -> np.ndarray:
    """The start w0 from a standard normal vector z of length D: N(0, 1/D), zero, or Cauchy / sqrt(D).

    The Cauchy start is the same draw pushed through the Cauchy quantile function, so it keeps the
    signs and order of the normal start but has infinite variance (it breaks (A3) and (A5)).
    """
    d = len(z)
    if kind == "normal":
        return z / np.sqrt(d)
    if kind == "zero":
        return np.zeros(d)
    if kind == "cauchy":
        return np.tan(np.pi * (scipy.special.ndtr(z) - 0.5)) / np.sqrt(d)
    raise ValueError(f"unknown start {kind!r}; accepted: {', '.join(map(repr, STARTS))}")


def nested_draws(
    widths: Sequence[int], exponents: Sequence[float], s: float, q: float, seed: int, *, inputs: str = "correlated"
) -> Iterator[tuple[float, int, np.ndarray, np.ndarray, np.ndarray]]:
    """Make the widest draw once and yield ``(exponent, width, X, y, w0)`` slices of it.

    X has N = floor(D^a) rows and D columns: the leading rows and coordinates of the widest
    sample. Labels are random +-1, the start is w0 ~ N(0, 1/D) (the first D coordinates of one
    standard normal vector, divided by sqrt(D)). ``inputs`` is "correlated" (the paper's
    inputs) or "student_t:<df>" (independent heavy-tailed inputs, for the failure experiment).
    """
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 2:
        raise ValueError(f"widths must be a non-empty list of integers >= 2, got {widths}")
    n_max = max(n_points(w, a) for w in widths for a in exponents)
    X, y, z = _draw(n_max, max(widths), s, q, seed, inputs)
    for a in exponents:
        for d in widths:
            n = n_points(d, a)
            yield a, d, X[:n, :d], y[:n], z[:d] / np.sqrt(d)


# --------------------------------------------------------------------------- exact limit


@dataclass
class BregmanProjection:
    """Result of :func:`bregman_projection`."""

    w: np.ndarray          # the projection (the limit of mirror descent)
    alpha: np.ndarray      # dual coefficients: grad phi(w) - grad phi(w0) = X^T alpha
    residual: float        # ||X w - y|| / ||y||
    iterations: int        # Newton iterations
    converged: bool


class ProjectionError(RuntimeError):
    """The dual Newton solve did not reach the requested residual."""


def _check_problem(X, y, w0, potential: Potential) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w0 = np.asarray(w0, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (N data points x D weights), got shape {X.shape}")
    n, d = X.shape
    if y.shape != (n,):
        raise ValueError(f"y must have shape (N,) = ({n},), got {y.shape}")
    if w0.shape != (d,):
        raise ValueError(f"w0 must have shape (D,) = ({d},), got {w0.shape}")
    for name, arr in (("X", X), ("y", y), ("w0", w0)):
        require_finite(arr, f"entries of {name}")
    if n >= d:
        raise ValueError(
            f"the problem is not underdetermined: N = {n} data points >= D = {d} weights; the Bregman "
            "projection onto {w : Xw = y} needs N < D (and X of full row rank)"
        )
    potential.check_domain(w0, "start w0")
    return X, y, w0


def _dual_hessian(X: np.ndarray, d: np.ndarray, dtype) -> np.ndarray:
    """X diag(d) X^T, formed as B B^T with B = X sqrt(d) (a symmetric rank-k update)."""
    B = X.astype(dtype, copy=False) * np.sqrt(d).astype(dtype)
    return (B @ B.T).astype(np.float64)


def _factor(X: np.ndarray, d: np.ndarray, dtype):
    """Cholesky factor of X diag(d) X^T (inf entries of d, from exact zeros, are capped)."""
    if not np.isfinite(d).all():
        finite = d[np.isfinite(d)]
        d = np.where(np.isfinite(d), d, finite.max() if finite.size else 1.0)
    try:
        return np.linalg.cholesky(_dual_hessian(X, d, dtype)), True
    except np.linalg.LinAlgError:
        raise ValueError(
            "the dual Hessian X diag(1/hess phi) X^T is not positive definite: X must have "
            "full row rank (linearly independent data points)"
        ) from None


_KEEP_HESSIAN = 0.5  # reuse the Hessian for the next step if the last full step cut the residual below this factor


def _solve(factor, b: np.ndarray) -> np.ndarray:
    """Solve (L L^T) x = b from the Cholesky factor L."""
    chol = factor[0]
    half = scipy.linalg.solve_triangular(chol, b, lower=True, check_finite=False)
    return scipy.linalg.solve_triangular(chol.T, half, lower=False, check_finite=False)


def _inverse_hessian(potential: Potential, w: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore"):
        return 1.0 / potential.hess_diag(w)


def _backtrack(trial_point, shortest: float = 1e-12):
    """The line search of both Newton solvers: step lengths t = 1, 1/2, 1/4, ... down to ``shortest``.

    ``trial_point(t)`` returns the point reached with step length t if it is acceptable, else None.
    Returns ``(t, point)`` for the first acceptable t, or ``(None, None)`` if none is.
    """
    t = 1.0
    while t >= shortest:
        point = trial_point(t)
        if point is not None:
            return t, point
        t *= 0.5
    return None, None


def _dual_newton(X, y, w0, potential, tol, max_iter, hessian_dtype):
    """Newton ascent on the dual G(alpha); w(alpha) = inv_grad(theta0 + X^T alpha) is exact."""
    sign = np.sign(w0) if potential.keeps_sign else None
    theta0 = potential.grad(w0)
    y_norm = float(np.linalg.norm(y)) or 1.0

    def primal(alpha):
        try:
            w = potential.inv_grad(theta0 + X.T @ alpha, sign=sign)
            potential.check_domain(w)  # e.g. a weight of negative_entropy underflowing to zero
            return w
        except ValueError:  # overflow or underflow: the step was too long
            return None

    def dual_value(alpha, w):
        theta = theta0 + X.T @ alpha
        return float(alpha @ y - (theta @ w - potential.value(w)))  # phi*(theta) = <theta, w> - phi(w)

    X_h = X.astype(hessian_dtype)  # the copy the Hessians are formed from
    alpha, w = np.zeros(X.shape[0]), w0.copy()
    value, gradient = dual_value(alpha, w), y - X @ w
    factor, last_d, stale, iterations = None, None, False, 0
    while np.linalg.norm(gradient) / y_norm > tol and iterations < max_iter:
        iterations += 1
        if factor is None or not stale:
            d = _inverse_hessian(potential, w)
            if factor is None or not np.array_equal(d, last_d):  # constant Hessian (2-norm): factor once
                factor, last_d = _factor(X_h, d, hessian_dtype), d
        step = _solve(factor, gradient)
        slope, gradient_norm = float(gradient @ step), float(np.linalg.norm(gradient))

        def trial_point(t):
            trial = alpha + t * step
            w_trial = primal(trial)
            if w_trial is None:
                return None
            value_trial, gradient_trial = dual_value(trial, w_trial), y - X @ w_trial
            armijo = value_trial >= value + 1e-4 * t * slope
            # near the solution the dual value is flat to rounding: accept a step that reduces the residual
            flat = slope <= 1e-12 * max(1.0, abs(value))
            if np.isfinite(value_trial) and (armijo or (flat and np.linalg.norm(gradient_trial) < gradient_norm)):
                return trial, w_trial, value_trial, gradient_trial
            return None

        t, point = _backtrack(trial_point)
        if point is not None:
            alpha, w, value, gradient = point
            # keep the factorised Hessian while full steps contract the residual fast (it costs N^2 D)
            stale = t == 1.0 and np.linalg.norm(gradient) <= _KEEP_HESSIAN * gradient_norm
        elif stale:  # the kept Hessian was not good enough: refresh it and try again
            stale = False
        else:
            break  # no acceptable step: report non-convergence
    return w, alpha, iterations


def _primal_dual_newton(X, y, w0, potential, tol, max_iter, hessian_dtype):
    """Newton on the optimality system grad phi(w) - theta0 - X^T alpha = 0, Xw = y.

    Used where grad phi is smooth but its inverse is not (p-norms with p > 2, whose inverse dual
    map |theta|^(1/(p-1)) has an infinite slope at zero and makes dual Newton oscillate).
    Backtracking on the norm of both residuals (infeasible-start Newton).
    """
    theta0 = potential.grad(w0)
    y_norm = float(np.linalg.norm(y)) or 1.0
    alpha, w = np.zeros(X.shape[0]), w0.copy()

    def residuals(w, alpha):
        return potential.grad(w) - theta0 - X.T @ alpha, X @ w - y

    X_h = X.astype(hessian_dtype)  # the copy the Hessians are formed from
    g, r = residuals(w, alpha)
    factor, stale, iterations = None, False, 0
    while iterations < max_iter:
        scale = max(float(np.linalg.norm(potential.grad(w) - theta0)), 1e-300)
        if np.linalg.norm(r) / y_norm <= tol and np.linalg.norm(g) / scale <= tol:
            break
        iterations += 1
        if factor is None or not stale:
            d = _inverse_hessian(potential, w)
            d = np.where(np.isfinite(d), d, np.nanmax(np.where(np.isfinite(d), d, np.nan)))
            factor = _factor(X_h, d, hessian_dtype)
        # H dw - X^T da = -g,  X dw = -r   =>   (X D X^T) da = X (D g) - r,  dw = D (X^T da - g)
        d_alpha = _solve(factor, X @ (d * g) - r)
        d_w = d * (X.T @ d_alpha - g)
        merit = math.hypot(np.linalg.norm(g), np.linalg.norm(r))

        def trial_point(t):
            g_t, r_t = residuals(w + t * d_w, alpha + t * d_alpha)
            accept = math.hypot(np.linalg.norm(g_t), np.linalg.norm(r_t)) <= (1 - 1e-4 * t) * merit
            return (g_t, r_t) if accept else None

        t, point = _backtrack(trial_point)
        if point is not None:
            w, alpha, (g, r) = w + t * d_w, alpha + t * d_alpha, point
            # keep the factorised Hessian while full steps contract the residuals fast (it costs N^2 D)
            stale = t == 1.0 and math.hypot(np.linalg.norm(g), np.linalg.norm(r)) <= _KEEP_HESSIAN * merit
        elif stale:
            stale = False
        else:
            break
    return w, alpha, iterations


def bregman_projection(
    X,
    y,
    w0,
    potential: str | Potential,
    *,
    tol: float = 1e-9,
    max_iter: int = 100,
    hessian_dtype=np.float32,
    raise_on_failure: bool = True,
) -> BregmanProjection:
    """The minimiser of D_phi(w, w0) subject to Xw = y, through the concave N-dimensional dual.

    With theta0 = grad phi(w0) and w(alpha) = inv_grad(theta0 + X^T alpha), the dual
    G(alpha) = <alpha, y> - phi*(theta0 + X^T alpha) has gradient y - X w(alpha) and Hessian
    -X diag(1 / hess_diag(w)) X^T. Newton's method with a backtracking line search maximises it.
    For p-norms with p > 2 the inverse dual map is not smooth at zero, so Newton is applied to
    the optimality system in (w, alpha) instead, which has the same N x N matrix. The costly
    N x N x D product is formed in ``hessian_dtype`` and solved in float64; gradients and
    residuals are float64. Stops when ||Xw - y|| / ||y|| <= tol (and, for the second method,
    the dual representation holds to the same relative accuracy). Raises ValueError for bad
    input and ProjectionError if the solve does not converge within ``max_iter`` iterations
    (or returns ``converged=False`` if ``raise_on_failure`` is False).
    """
    potential = get_potential(potential)
    X, y, w0 = _check_problem(X, y, w0, potential)
    if not (0 < tol < 1):
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    use_primal = getattr(potential, "p", 2.0) > 2.0
    solver = _primal_dual_newton if use_primal else _dual_newton
    # one BLAS thread: multithreaded OpenBLAS (above all its Cholesky) stalls badly on a shared
    # machine; run independent solves in parallel processes instead
    with threadpool_limits(limits=1):
        w, alpha, iterations = solver(X, y, w0, potential, tol, max_iter, hessian_dtype)
    residual = float(np.linalg.norm(X @ w - y)) / (float(np.linalg.norm(y)) or 1.0)
    converged = residual <= tol and np.isfinite(w).all()
    if use_primal and converged:
        change = potential.grad(w) - potential.grad(w0)
        converged = np.linalg.norm(change - X.T @ alpha) <= tol * max(np.linalg.norm(change), 1e-300)
    if not converged and raise_on_failure:
        raise ProjectionError(
            f"Bregman projection ({potential.name}) did not converge: relative residual {residual:.3g} "
            f"(tol {tol:.3g}) after {iterations} Newton iterations (max_iter = {max_iter}); the problem "
            "may be badly conditioned or the start far from the constraint set"
        )
    return BregmanProjection(w=w, alpha=alpha, residual=residual, iterations=iterations, converged=bool(converged))


def coordinate_leverage(X, w, potential: str | Potential) -> np.ndarray:
    """Leverage h_j = d_j x_j^T (X D X^T)^{-1} x_j of each coordinate, D = diag(d), d = 1/hess phi(w).

    The h_j lie in [0, 1] and sum to N, so their mean is N/D. A coordinate's leverage measures
    how much its own input column feeds back into the dual coefficients alpha; the proof in the
    chapter needs the leverages to vanish.
    """
    potential = get_potential(potential)
    X = np.asarray(X, dtype=np.float64)
    d = 1.0 / potential.hess_diag(np.asarray(w, dtype=np.float64))
    B = X * np.sqrt(d)
    chol = np.linalg.cholesky(B @ B.T)
    solved = scipy.linalg.solve_triangular(chol, B, lower=True, check_finite=False)
    return np.einsum("ij,ij->j", solved, solved)


# --------------------------------------------------------------------------- iterative protocol


@dataclass
class ProtocolResult:
    """Result of :func:`published_protocol`."""

    w: np.ndarray
    lr: float                    # learning rate chosen on the held-out draw
    steps: int                   # steps used for the final run
    final_loss: float            # mean squared error at the end of the final run
    residual: float              # ||X w - y|| / ||y||
    converged: bool              # final_loss < loss_target
    lrs: np.ndarray              # the learning-rate grid
    search_losses: np.ndarray    # (search rounds, len(lrs)) final held-out losses (inf = diverged)
    failures: list[str] = field(default_factory=list)


def _run_mirror_descent(X, y, w0, potential: str, lr: float, steps: int, momentum: float) -> tuple[np.ndarray, float]:
    """Full-batch mirror descent on the mean squared error, cosine-annealed lr; returns (w, loss)."""
    Xt, yt = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    run = descend(lambda w: torch.mean((Xt @ w - yt) ** 2), w0, potential, lr, steps, momentum=momentum,
                  record_every=steps, schedule="cosine")
    final = run.losses[-1]
    return run.path[-1], final if math.isfinite(final) else math.inf


def _safe_run(X, y, w0, potential, lr, steps, momentum):
    try:
        return _run_mirror_descent(X, y, w0, potential, lr, steps, momentum)
    except (ValueError, FloatingPointError):  # overflow, nan or a weight leaving the domain: divergence
        return np.asarray(w0, dtype=np.float64), math.inf


def published_protocol(
    X,
    y,
    w0,
    potential: str,
    heldout: tuple,
    *,
    lrs: Sequence[float] | None = None,
    steps: int = 100,
    extra_steps: int = 100,
    max_extensions: int = 4,
    loss_target: float = 1e-3,
    momentum: float = 0.9,
) -> ProtocolResult:
    """The paper's iterative protocol with :class:`MirrorDescent` (momentum, cosine lr).

    The learning rate is chosen from ``lrs`` (default 16 log-spaced values in [1e-7, 1e-1]) by
    the lowest final loss on the held-out draw ``heldout = (X_h, y_h, w0_h)``; while that loss
    is >= ``loss_target``, ``extra_steps`` are added and the search repeats (at most
    ``max_extensions`` times). The chosen lr and step count then train on (X, y, w0). Every
    shortfall is recorded in ``failures``.
    """
    potential = get_potential(potential).name
    X, y, w0 = _check_problem(X, y, w0, get_potential(potential))
    Xh, yh, wh = _check_problem(*heldout, get_potential(potential))
    lrs = np.logspace(-7, -1, 16) if lrs is None else np.asarray(lrs, dtype=np.float64)
    failures: list[str] = []
    rounds = []
    n_steps = steps
    for extension in range(max_extensions + 1):
        losses = np.array([_safe_run(Xh, yh, wh, potential, lr, n_steps, momentum)[1] for lr in lrs])
        rounds.append(losses)
        best = int(np.argmin(losses))
        if losses[best] < loss_target:
            break
        failures.append(
            f"lr search with {n_steps} steps: best held-out loss {losses[best]:.3g} >= {loss_target:g}"
            + ("; adding steps" if extension < max_extensions else "; giving up")
        )
        if extension < max_extensions:
            n_steps += extra_steps
    lr = float(lrs[best]) if np.isfinite(rounds[-1][best]) else float("nan")
    if not math.isfinite(lr):
        failures.append("every learning rate diverged on the held-out draw")
        w, final = np.asarray(w0, dtype=np.float64).copy(), math.inf
    else:
        w, final = _safe_run(X, y, w0, potential, lr, n_steps, momentum)
    converged = final < loss_target
    if not converged:
        failures.append(f"final run (lr {lr:.3g}, {n_steps} steps): loss {final:.3g} >= {loss_target:g}")
    residual = float(np.linalg.norm(X @ w - y) / (np.linalg.norm(y) or 1.0)) if np.isfinite(w).all() else math.inf
    return ProtocolResult(
        w=w, lr=lr, steps=n_steps, final_loss=final, residual=residual, converged=converged,
        lrs=lrs, search_losses=np.array(rounds), failures=failures,
    )


# --------------------------------------------------------------------------- sweeps


def _metrics(w0: np.ndarray, w: np.ndarray, potential: str) -> tuple[float, float]:

    return float(delta_cdf(dual_change(w0, w, potential), centered=False)), float(change_magnitude(w0, w, potential))


def _figure_cell(widths, exponents, potentials, s, q, seed, inputs="correlated") -> dict[str, np.ndarray]:
    shape = (len(potentials), len(exponents), len(widths))
    keys = ("delta_cdf", "delta_cdf_centered", "mean_ratio", "magnitude", "residual", "iterations", "n", "seconds")
    out = {k: np.full(shape, np.nan) for k in keys}
    index_a = {a: i for i, a in enumerate(exponents)}
    index_d = {int(d): i for i, d in enumerate(widths)}
    for a, d, X, y, w0 in nested_draws(widths, exponents, s, q, seed, inputs=inputs):
        for p, name in enumerate(potentials):
            start = time.perf_counter()
            result = bregman_projection(X, y, w0, name)
            cell = (p, index_a[a], index_d[d])
            out["seconds"][cell] = time.perf_counter() - start
            out["delta_cdf"][cell], out["magnitude"][cell] = _metrics(w0, result.w, name)
            change = dual_change(w0, result.w, name)
            out["delta_cdf_centered"][cell] = delta_cdf(change, centered=True)
            out["mean_ratio"][cell] = float(change.mean() / change.std())
            out["residual"][cell] = result.residual
            out["iterations"][cell] = result.iterations
            out["n"][cell] = X.shape[0]
    return out


def _long_table(arrays: dict, potentials, exponents, widths, seeds, qs) -> pd.DataFrame:
    rows = []
    for qi, q in enumerate(qs):
        for si, seed in enumerate(seeds):
            for p, name in enumerate(potentials):
                for ai, a in enumerate(exponents):
                    for di, d in enumerate(widths):
                        rows.append({
                            "q": q, "seed": seed, "potential": name, "exponent": a, "width": int(d),
                            **{k: float(v[qi, si, p, ai, di]) for k, v in arrays.items()},
                        })
    return pd.DataFrame(rows)


def figure_grid(
    widths: Sequence[int],
    exponents: Sequence[float] = (0.5, 0.75),
    qs: Sequence[float] = (2.0, 1.0),
    potentials: Sequence[str] = TRAINED_POTENTIALS,
    seeds: Sequence[int] = tuple(range(30)),
    s: float = 1.0,
    root=None,
    progress: bool = True,
    workers: int = 1,
) -> pd.DataFrame:
    """The linear-regression figure: exact limits for every (q, seed), cached per (q, seed).

    Each cell is the stored experiment :func:`figure_cell`; the missing cells run as a sweep
    (:func:`synaptic_geometry.infra.sweep.run_sweep`), in ``workers`` processes if ``workers`` > 1.

    Returns a long table with columns q, seed, potential, exponent, width, delta_cdf (the published
    statistic: divided by the standard deviation, not centred; exact), delta_cdf_centered,
    mean_ratio (mean of the dual change over its standard deviation), magnitude, residual,
    iterations, n, seconds (time of the exact solve when computed).
    """
    widths = [int(d) for d in widths]
    exponents = [float(a) for a in exponents]
    potentials = [get_potential(p).name for p in potentials]
    cells = [(float(q), int(seed)) for q in qs for seed in seeds]
    params = {
        cell: dict(widths=widths, exponents=exponents, potentials=potentials, s=float(s), q=cell[0], seed=cell[1])
        for cell in cells
    }
    jobs = [params[cell] for cell in cells]
    done = run_sweep(figure_cell, jobs, root=root, executor="local" if workers > 1 else "serial", workers=workers,
                     threads=1, progress=progress, label_keys=["q", "seed"])
    if not done.ok:
        raise RuntimeError(done.summary())
    results = {cell: figure_cell(**params[cell], root=root) for cell in cells}  # all from the store now
    seeds = [int(x) for x in seeds]
    qs = [float(q) for q in qs]
    keys = results[cells[0]].keys()
    stacked = {
        k: np.stack([np.stack([results[(q, seed)][k] for seed in seeds]) for q in qs]) for k in keys
    }
    return _long_table(stacked, potentials, exponents, widths, seeds, qs)


@experiment("linreg_figure")
def figure_cell(widths: list, exponents: list, potentials: list, s: float, q: float,
                seed: int) -> dict[str, np.ndarray]:
    """One (q, seed) cell of the figure, stored: the exact limit at every width, exponent and potential."""
    return _figure_cell(widths, exponents, potentials, s, q, seed)


@experiment("linreg_protocols")
def protocol_comparison(widths: list, exponent: float, q: float, potentials: list, seed: int,
                        s: float) -> dict[str, np.ndarray]:
    """:func:`compare_protocols`, stored: one row per potential, width and method."""
    rows = {k: [] for k in ("potential", "width", "n", "method", "seconds", "residual", "delta_cdf",
                            "magnitude", "lr", "steps", "failures", "distance")}
    heldout = {d: (X, y, w0) for _, d, X, y, w0 in nested_draws(widths, [exponent], s, q, seed + 10_000)}
    for _, d, X, y, w0 in nested_draws(widths, [exponent], s, q, seed):
        for name in potentials:
            start = time.perf_counter()
            exact = bregman_projection(X, y, w0, name)
            t_exact = time.perf_counter() - start
            start = time.perf_counter()
            proto = published_protocol(X, y, w0, name, heldout[d])
            t_proto = time.perf_counter() - start
            scale = float(np.linalg.norm(exact.w - w0))
            for method, w, sec, res, lr, steps, fails in (
                ("exact", exact.w, t_exact, exact.residual, np.nan, exact.iterations, 0),
                ("iterative", proto.w, t_proto, proto.residual, proto.lr, proto.steps, len(proto.failures)),
            ):
                try:
                    dc, mag = _metrics(w0, w, name)
                except ValueError:  # a diverged run outside the potential's domain
                    dc, mag = np.nan, np.nan
                values = (name, d, X.shape[0], method, sec, res, dc, mag, lr, steps, fails,
                          float(np.linalg.norm(w - exact.w)) / scale)
                for key, value in zip(rows, values):
                    rows[key].append(value)
    return {k: np.array(v) for k, v in rows.items()}


def compare_protocols(
    widths: Sequence[int],
    exponent: float = 0.75,
    q: float = 2.0,
    potentials: Sequence[str] = TRAINED_POTENTIALS,
    seed: int = 0,
    s: float = 1.0,
    root=None,
) -> pd.DataFrame:
    """Exact limit against the published iterative protocol on a few widths (cached).

    The held-out draw for the learning-rate search is the same construction with seed + 10_000.
    Columns: potential, width, n, method ("exact" or "iterative"), seconds, residual, delta_cdf,
    magnitude, lr, steps, failures, distance (||w - w_exact|| / ||w_exact - w0||).
    """
    widths = [int(d) for d in widths]
    potentials = [get_potential(p).name for p in potentials]

    params = dict(widths=widths, exponent=float(exponent), q=float(q), potentials=potentials, seed=int(seed), s=float(s))
    return pd.DataFrame(protocol_comparison(**params, root=root))


def _robustness_start(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "lognormal":  # mean 0.1, variance 0.01, random sign
        sigma2 = math.log(1 + 0.01 / 0.1**2)
        mu = math.log(0.1) - sigma2 / 2
        return rng.lognormal(mu, math.sqrt(sigma2), size) * rng.choice(np.array([-1.0, 1.0]), size)
    if kind == "normal":
        return rng.normal(0.0, 0.1, size)
    raise ValueError(f"unknown start {kind!r}; accepted: 'lognormal', 'normal'")


@experiment("linreg_robustness")
def robustness_runs(true: list, starts: list, candidates: list, seeds: list, synapses: int, nominal_width: int,
                    scale: float) -> dict[str, np.ndarray]:
    """:func:`robustness_sweep`, stored: Delta-CDF and dropped share (true x start x candidate x seed)."""
    true_potentials = true  # named "true" in the stored parameters
    out = np.full((len(true_potentials), len(starts), len(candidates), len(seeds)), np.nan)
    dropped = np.zeros_like(out)
    for ti, true in enumerate(true_potentials):
        phi = get_potential(true)
        size = abs(float(phi.grad(np.array([1 / math.sqrt(nominal_width)]))[0])) * scale
        for si, start in enumerate(starts):
            for ki, seed in enumerate(seeds):
                rng = np.random.default_rng([seed, ti, si])
                w0 = _robustness_start(start, synapses, rng)
                sign = np.sign(w0) if phi.keeps_sign else None
                w1 = phi.inv_grad(phi.grad(w0) + size * rng.standard_normal(synapses), sign=sign)
                for ci, cand in enumerate(candidates):
                    # a sign-keeping candidate cannot analyse weights that changed sign: drop them
                    keep = domain_mask(w0, w1, [cand])
                    dropped[ti, si, ci, ki] = 1.0 - keep.mean()
                    out[ti, si, ci, ki] = delta_cdf(dual_change(w0[keep], w1[keep], cand), centered=False)
    return {"delta_cdf": out, "dropped": dropped}


def robustness_sweep(
    true_potentials: Sequence[str] = TRAINED_POTENTIALS,
    starts: Sequence[str] = ("lognormal", "normal"),
    candidates: Sequence[str] = ROBUSTNESS_CANDIDATES,
    seeds: Sequence[int] = tuple(range(30)),
    synapses: int = 1000,
    nominal_width: int = 100,
    scale: float = 0.1,
    root=None,
) -> pd.DataFrame:
    """Delta-CDF under each candidate potential when the true dual change is Gaussian (paper-map 1.4).

    The true change in the dual space of ``true`` is scale * |grad phi(1/sqrt(nominal_width))| * xi,
    xi standard normal. Weights that change sign are outside the domain of a sign-keeping candidate
    (negative_entropy) and are dropped for it; ``dropped`` records their fraction. Returns a long
    table: true, start, candidate, seed, delta_cdf, dropped.
    """

    true_potentials = [get_potential(p).name for p in true_potentials]
    candidates = [get_potential(p).name for p in candidates]

    params = dict(true=true_potentials, starts=list(starts), candidates=candidates, seeds=[int(s) for s in seeds],
                  synapses=int(synapses), nominal_width=int(nominal_width), scale=float(scale))
    stored = robustness_runs(**params, root=root)
    arr, dropped = stored["delta_cdf"], stored["dropped"]
    rows = [
        {"true": t, "start": st, "candidate": c, "seed": int(seed), "delta_cdf": float(arr[ti, si, ci, ki]),
         "dropped": float(dropped[ti, si, ci, ki])}
        for ti, t in enumerate(true_potentials) for si, st in enumerate(starts)
        for ci, c in enumerate(candidates) for ki, seed in enumerate(seeds)
    ]
    return pd.DataFrame(rows)


def _cavity(X, y, w0, name, change, leverage, samples: int):
    """Leave-one-coordinate-out solves for ``samples`` coordinates (half evenly spaced, half the
    highest-leverage ones): the cavity error |Delta_j - G_j| / s, the largest dual change and the
    root-mean-square weight of each deleted problem."""
    d = X.shape[1]
    half = samples // 2
    spaced = np.linspace(0, d - 1, samples - half).round().astype(int)
    top = np.argsort(leverage)[::-1]
    top = [j for j in top if j not in set(spaced)][:half]
    s = float(np.sqrt(np.mean(change**2)))
    errors, b_max, w_rms, groups = [], 0.0, 0.0, []
    phi = get_potential(name)
    for group, coords in (("spaced", spaced), ("top", top)):
        for j in coords:
            keep = np.arange(d) != j
            res = bregman_projection(X[:, keep], y, w0[keep], name)
            g = float(X[:, j] @ res.alpha)
            errors.append(abs(change[j] - g) / s)
            groups.append(group)
            deleted_change = phi.grad(res.w) - phi.grad(w0[keep])
            b_max = max(b_max, float(np.abs(deleted_change).max()))
            w_rms = max(w_rms, float(np.sqrt(np.mean(res.w**2))))
    errors, groups = np.array(errors), np.array(groups)
    return {
        "cavity_error": float(errors[groups == "spaced"].mean()),
        "cavity_error_top": float(errors[groups == "top"].mean()) if half else math.nan,
        "cavity_max_change": b_max,
        "cavity_rms_weight": w_rms,
    }


FAILURE_KEYS = (
    "delta_cdf", "delta_cdf_centered", "mean_ratio", "magnitude", "max_leverage", "leverage_q99",
    "top_leverage", "max_alpha_share", "n", "rho", "max_change", "rms_weight", "start_ratio",
    "cavity_error", "cavity_error_top", "cavity_max_change", "cavity_rms_weight", "lipschitz_change",
)


def lipschitz_change(potential: str | Potential, w0: np.ndarray, bound: float) -> float:
    """L * B of assumption (A6): the Lipschitz constant of log (phi*)'' on the visited dual range, times B.

    The range is the union of [theta0_j - B, theta0_j + B]. 2-norm: L = 0. Negative entropy:
    log psi'(theta) = theta - 1, L = 1. p-norms: L = |p - 2| / ((p - 1) theta_min) with theta_min the
    smallest |theta| on the range; inf when the range reaches zero. Other potentials: ValueError.
    """
    phi = get_potential(potential)
    if phi.name == "2-norm":
        return 0.0
    if phi.name == "negative_entropy":
        return float(bound)
    p = getattr(phi, "p", None)
    if p is None:
        raise ValueError(f"no Lipschitz constant known for {phi.name}")
    theta_min = float(np.abs(phi.grad(np.asarray(w0, dtype=np.float64))).min()) - float(bound)
    if theta_min <= 0:
        return math.inf
    return abs(p - 2.0) / ((p - 1.0) * theta_min) * float(bound)


@experiment("linreg_failure")
def failure_runs(widths: list, potentials: list, seeds: list, ratio: float | None, exponent: float | None, inputs: str,
                 start: str, label_scale: float, cavity_samples: int, q: float, s: float) -> dict[str, np.ndarray]:
    """:func:`failure_sweep`, stored: each quantity of :data:`FAILURE_KEYS` (potential x width x seed)."""
    out = {k: np.full((len(potentials), len(widths), len(seeds)), np.nan) for k in FAILURE_KEYS}
    for k_seed, seed in enumerate(seeds):
        for di, d in enumerate(widths):
            n = int(ratio * d) if ratio is not None else n_points(d, exponent)
            # one draw per width (a ratio grows N faster than nested slicing allows)
            X, y, z = _draw(n, d, s, q, seed, inputs)
            y = label_scale * y
            w0 = _start(start, z)
            for p, name in enumerate(potentials):
                phi = get_potential(name)
                cell = (p, di, k_seed)
                if start == "zero" and name != "2-norm":
                    continue  # zero is outside negative entropy's domain and a singular point of p-norms: nan row
                try:
                    res = bregman_projection(X, y, w0, name)
                except ProjectionError:  # recorded as nan: the table counts failures
                    continue
                change = phi.grad(res.w) - phi.grad(w0)
                out["delta_cdf"][cell], out["magnitude"][cell] = _metrics(w0, res.w, name) if start != "zero" \
                    else (delta_cdf(change), math.nan)
                out["delta_cdf_centered"][cell] = delta_cdf(change, centered=True)
                out["mean_ratio"][cell] = float(change.mean() / change.std())
                leverage = coordinate_leverage(X, res.w, name)
                out["max_leverage"][cell] = float(leverage.max())
                out["leverage_q99"][cell] = float(np.quantile(leverage, 0.99))
                out["max_alpha_share"][cell] = float(np.abs(res.alpha).max() / np.linalg.norm(res.alpha))
                out["n"][cell] = n
                d0 = 1.0 / phi.hess_diag(w0) if start != "zero" else np.ones(d)
                scale = float(np.sqrt(np.mean(change**2)))
                rms = float(np.sqrt(np.mean(res.w**2)))
                out["rho"][cell] = n * rms / (scale * d0.sum())
                out["max_change"][cell] = float(np.abs(change).max())
                out["rms_weight"][cell] = rms
                out["start_ratio"][cell] = n * d0.max() / d0.sum()
                out["lipschitz_change"][cell] = lipschitz_change(name, w0, out["max_change"][cell])
                if cavity_samples:
                    half = cavity_samples // 2
                    top = np.sort(leverage)[::-1][:half]
                    out["top_leverage"][cell] = float(top.mean()) if half else math.nan
                    try:
                        for key, value in _cavity(X, y, w0, name, change, leverage, cavity_samples).items():
                            out[key][cell] = value
                    except ProjectionError:
                        pass
    return out


def failure_sweep(
    widths: Sequence[int],
    potentials: Sequence[str] = TRAINED_POTENTIALS,
    seeds: Sequence[int] = tuple(range(5)),
    *,
    ratio: float | None = None,
    exponent: float | None = None,
    inputs: str = "correlated",
    start: str = "normal",
    label_scale: float = 1.0,
    cavity_samples: int = 0,
    q: float = 2.0,
    s: float = 1.0,
    root=None,
) -> pd.DataFrame:
    """Delta-CDF and the quantities of the theorem's assumptions against width, for one condition.

    Exactly one of ``ratio`` (N = ratio * D, proportional growth) or ``exponent`` (N = D^a) sets
    N. ``inputs`` is "correlated" (the paper's), "independent" (the same marginals, no
    correlation) or "student_t:<df>" (heavy tails); ``start`` is "normal" (N(0, 1/D)), "zero" or
    "cauchy"; the labels are +-``label_scale``. Only the 2-norm is run from a zero start (zero is
    outside negative entropy's domain and the 3-norm's Hessian vanishes there); the others get nan rows. ``cavity_samples`` > 0 also solves that many leave-one-coordinate-out
    problems per run.

    Returns a long table: potential, width, seed and, per run, delta_cdf (published statistic),
    delta_cdf_centered, mean_ratio (mean / standard deviation of the dual change), magnitude,
    max_leverage, leverage_q99 (99th percentile of the leverages, whose mean is exactly N/D),
    top_leverage (mean leverage of the sampled highest-leverage coordinates), max_alpha_share
    (largest |alpha_n| / ||alpha||), n, rho (the quantity of (A5), from the full problem),
    max_change (largest |dual change|, B of (A6) for the full problem), rms_weight, start_ratio
    (N max d0 / sum d0 of (A3)), lipschitz_change (L * B of (A6), inf where the dual range reaches
    the singularity of a p-norm), and with cavity samples cavity_error (mean |Delta_j - G_j| / s over
    evenly spaced j), cavity_error_top (the same over the highest-leverage j), cavity_max_change
    and cavity_rms_weight (largest over the deleted problems). nan where the exact solve failed
    (e.g. a negative-entropy weight that would have to underflow to zero).
    """
    if (ratio is None) == (exponent is None):
        raise ValueError("give exactly one of ratio (N = ratio * D) or exponent (N = D^a)")
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; accepted: {', '.join(map(repr, STARTS))}")
    if not (label_scale > 0 and math.isfinite(label_scale)):
        raise ValueError(f"label_scale must be a finite number > 0, got {label_scale}")
    widths = [int(d) for d in widths]
    potentials = [get_potential(p).name for p in potentials]

    params = dict(widths=widths, potentials=potentials, seeds=[int(x) for x in seeds], ratio=ratio, exponent=exponent,
                  inputs=inputs, start=start, label_scale=float(label_scale), cavity_samples=int(cavity_samples),
                  q=float(q), s=float(s))
    arr = failure_runs(**params, root=root)
    rows = [
        {"potential": name, "width": d, "seed": int(seed), **{k: float(v[p, di, k_seed]) for k, v in arr.items()}}
        for p, name in enumerate(potentials) for di, d in enumerate(widths) for k_seed, seed in enumerate(seeds)
    ]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the null and its readings


def floor_reference(widths: Sequence[int], n_samples: int, seed: int = 0, centered: bool = False) -> pd.DataFrame:
    """The Gaussian floor at each width: Delta-CDF of ``n_samples`` exact Gaussian samples of size D.

    Returns one row per width with columns width, median, q05, q95 (over the samples). Use as many
    samples as the experiment has seeds, so that the floor's band and the experiment's band are
    estimated from the same number of draws.
    """
    rows = []
    for i, d in enumerate(int(w) for w in widths):
        values = gaussian_floor(d, n_samples, seed=seed + i, centered=centered)
        rows.append({"width": d, "median": float(np.median(values)), "q05": float(np.quantile(values, 0.05)),
                     "q95": float(np.quantile(values, 0.95))})
    return pd.DataFrame(rows)


def floor_ratio(
    frame: pd.DataFrame, floor: pd.DataFrame, by: Sequence[str], column: str = "delta_cdf"
) -> pd.DataFrame:
    """Median and 5-95% band over seeds of ``column`` divided by the floor's median at the same width.

    ``frame`` has one row per run with a ``width`` column; ``floor`` comes from
    :func:`floor_reference`. Returns one row per group of ``by`` (which must include ``width``)
    with columns median, q05, q95, runs (runs with a finite value), and the floor's own band as a
    ratio (floor_q05, floor_q95): a line inside that band is indistinguishable from Gaussian.
    """
    if "width" not in by:
        raise ValueError(f"by must include 'width', got {list(by)}")
    reference = floor.set_index("width")
    missing = sorted(set(frame.width) - set(reference.index))
    if missing:
        raise ValueError(f"floor has no value at widths {missing}")
    ratio = frame[column] / reference.loc[frame.width, "median"].to_numpy()
    grouped = frame.assign(_ratio=ratio).groupby(list(by))["_ratio"]
    out = pd.DataFrame({"median": grouped.median(), "q05": grouped.quantile(0.05), "q95": grouped.quantile(0.95),
                        "runs": grouped.count()}).reset_index()
    band = reference.loc[out.width]
    out["floor_q05"] = (band.q05 / band["median"]).to_numpy()
    out["floor_q95"] = (band.q95 / band["median"]).to_numpy()
    return out


def mean_variance_factor(width: int, q: float, s: float = 1.0, uniform_variance: float = UNIFORM_VARIANCE) -> float:
    """D times the variance of the mean of a frozen field X^T a (normalised), predicted from the inputs.

    For the paper's inputs the field's coordinates have the correlation of the Gaussian part,
    diluted by the independent uniform part; the variance of their mean is
    (1 / D^2) sum_jk corr_jk, so this returns (1/D) sum_jk C_jk / (1 + uniform_variance) plus the
    uniform part. It is 1 for independent coordinates and below 1 for the alternating correlations
    of the paper (the sum of (-1)^k / (1 + k^q) is less than 1).
    """
    c = correlation(width, s, q)
    k = np.arange(width)
    pair_sum = width + 2.0 * float(np.sum((width - k[1:]) * c[1:]))  # sum over j, l of C_jl
    return (pair_sum / width + uniform_variance) / (1.0 + uniform_variance)


@experiment("linreg_frozen_field")
def frozen_field_runs(widths: list, exponent: float, inputs: list, seeds: list, q: float,
                      s: float) -> dict[str, np.ndarray]:
    """:func:`frozen_field_sweep`, stored: the statistics of the frozen field (inputs x width x seed)."""
    shape = (len(inputs), len(widths), len(seeds))
    out = {k: np.full(shape, np.nan) for k in ("delta_cdf", "delta_cdf_centered", "mean_ratio")}
    for ii, kind in enumerate(inputs):
        for di, d in enumerate(widths):
            for k, seed in enumerate(seeds):
                X, y, _ = _draw(n_points(d, exponent), d, s, q, seed, kind)
                field = X.T @ y
                out["delta_cdf"][ii, di, k] = delta_cdf(field)
                out["delta_cdf_centered"][ii, di, k] = delta_cdf(field, centered=True)
                out["mean_ratio"][ii, di, k] = float(field.mean() / field.std())
    return out


def frozen_field_sweep(
    widths: Sequence[int], exponent: float, inputs: Sequence[str] = ("correlated", "independent"),
    seeds: Sequence[int] = tuple(range(10)), q: float = 2.0, s: float = 1.0, root=None,
) -> pd.DataFrame:
    """Delta-CDF of the frozen field X^T y (labels independent of X) for each kind of inputs.

    This is the dual change without its dependence on X through alpha: for the 2-norm started
    at zero, alpha is y / (trace of the input covariance) up to a vanishing error. Returns a long
    table: inputs, width, seed, delta_cdf (published), delta_cdf_centered, mean_ratio.
    """
    widths = [int(d) for d in widths]
    inputs = list(inputs)

    params = dict(widths=widths, exponent=float(exponent), inputs=inputs, seeds=[int(x) for x in seeds],
                  q=float(q), s=float(s))
    arr = frozen_field_runs(**params, root=root)
    rows = [{"inputs": kind, "width": d, "seed": int(seed), **{k: float(v[ii, di, si]) for k, v in arr.items()}}
            for ii, kind in enumerate(inputs) for di, d in enumerate(widths) for si, seed in enumerate(seeds)]
    return pd.DataFrame(rows)


def candidate_p(name: str) -> float:
    """The exponent p of a p-norm candidate name ("2.5-norm" -> 2.5); nan for other potentials."""
    return float(name.split("-")[0]) if name.endswith("-norm") else math.nan


def robustness_minimum(frame: pd.DataFrame) -> pd.DataFrame:
    """Where the Delta-CDF is lowest, seed by seed, in a :func:`robustness_sweep` table.

    For each (true, start, seed): ``p_min``, the p of the lowest p-norm candidate, whether it lies
    at an end of the p grid (``at_edge``), and ``entropy_lowest``, whether negative entropy beats
    every p-norm. Returns the per-seed table; summarise it with quantiles over seeds.
    """
    pnorm = frame[frame.candidate.str.endswith("-norm")].copy()
    if pnorm.empty:
        raise ValueError("the table has no p-norm candidates")
    pnorm["p"] = pnorm.candidate.map(candidate_p)
    lo, hi = pnorm.p.min(), pnorm.p.max()
    best = pnorm.loc[pnorm.groupby(["true", "start", "seed"]).delta_cdf.idxmin()]
    entropy = frame[frame.candidate == "negative_entropy"].set_index(["true", "start", "seed"]).delta_cdf
    out = best[["true", "start", "seed", "p", "delta_cdf"]].rename(columns={"p": "p_min", "delta_cdf": "pnorm_min"})
    out["at_edge"] = out.p_min.isin([lo, hi])
    keys = pd.MultiIndex.from_frame(out[["true", "start", "seed"]])
    out["entropy_delta_cdf"] = entropy.reindex(keys).to_numpy() if not entropy.empty else math.nan
    out["entropy_lowest"] = out.entropy_delta_cdf < out.pnorm_min
    return out.reset_index(drop=True)
