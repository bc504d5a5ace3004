"""How often the identify tool's verdict is decisive, and decisive but wrong, on simulated experiments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from synaptic_geometry.experiments.biology import simulate_measurements, simulation_cells
from synaptic_geometry.identify.statistics import identify_measurements
from synaptic_geometry.infra.store import experiment
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, TRAINED_POTENTIALS, get_potential

__all__ = ["calibrate", "stored_calibration"]


def calibrate(
    n_values: Sequence[int],
    true_potentials: Sequence[str] = TRAINED_POTENTIALS,
    candidates: Sequence[str] = CANDIDATE_POTENTIALS,
    reps: int = 20,
    n_boot: int = 200,
    seed: int = 0,
    invalid: str = "drop_candidates",
    **condition,
) -> dict[str, np.ndarray]:
    """Run the tool on ``reps`` simulated experiments per true potential and synapse count.

    Experiments come from :func:`synaptic_geometry.experiments.biology.simulate_measurements`
    (keyword arguments ``condition``) and are scored by :func:`identify_measurements` with the
    given ``invalid`` policy (used only when some synapse is zero or changes sign).

    Returns
    -------
    dict of numpy.ndarray
        ``best_correct``, ``decisive`` and ``decisive_wrong`` (shares of experiments; truth x n),
        ``best_fraction`` (mean; truth x n), ``true_potentials`` and ``n_values``.
    """
    truths = [get_potential(t).name for t in true_potentials]
    shape = (len(truths), len(n_values))
    out = {key: np.zeros(shape) for key in ("best_correct", "decisive", "decisive_wrong", "best_fraction")}
    for (i, truth), (j, n), rng in simulation_cells(truths, n_values, seed):
        for _ in range(reps):
            before, after = simulate_measurements(n, truth, rng, **condition)
            result = identify_measurements(
                before, after, candidates, n_boot=n_boot, seed=int(rng.integers(2**32)), invalid=invalid
            )
            right = result.best == truth
            out["best_correct"][i, j] += right / reps
            out["decisive"][i, j] += result.decisive / reps
            out["decisive_wrong"][i, j] += (result.decisive and not right) / reps
            out["best_fraction"][i, j] += result.best_fraction / reps
    out["true_potentials"] = np.array(truths, dtype=str)
    out["n_values"] = np.asarray(n_values, dtype=np.int64)
    return out


@experiment("identify_calibration")
def stored_calibration(
    n_values: Sequence[int], reps: int = 20, n_boot: int = 200, seed: int = 0,
    invalid: str = "drop_candidates", condition: Mapping | None = None,
) -> dict[str, np.ndarray]:
    """:func:`calibrate` with the default candidates and truths, through the results store
    (``condition``: keyword arguments of the simulation)."""
    return calibrate([int(n) for n in n_values], reps=reps, n_boot=n_boot, seed=seed, invalid=invalid,
                     **dict(condition or {}))
