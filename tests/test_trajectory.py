"""Recorded mirror-descent paths on small losses."""

import numpy as np
import pytest
import torch

from synaptic_geometry import get_potential
from synaptic_geometry.experiments.trajectory import descend, least_squares


def test_gradient_descent_path_matches_the_closed_form():
    X = np.array([[1.0, 2.0], [0.5, -1.0], [0.2, 0.3]])
    y = np.array([1.0, 0.0, 2.0])
    w0 = np.array([0.3, -0.2])
    run = descend(least_squares(X, y), w0, "2-norm", lr=0.1, n_steps=5)
    path, losses = run.path, run.losses
    w = w0.copy()
    for step in range(5):
        w = w - 0.1 * X.T @ (X @ w - y) / len(y)
        np.testing.assert_allclose(path[step + 1], w, rtol=1e-12)
    assert path.shape == (6, 2) and losses.shape == (6,)
    assert losses[-1] < losses[0]


def test_exponentiated_gradient_path_keeps_signs_and_records_sparsely():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 8))
    w0 = rng.uniform(0.1, 1.0, 8) * rng.choice([-1, 1], 8)
    path, losses, _ = descend(least_squares(X, rng.standard_normal(3)), w0, "negative_entropy", lr=0.2,
                              n_steps=50, momentum=0.9, record_every=20)
    assert len(path) == 4  # start, steps 20 and 40, and the last step
    assert len(losses) == 51  # the loss is recorded at every iterate
    assert np.all(np.sign(path) == np.sign(w0))


def test_bad_step_counts_are_refused():
    with pytest.raises(ValueError, match="n_steps"):
        descend(least_squares(np.eye(2), np.ones(2)), np.ones(2), "2-norm", lr=0.1, n_steps=0)


def test_cosine_schedule_anneals_the_steps_to_zero():
    # on a linear loss every gradient is the same, so each step's size is the learning rate itself
    loss = lambda w: w.sum()
    path, _, lr = descend(loss, np.zeros(1), "2-norm", lr=1.0, n_steps=4, schedule="cosine")
    steps = -np.diff(path[:, 0])
    np.testing.assert_allclose(steps, 0.5 * (1 + np.cos(np.pi * np.arange(4) / 4)))
    assert lr == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="unknown schedule"):
        descend(loss, np.zeros(1), "2-norm", lr=1.0, n_steps=4, schedule="step")


def _problem(seed=0, n=5, d=20):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = rng.choice([-1.0, 1.0], n)
    w0 = rng.lognormal(np.log(0.2), 0.5, d) * rng.choice([-1, 1], d)
    return X, y, w0


@pytest.mark.parametrize("name", ["2-norm", "negative_entropy", "3-norm", "hypentropy:0.1"])
def test_cosine_momentum_run_matches_dual_space_arithmetic(name):
    # the linear-regression protocol's run: mean squared error, momentum 0.9, cosine-annealed lr,
    # against SGD's momentum convention and the dual step written out in numpy
    X, y, w0 = _problem()
    phi, lr, n_steps = get_potential(name), 0.5, 40
    X_t, y_t = torch.as_tensor(X), torch.as_tensor(y)
    run = descend(lambda w: torch.mean((X_t @ w - y_t) ** 2), w0, name, lr, n_steps, momentum=0.9,
                  record_every=n_steps, schedule="cosine")
    w, buf = w0.copy(), None
    for t in range(n_steps):
        g = 2 * X.T @ (X @ w - y) / len(y)
        buf = g if buf is None else 0.9 * buf + g
        w = phi.inv_grad(phi.grad(w) - lr * 0.5 * (1 + np.cos(np.pi * t / n_steps)) * buf, sign=np.sign(w))
    np.testing.assert_allclose(run.path[-1], w, rtol=1e-10, atol=1e-14)
    assert run.losses[-1] == pytest.approx(np.mean((X @ w - y) ** 2), rel=1e-9)


def _backtracking_reference(X, y, w0, phi, lr, n_steps):
    """The linear-neuron loop of the biology chapter as it was written before it used descend."""
    n, sign = len(y), np.sign(w0)

    def loss_and_grad(w):
        r = X @ w - y
        return 0.5 * float(r @ r) / n, X.T @ r / n

    w, theta = w0.copy(), phi.grad(w0)
    loss, g = loss_and_grad(w)
    losses = [loss]
    for _ in range(n_steps):
        for _retry in range(30):
            theta_new = theta - lr * g
            w_new = phi.inv_grad(theta_new, sign=sign)
            loss_new, g_new = loss_and_grad(w_new)
            if loss_new <= loss:
                break
            lr /= 2
        theta, w, loss, g = theta_new, w_new, loss_new, g_new
        losses.append(loss)
    return w, np.array(losses), lr


@pytest.mark.parametrize("name", ["2-norm", "negative_entropy", "3-norm"])
def test_backtracking_matches_the_linear_neuron_loop(name):
    X, y, w0 = _problem(seed=1, n=6, d=30)
    phi = get_potential(name)
    # a learning rate far too large, so that several steps are retried at smaller rates
    lr = 50.0 / float(np.linalg.eigvalsh((X / phi.hess_diag(w0)) @ X.T / len(y))[-1])
    w_ref, losses_ref, lr_ref = _backtracking_reference(X, y, w0, phi, lr, 60)
    run = descend(least_squares(X, y), w0, name, lr, 60, record_every=60, schedule="backtracking")
    assert lr_ref < lr / 8  # the case exercises the halving
    assert run.lr == lr_ref
    np.testing.assert_allclose(run.path[-1], w_ref, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(run.losses, losses_ref, rtol=0, atol=1e-12)
    assert np.all(np.diff(run.losses) <= 0)


def test_backtracking_refuses_momentum():
    with pytest.raises(ValueError, match="momentum=0"):
        descend(least_squares(np.eye(2), np.ones(2)), np.ones(2), "2-norm", lr=0.1, n_steps=3, momentum=0.9,
                schedule="backtracking")
