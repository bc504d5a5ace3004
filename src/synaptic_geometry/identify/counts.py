"""The identify test on synapse counts: dequantisation, connections that appeared or vanished, the
centred statistic, a same-age control and a calibration by simulated counts.

The count statistics themselves live in :mod:`synaptic_geometry.experiments.count_geometry`
(the connectome chapter uses the same functions); this module turns them into the tool's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from synaptic_geometry.experiments import count_geometry
from synaptic_geometry.experiments.count_geometry import MatchedCounts
from synaptic_geometry.gaussianity import dual_change, gaussian_floor
from synaptic_geometry.identify.errors import MeasurementError, show
from synaptic_geometry.identify.statistics import MIN_SYNAPSES, N_FLOOR, IdentifyResult, verdict, wrap_lines
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, get_potential

__all__ = ["DEQUANTISATIONS", "CountResult", "calibrate_counts", "identify_counts"]

DEQUANTISATIONS = count_geometry.DEQUANTISATIONS


@dataclass
class CountResult(IdentifyResult):
    """:class:`IdentifyResult` of counts; ``table`` adds ``draw_sd`` (spread over dequantisations)."""

    unit: str = "connections"
    dequantisation: str = "uniform"
    n_draws: int = 1
    appeared: list[str] = field(default_factory=list)   # connections absent before
    vanished: list[str] = field(default_factory=list)   # connections absent after
    growth: float = float("nan")                        # synapses after over before, connections in both
    control: CountResult | None = field(default=None, repr=False)
    individual_var: float | None = None                  # from the control pair
    calibration: pd.DataFrame | None = None              # growth_tests rows, with n_reps
    growth_verdict: str | None = None

    def summary(self) -> str:
        lines = [super().summary(),
                 f"counts: {self.n_synapses} connections in both files (growth x{self.growth:.2f} in synapses); "
                 f"{len(self.appeared)} appeared, {len(self.vanished)} vanished (zeros: outside negative entropy's "
                 "domain, not analysed)",
                 f"dequantisation: {self.dequantisation}" + (f", Delta-CDF averaged over {self.n_draws} draws "
                 f"(largest spread over draws {self.table['draw_sd'].max():.4f})" if self.dequantisation != "none" else "")]
        if self.appeared:
            lines.append(f"appeared: {show(self.appeared, 5)}")
        if self.vanished:
            lines.append(f"vanished: {show(self.vanished, 5)}")
        if self.control is not None:
            c = self.control
            same = "the same candidate" if c.best == self.best else "a different candidate"
            lines.append(f"control pair: best {c.best} ({c.table['delta_cdf'].iloc[0]:.4f}; floor {c.floor[1]:.4f}), "
                         f"{same}; individual variability s2 = {self.individual_var:.4f}")
            if c.best == self.best:
                lines.append("  the control names the same candidate: the verdict may come from counting and "
                             "differences between individuals rather than from the change")
        if self.calibration is not None:
            lines.append(f"calibration ({int(self.calibration['n_reps'].iloc[0])} simulated pairs per growth geometry, "
                         f"s2 = {self.individual_var or 0:.4f}): share naming the truth, contrast Delta-CDF(2-norm) - "
                         "Delta-CDF(negative_entropy) simulated (median) and in the data, its p-value, power")
            shown = self.calibration.rename(columns={"named_truth": "named", "contrast_median": "simulated",
                                                     "observed_contrast": "data", "p_value": "p"})
            lines.append(shown[["truth", "named", "simulated", "data", "p", "power"]].to_string(
                index=False, float_format=lambda x: f"{x:.3f}"))
            lines.append(f"growth verdict: {self.growth_verdict}")
        return wrap_lines(lines)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update({
            "dequantisation": self.dequantisation, "n_draws": self.n_draws, "growth": self.growth,
            "appeared": self.appeared, "vanished": self.vanished, "individual_var": self.individual_var,
            "control": self.control.to_dict() if self.control is not None else None,
            "calibration": self.calibration.to_dict(orient="records") if self.calibration is not None else None,
            "growth_verdict": self.growth_verdict,
        })
        return out


def _labels(matched: MatchedCounts, mask: np.ndarray) -> list[str]:
    return matched.ids[mask].astype(str).agg(" ".join, axis=1).to_list()


def identify_counts(
    matched: MatchedCounts,
    candidates: Sequence[str] = CANDIDATE_POTENTIALS,
    n_boot: int = 1000,
    n_draws: int = 20,
    dequantisation: str = "uniform",
    seed: int = 0,
    confidence: float = 0.95,
    centered: bool = True,
) -> CountResult:
    """The identify test on matched counts (see :func:`synaptic_geometry.identify.read_counts`).

    Parameters
    ----------
    matched
        Counts before and after of the union of connections (zero where one is absent).
    candidates
        Potential names (at least two).
    n_boot
        Bootstrap resamples of the connections present in both, each with a fresh
        dequantisation (:func:`~synaptic_geometry.experiments.count_geometry.bootstrap_profiles`).
    n_draws
        Dequantisation draws; the Delta-CDF of each candidate is their mean (one draw for
        ``"none"``).
    dequantisation
        ``"uniform"`` (a count k becomes a uniform draw from [k - 1/2, k + 1/2)) or ``"none"``.
    seed, confidence
        As in :func:`~synaptic_geometry.identify.identify_measurements`.
    centered
        Centre the change (the default for counts: development and growth shift every count).

    Returns
    -------
    CountResult
        Connections present only before (vanished) or only after (appeared) are listed, not
        analysed: their zeros are outside negative entropy's domain.
    """
    if dequantisation not in DEQUANTISATIONS:
        raise MeasurementError(f"unknown dequantisation {dequantisation!r}; accepted: {', '.join(DEQUANTISATIONS)}")
    if int(n_draws) != n_draws or n_draws < 1:
        raise MeasurementError(f"n_draws must be an integer >= 1, got {n_draws}")
    if int(n_boot) != n_boot or n_boot < 100:
        raise MeasurementError(f"n_boot must be an integer >= 100 for percentile intervals, got {n_boot}")
    if not 0 < confidence < 1:
        raise MeasurementError(f"confidence must be between 0 and 1, got {confidence}")
    try:
        phis = [get_potential(c) for c in candidates]
    except (ValueError, TypeError) as error:
        raise MeasurementError(str(error)) from None
    names = [p.name for p in phis]
    if len(set(names)) != len(names) or len(names) < 2:
        raise MeasurementError(f"need at least two different candidates to compare, got {names}")
    both = matched.both
    n = int(both.sum())
    if n < MIN_SYNAPSES:
        raise MeasurementError(f"{n} connections are present in both files; the test needs at least {MIN_SYNAPSES}")
    before, after = matched.before[both], matched.after[both]
    if np.all(before == after):
        raise MeasurementError("before and after are identical for every connection: there is no change to analyse")
    n_draws = 1 if dequantisation == "none" else int(n_draws)
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(3)]
    draws = count_geometry.profile_draws(before, after, names, n_draws, dequantisation, seeds[0], centered)
    boot = count_geometry.bootstrap_profiles(before, after, names, int(n_boot), dequantisation, seeds[1], centered)
    full = draws.mean(axis=0)
    found = verdict(full, boot, names, confidence)
    order = [names.index(c) for c in found["table"]["candidate"]]
    found["table"].insert(2, "draw_sd", draws.std(axis=0)[order])
    rng = np.random.default_rng(seeds[2])  # one dequantisation for the figure's panel of changes
    shown = count_geometry.dequantise(before, dequantisation, rng), count_geometry.dequantise(after, dequantisation, rng)
    floor = gaussian_floor(n, N_FLOOR, seed, centered)
    return CountResult(
        **found, n_synapses=n, n_boot=int(n_boot), confidence=float(confidence), seed=int(seed),
        changes={p.name: dual_change(*shown, p) for p in phis}, centered=bool(centered),
        floor=(float(np.median(floor)), float(np.quantile(floor, confidence))), n_floor=N_FLOOR,
        dequantisation=dequantisation, n_draws=n_draws,
        appeared=_labels(matched, matched.appeared), vanished=_labels(matched, matched.vanished),
        growth=float(after.sum() / before.sum()),
    )


def calibrate_counts(
    result: CountResult, matched: MatchedCounts, individual_var: float, n_reps: int = 100, seed: int = 0,
) -> CountResult:
    """Add the simulation test to ``result``: simulated pairs shaped like ``matched`` under
    multiplicative and additive growth (:func:`~synaptic_geometry.experiments.count_geometry.calibrate`,
    individual variability ``individual_var``), scored as the data, and the data's contrast
    Delta-CDF(2-norm) - Delta-CDF(negative entropy) tested against each
    (:func:`~synaptic_geometry.experiments.count_geometry.growth_tests`,
    :func:`~synaptic_geometry.experiments.count_geometry.growth_verdict`).
    """
    names = list(result.changes)
    missing = [c for c in count_geometry.CONTRAST if c not in names]
    if missing:
        raise MeasurementError(f"the calibration compares {' and '.join(count_geometry.CONTRAST)}; add {', '.join(missing)} to the candidates")
    if int(n_reps) != n_reps or n_reps < 20:
        raise MeasurementError(f"calibration needs an integer number of simulated pairs >= 20, got {n_reps}")
    truths = list(count_geometry.GROWTH_TRUTHS)
    simulated = count_geometry.calibrate(matched.before, matched.after, truths, individual_var, names, int(n_reps),
                                         result.n_draws, result.dequantisation, seed)
    observed = result.table.set_index("candidate").loc[names, "delta_cdf"].to_numpy()
    tests = count_geometry.growth_tests(observed, simulated["profiles"], truths, names)
    p = dict(zip(tests.truth, tests.p_value))
    result.calibration = tests.assign(n_reps=int(n_reps))
    result.individual_var = float(individual_var)
    result.growth_verdict = count_geometry.growth_verdict(p["negative_entropy"], p["2-norm"], float(tests.power.min()))
    return result
