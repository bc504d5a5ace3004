"""Tables of the identify tool's results for people (the book's chapters show these)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import beta

from synaptic_geometry.identify.statistics import IdentifyResult
from synaptic_geometry.potentials import display_name

__all__ = ["calibration_table", "compare_results", "result_table", "share_upper_bound"]


def share_upper_bound(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of a share from ``successes`` in ``trials`` (Clopper-Pearson).

    With no success in 20 trials the 95% bound is ``1 - 0.05 ** (1 / 20)``, about 0.14: a share
    observed as zero is then "below 14%", not "0%".
    """
    if isinstance(trials, bool) or int(trials) != trials or trials < 1:
        raise ValueError(f"trials must be a whole number >= 1, got {trials!r}")
    if int(successes) != successes or not 0 <= successes <= trials:
        raise ValueError(f"successes must be a whole number from 0 to {trials}, got {successes!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if successes == trials:
        return 1.0
    return float(beta.ppf(confidence, successes + 1, trials - successes))


def result_table(result: IdentifyResult) -> pd.DataFrame:
    """One row per candidate, best first: ``candidate`` (display name), ``delta_cdf``,
    ``interval`` (the bootstrap interval as text), ``best_fraction``, for counts ``draw_sd``, and with
    the scale correction ``corrected_delta_cdf``."""
    table = result.table
    out = pd.DataFrame({
        "candidate": [display_name(c) for c in table["candidate"]],
        "delta_cdf": table["delta_cdf"].to_numpy(),
        "interval": [f"{low:.3g}–{high:.3g}" for low, high in zip(table["ci_low"], table["ci_high"])],
        "best_fraction": table["best_fraction"].to_numpy(),
    })
    if "draw_sd" in table:
        out.insert(2, "draw_sd", table["draw_sd"].to_numpy())
    if "corrected_delta_cdf" in table:
        out["corrected_delta_cdf"] = table["corrected_delta_cdf"].to_numpy()
    return out


def calibration_table(calibration: Mapping[str, np.ndarray], reps: int, confidence: float = 0.95) -> pd.DataFrame:
    """One row per true potential and synapse count of a calibration
    (:func:`~synaptic_geometry.identify.calibrate`): the shares ``best_correct``, ``decisive``,
    ``decisive_wrong`` and its upper bound ``wrong_bound`` (:func:`share_upper_bound` over
    ``reps`` experiments), and the mean ``best_fraction``."""
    rows = []
    for t, truth in enumerate(calibration["true_potentials"]):
        for j, n in enumerate(calibration["n_values"]):
            wrong = float(calibration["decisive_wrong"][t, j])
            rows.append({
                "truth": display_name(str(truth)), "n": int(n),
                "best_correct": float(calibration["best_correct"][t, j]),
                "decisive": float(calibration["decisive"][t, j]), "decisive_wrong": wrong,
                "wrong_bound": share_upper_bound(int(round(wrong * reps)), reps, confidence),
                "best_fraction": float(calibration["best_fraction"][t, j]),
            })
    return pd.DataFrame(rows)


def compare_results(results: Mapping[str, IdentifyResult]) -> pd.DataFrame:
    """Delta-CDF of each candidate under several analyses of the same data, side by side.

    ``results`` maps a column name to a result; rows follow the candidates of the first result
    (best first), with ``candidate`` as display names. Each analysis's lowest score is its verdict:
    ``best`` names, per column, whether the row is that analysis's best candidate.
    """
    if not results:
        raise ValueError("give at least one result to compare")
    first = next(iter(results.values()))
    names = list(first.table["candidate"])
    out = pd.DataFrame({"candidate": [display_name(c) for c in names]})
    for column, result in results.items():
        scores = result.table.set_index("candidate")["delta_cdf"]
        missing = [c for c in names if c not in scores.index]
        if missing:
            raise ValueError(f"result {column!r} has no candidate(s) {missing}")
        out[column] = scores.loc[names].to_numpy()
        out[f"{column} best"] = [c == result.best for c in names]
    return out
