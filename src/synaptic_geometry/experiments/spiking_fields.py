"""The paper's Fig 3D-E claim as numbers: do the natural updates point at the teacher?

The paper (Kreutzer, Senn and Petrovici, eLife 2022, Fig 3D-E and its text) says of the
two-synapse task (inputs at 10 and 50 Hz): "the negative natural-gradient vectors point directly
towards the target weight configuration w*", while the Euclidean ones stand perpendicular to the
cost's contours; so the Euclidean rule "starts out by mostly adapting the high-rate afferent
weight", whereas the natural rule "adapts both synaptic weights homogeneously".

This module measures both parts from the chapter's results of
:func:`~synaptic_geometry.experiments.spiking_protocol.two_synapse_fields` and
:func:`~synaptic_geometry.experiments.spiking_protocol.two_synapse_run`:

* :func:`field_angle`: the mean, over the paper's grid of weights, of the angle between a rule's
  expected update and the direction to the teacher, with a bootstrap interval over the input
  states the expectation averages;
* :func:`path_deviation` and :func:`half_way_progress`: how far the mean weight path strays from
  the straight line to the teacher, and how much of each weight's initial error it has removed
  when it has covered half of the distance (1 and 1 for a homogeneous path).

It only analyses stored results (no :func:`~synaptic_geometry.infra.store.experiment` here).
"""

from __future__ import annotations

import numpy as np

from synaptic_geometry.experiments import spiking_protocol as P
from synaptic_geometry.experiments.spiking import gaussian_metric

TWO_SYNAPSE_RATES = (10.0, 50.0)


def field_states(n_samples: int, seed: int) -> np.ndarray:
    """The (n_samples, 2) input states over which ``two_synapse_fields(n_samples, seed=seed)``
    averages its updates (the same draw: traces at the end of 1-s trains)."""
    rng = np.random.default_rng([int(seed), 8])
    return P.test_states(np.array(TWO_SYNAPSE_RATES), 1, int(n_samples), rng, duration=1.0)[0]


def angle_to_target(directions, grid, teacher) -> np.ndarray:
    """Angle (degrees) between update directions (m, 2) at weights ``grid`` (m, 2) and the
    direction from each weight to the teacher (2,)."""
    grid = np.asarray(grid, dtype=float)
    return P.angle(np.asarray(directions, dtype=float), np.asarray(teacher, dtype=float) - grid)


def field_angle(rule: str, fields, n_samples: int, seed: int, n_boot: int = 1000, boot_seed: int = 0,
                level: float = 0.95) -> tuple[float, float, float]:
    """Mean angle (degrees) over the grid of ``fields`` between ``rule``'s expected update and
    the direction to the teacher, with a percentile bootstrap interval over the input states.

    ``fields``: the result of ``two_synapse_fields(n_samples, seed=seed)``; its arrows are
    recomputed from :func:`field_states` and must agree with the stored ones (``ValueError``
    otherwise, so the interval is about the figure's arrows). A resample reweights the states'
    Euclidean contributions (each state's :func:`expected_update`); the natural update is the
    inverse metric (which does not depend on the states) times their mean. Returns (point, lo, hi).
    """
    if rule not in ("euclidean", "natural"):
        raise ValueError(f"rule must be 'euclidean' or 'natural', got {rule!r}")
    grid, teacher = np.asarray(fields["grid"], dtype=float), np.asarray(fields["teacher"], dtype=float)
    X = field_states(n_samples, seed)
    rates = np.array(TWO_SYNAPSE_RATES)
    parts = np.stack([P.expected_update("euclidean", grid, teacher, x[None]) for x in X])  # (M, grid, 2)
    inverse = gaussian_metric(grid, rates).inverse() if rule == "natural" else None

    def mean_angle(counts):  # counts (k, M): how often each state is drawn
        grad = np.einsum("km,mgi->kgi", counts, parts) / len(X)
        d = grad if inverse is None else np.einsum("gij,kgj->kgi", inverse, grad)
        return angle_to_target(d, grid, teacher).mean(-1), d

    point, direction = mean_angle(np.ones((1, len(X))))
    direction = direction[0] / np.linalg.norm(direction[0], axis=-1, keepdims=True)
    if not np.allclose(direction, fields[f"field_{rule}"], atol=1e-6):
        raise ValueError(f"the {rule} field does not match two_synapse_fields(n_samples={n_samples}, seed={seed})")
    rng = np.random.default_rng(boot_seed)
    counts = rng.multinomial(len(X), np.full(len(X), 1.0 / len(X)), size=int(n_boot))
    boots = mean_angle(counts)[0]
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(point[0]), float(lo), float(hi)


def path_deviation(path, target) -> float:
    """Largest distance of a weight path (evals, 2) from the straight segment between its start
    and ``target``, in units of the initial distance (0 for a straight path)."""
    path = np.asarray(path, dtype=float)
    start, target = path[0], np.asarray(target, dtype=float)
    span = target - start
    length = float(np.linalg.norm(span))
    if length == 0:
        raise ValueError("the path starts at the target")
    along = np.clip((path - start) @ span / length**2, 0.0, 1.0)
    nearest = start + along[:, None] * span
    return float(np.max(np.linalg.norm(path - nearest, axis=-1)) / length)


def half_way_progress(path, target) -> tuple[float, float]:
    """Share of each weight's initial error removed at the first point where the path (evals, 2)
    is at most half of its initial distance from ``target``: (1/2, 1/2) along the straight line,
    NaN if it never gets there. Component order as in the path (10 Hz, 50 Hz)."""
    path = np.asarray(path, dtype=float)
    target = np.asarray(target, dtype=float)
    distance = np.linalg.norm(path - target, axis=-1)
    reached = np.flatnonzero(distance <= 0.5 * distance[0])
    if not reached.size:
        return float("nan"), float("nan")
    removed = 1.0 - (path[reached[0]] - target) / (path[0] - target)
    return float(removed[0]), float(removed[1])
