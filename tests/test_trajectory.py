"""Recorded mirror-descent paths on small losses."""

import numpy as np
import pytest

from synaptic_geometry.experiments.trajectory import descend, least_squares


def test_gradient_descent_path_matches_the_closed_form():
    X = np.array([[1.0, 2.0], [0.5, -1.0], [0.2, 0.3]])
    y = np.array([1.0, 0.0, 2.0])
    w0 = np.array([0.3, -0.2])
    path, losses = descend(least_squares(X, y), w0, "2-norm", lr=0.1, n_steps=5)
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
    path, _ = descend(least_squares(X, rng.standard_normal(3)), w0, "negative_entropy", lr=0.2,
                      n_steps=50, momentum=0.9, record_every=20)
    assert len(path) == 4  # start, steps 20 and 40, and the last step
    assert np.all(np.sign(path) == np.sign(w0))


def test_bad_step_counts_are_refused():
    with pytest.raises(ValueError, match="n_steps"):
        descend(least_squares(np.eye(2), np.ones(2)), np.ones(2), "2-norm", lr=0.1, n_steps=0)


def test_cosine_schedule_anneals_the_steps_to_zero():
    # on a linear loss every gradient is the same, so each step's size is the learning rate itself
    loss = lambda w: w.sum()
    path, _ = descend(loss, np.zeros(1), "2-norm", lr=1.0, n_steps=4, schedule="cosine")
    steps = -np.diff(path[:, 0])
    np.testing.assert_allclose(steps, 0.5 * (1 + np.cos(np.pi * np.arange(4) / 4)))
    with pytest.raises(ValueError, match="unknown schedule"):
        descend(loss, np.zeros(1), "2-norm", lr=1.0, n_steps=4, schedule="step")
