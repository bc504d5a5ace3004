"""The identification itself: Delta-CDF of each candidate's dual change, bootstrap intervals, a verdict."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from synaptic_geometry.gaussianity import delta_cdf, delta_cdf_batch, domain_mask, dual_change, gaussian_floor
from synaptic_geometry.identify.errors import MeasurementError, show
from synaptic_geometry.identify.scale import ScaleCorrection, scale_corrected
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, Potential, get_potential, require_finite

__all__ = ["INVALID_POLICIES", "MIN_SYNAPSES", "N_FLOOR", "IdentifyResult", "identify_measurements", "verdict"]

INVALID_POLICIES = ("error", "drop_rows", "drop_candidates")

#: Fewest synapses the tool accepts (after any dropped rows). Below 20 the empirical CDF moves in
#: steps of 5% or more, an exactly Gaussian sample already has a Delta-CDF comparable to the gaps
#: between candidates, and bootstrap resamples repeat a handful of values, so percentile intervals
#: mean little. Twenty is a floor for the arithmetic, not a recommendation: the power analysis in
#: the book's biology chapter shows how many synapses a decisive answer needs.
MIN_SYNAPSES = 20

#: Width of the printed summary's lines (the table excepted), so that it reads in a narrow terminal.
SUMMARY_WIDTH = 72

#: Exact Gaussian samples of the data's size whose Delta-CDF makes the floor printed beside the scores.
N_FLOOR = 200
# bootstrap resamples are scored in batches of about this many values (memory about 16 MB per array)
_BOOT_VALUES = 2_000_000


@dataclass
class IdentifyResult:
    """What :func:`identify_measurements` found; ``table`` is sorted best first."""

    table: pd.DataFrame            # candidate, delta_cdf, ci_low, ci_high, best_fraction
    best: str
    runner_up: str
    best_fraction: float           # share of bootstrap resamples in which ``best`` is lowest
    margin: float                  # delta_cdf(runner_up) - delta_cdf(best), > 0
    margin_ci: tuple[float, float] # paired bootstrap interval of the margin
    decisive: bool                 # margin interval above 0 and best_fraction >= confidence
    n_synapses: int
    n_boot: int
    confidence: float
    seed: int
    changes: dict[str, np.ndarray] = field(repr=False)   # dual change per candidate (analysed rows)
    dropped_rows: list[str] = field(default_factory=list)
    dropped_candidates: list[str] = field(default_factory=list)
    centered: bool = False
    floor: tuple[float, float] = (float("nan"), float("nan"))  # Gaussian floor: median, quantile at confidence
    n_floor: int = 0
    unit: str = "synapses"
    corrected: ScaleCorrection | None = None  # the scale-structure-aware statistic, when neurons were given

    def summary(self) -> str:
        """A few lines of text for people: the table and the verdict."""
        level = f"{100 * self.confidence:g}%"
        statistic = "centred" if self.centered else "uncentred"
        lines = [
            f"{self.n_synapses} {self.unit}, {self.n_boot} bootstrap resamples, {level} intervals, {statistic} Delta-CDF",
            self.table.rename(columns={"corrected_delta_cdf": "corrected"}).to_string(
                index=False, float_format=lambda x: f"{x:.4f}"),
            f"Gaussian floor ({self.n_floor} exact Gaussian samples of {self.n_synapses}, {statistic}): median "
            f"{self.floor[0]:.4f}, {level} below {self.floor[1]:.4f}",
            f"best: {self.best} (lowest Delta-CDF in {100 * self.best_fraction:.1f}% of resamples)",
            f"margin to {self.runner_up}: {self.margin:.4f} [{self.margin_ci[0]:.4f}, {self.margin_ci[1]:.4f}]",
            "verdict: " + ("decisive" if self.decisive else
                           "not decisive (the interval of the margin reaches 0 or the best wins too rarely)"),
        ]
        if self.dropped_rows:
            lines.append(f"dropped {len(self.dropped_rows)} row(s) unusable by sign-keeping candidates: {show(self.dropped_rows)}")
        if self.dropped_candidates:
            lines.append(f"dropped candidate(s): {', '.join(self.dropped_candidates)}")
        if self.corrected is not None:
            lines += self.corrected.summary_lines(level)
        return wrap_lines(lines)

    def to_dict(self) -> dict:
        """JSON-ready summary (without the per-synapse changes)."""
        return {
            "table": self.table.to_dict(orient="records"),
            "best": self.best,
            "runner_up": self.runner_up,
            "best_fraction": self.best_fraction,
            "margin": self.margin,
            "margin_ci": list(self.margin_ci),
            "decisive": self.decisive,
            "n_synapses": self.n_synapses,
            "n_boot": self.n_boot,
            "confidence": self.confidence,
            "seed": self.seed,
            "centered": self.centered,
            "floor_median": self.floor[0],
            "floor_high": self.floor[1],
            "n_floor": self.n_floor,
            "dropped_rows": self.dropped_rows,
            "dropped_candidates": self.dropped_candidates,
            **({"scale_correction": self.corrected.to_dict()} if self.corrected is not None else {}),
        }


def wrap_lines(lines: Sequence[str], width: int = SUMMARY_WIDTH) -> str:
    """Join ``lines``, wrapping each single-line entry at ``width`` (continuations indented);
    entries that already hold several lines (tables) are kept as they are."""
    out = []
    for line in lines:
        out.append(line if "\n" in line else textwrap.fill(line, width, subsequent_indent="  ",
                                                           break_on_hyphens=False))
    return "\n".join(out)


# --------------------------------------------------------------------------- validation
def _as_vector(x, what: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise MeasurementError(f"{what} must be numbers, got values that are not") from None
    if arr.ndim != 1:
        raise MeasurementError(f"{what} must be one-dimensional (one value per synapse), got shape {arr.shape}")
    return arr


def _paired_values(before, after, labels) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Finite, equally long value vectors and one label per synapse."""
    before, after = _as_vector(before, "before"), _as_vector(after, "after")
    if before.size != after.size:
        raise MeasurementError(f"before has {before.size} values but after has {after.size}; they must be paired one to one")
    labels = [f"index {i}" for i in range(before.size)] if labels is None else list(labels)
    if len(labels) != before.size:
        raise MeasurementError(f"labels has {len(labels)} entries for {before.size} synapses")
    for arr, what in ((before, "before"), (after, "after")):
        require_finite(arr, f"{what} values", labels, MeasurementError)
    return before, after, labels


def _check_settings(n_boot, confidence: float, invalid: str) -> int:
    if invalid not in INVALID_POLICIES:
        raise MeasurementError(f"invalid={invalid!r} is not a policy; choose one of {', '.join(INVALID_POLICIES)}")
    if not 0 < confidence < 1:
        raise MeasurementError(f"confidence must be between 0 and 1, got {confidence}")
    if int(n_boot) != n_boot or n_boot < 100:
        raise MeasurementError(f"n_boot must be an integer >= 100 for percentile intervals, got {n_boot}")
    return int(n_boot)


def _potentials(candidates: Sequence[str]) -> list[Potential]:
    try:
        phis = [get_potential(c) for c in candidates]
    except (ValueError, TypeError) as error:
        raise MeasurementError(str(error)) from None
    names = [p.name for p in phis]
    if len(set(names)) != len(names):
        raise MeasurementError(f"candidates repeat a potential: {names}")
    if len(phis) < 2:
        raise MeasurementError(f"need at least two candidates to compare, got {names}")
    return phis


def _apply_sign_policy(before, after, labels, phis, invalid):
    """Rows and candidates left after the ``invalid`` policy, what it dropped, and which rows it kept."""
    keepers = [p.name for p in phis if p.keeps_sign]
    unusable = ~domain_mask(before, after, keepers) if keepers else np.zeros(before.size, dtype=bool)
    if not unusable.any():
        return before, after, labels, phis, [], [], ~unusable
    where = list(np.asarray(labels)[unusable])
    if invalid == "error":
        zeros = int(((before == 0) | (after == 0)).sum())
        raise MeasurementError(
            f"{', '.join(keepers)} keeps every synapse's sign, but {int(unusable.sum())} synapse(s) are zero or "
            f"change sign ({zeros} with a zero): {show(where)}. A sign change rules out a sign-keeping "
            "geometry; to analyse anyway, drop these rows (--drop-rows) or drop the sign-keeping "
            "candidates (--drop-candidates)"
        )
    if invalid == "drop_rows":
        keep = ~unusable
        return before[keep], after[keep], [lab for lab, k in zip(labels, keep) if k], phis, where, [], keep
    phis = [p for p in phis if not p.keeps_sign]
    if len(phis) < 2:
        raise MeasurementError(f"after dropping {', '.join(keepers)} fewer than two candidates remain ({[p.name for p in phis]})")
    return before, after, labels, phis, [], keepers, ~np.zeros(before.size, dtype=bool)


# --------------------------------------------------------------------------- the test
def identify_measurements(
    before,
    after,
    candidates: Sequence[str] = CANDIDATE_POTENTIALS,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    centered: bool = False,
    invalid: str = "error",
    labels: Sequence[str] | None = None,
    neurons: tuple[Sequence, Sequence] | None = None,
) -> IdentifyResult:
    """Delta-CDF of each candidate's dual change, with bootstrap intervals and a verdict.

    Parameters
    ----------
    before, after
        One value per synapse, paired by position.
    candidates
        Potential names (at least two).
    n_boot
        Bootstrap resamples of synapses (with replacement, seeded by ``seed``), at least 100.
    seed
        Seed of the bootstrap.
    confidence
        Level of the percentile intervals, and the share of resamples the best candidate must
        win for a decisive verdict.
    centered
        Subtract the mean change before comparing with N(0, 1). The published statistic is
        uncentred; it penalises any net drift of the change, so use the centred one when the
        synapses are expected to grow or shrink as a whole (development, homeostatic scaling).
    invalid
        Candidates that keep signs (``negative_entropy``) cannot use synapses that are zero or
        change sign: ``"error"`` (refuse, naming the rows), ``"drop_rows"`` (analyse the other
        synapses with every candidate) or ``"drop_candidates"`` (drop the sign-keeping
        candidates). A sign change is itself evidence against a sign-keeping geometry.
    labels
        A name per synapse for messages (default ``index i``).
    neurons
        ``(presynaptic ids, postsynaptic ids)``, one of each per synapse: also score the change with
        the scale-structure-aware statistic (:mod:`synaptic_geometry.identify.scale`), reported in
        ``corrected`` and as the table's column ``corrected_delta_cdf``. It assumes a change whose
        spread factorises over presynaptic and postsynaptic neurons; with few synapses per neuron
        its scales are noisy. No bootstrap: the verdict fields describe the raw statistic.

    Returns
    -------
    IdentifyResult
        Every candidate is scored on the same resample, so ``best_fraction`` and the paired
        ``margin`` interval compare candidates fairly. A resample repeats some synapses, and the
        repeats make its empirical CDF step further from the normal one, so resampled Delta-CDFs
        run higher than the data's, most of all for a nearly Gaussian candidate: its interval
        may lie entirely above its estimate. The same effect shrinks the resampled margin of the
        best candidate, so ``best_fraction`` and ``margin_ci`` err on the side of "not decisive".

    Raises
    ------
    MeasurementError
        For input or settings the test cannot use; the message says which and why.
    """
    before, after, labels = _paired_values(before, after, labels)
    n_boot = _check_settings(n_boot, confidence, invalid)
    phis = _potentials(candidates)
    if neurons is not None:
        if len(neurons) != 2 or any(len(ids) != before.size for ids in neurons):
            raise MeasurementError(f"neurons must be (presynaptic ids, postsynaptic ids) with one id per synapse "
                                   f"({before.size})")
        neurons = [np.asarray([str(x) for x in ids], dtype=object) for ids in neurons]
    before, after, labels, phis, dropped_rows, dropped_candidates, kept = _apply_sign_policy(
        before, after, labels, phis, invalid)
    n = before.size
    if n < MIN_SYNAPSES:
        raise MeasurementError(
            f"{n} synapses{' after dropping rows' if dropped_rows else ''}; the test needs at least {MIN_SYNAPSES} "
            "(and usually hundreds for a decisive answer)"
        )
    if np.all(before == after):
        raise MeasurementError("before and after are identical for every synapse: there is no change to analyse")

    names = [p.name for p in phis]
    changes = {}
    for phi in phis:
        try:
            changes[phi.name] = dual_change(before, after, phi)
        except ValueError as error:
            raise MeasurementError(f"candidate {phi.name} cannot be evaluated on these values: {error}") from None
        if not np.std(changes[phi.name]) > 0:
            raise MeasurementError(f"the change under {phi.name} is the same for every synapse; Delta-CDF needs a spread")
    full = np.array([delta_cdf(changes[name], centered=centered) for name in names])

    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(names)))
    per_batch = max(1, min(n_boot, _BOOT_VALUES // n))  # resamples scored at once (one sort of all)
    for first in range(0, n_boot, per_batch):
        idx = np.stack([rng.integers(0, n, n) for _ in range(min(per_batch, n_boot - first))])
        for k, name in enumerate(names):
            resampled = changes[name][idx]
            spread = np.std(resampled, axis=1) > 0
            scores = np.full(len(idx), np.inf)  # a resample without spread cannot be scored
            if spread.any():
                scores[spread] = delta_cdf_batch(resampled[spread], centered=centered)
            boot[first:first + len(idx), k] = scores
    found = verdict(full, boot, names, confidence)
    floor = gaussian_floor(n, N_FLOOR, seed, centered)
    corrected = None
    if neurons is not None:
        corrected = scale_corrected(before, after, neurons[0][kept], neurons[1][kept], phis, centered, seed, confidence)
        scores = corrected.table.set_index("candidate")["delta_cdf"]
        found["table"]["corrected_delta_cdf"] = scores.loc[found["table"]["candidate"]].to_numpy()
    return IdentifyResult(
        **found, n_synapses=n, n_boot=n_boot, confidence=float(confidence), seed=int(seed),
        changes={name: changes[name] for name in names},
        dropped_rows=dropped_rows, dropped_candidates=dropped_candidates, centered=bool(centered),
        floor=(float(np.median(floor)), float(np.quantile(floor, confidence))), n_floor=N_FLOOR,
        corrected=corrected,
    )


def verdict(full: np.ndarray, boot: np.ndarray, names: Sequence[str], confidence: float) -> dict:
    """The table and verdict from the data's Delta-CDFs ``full`` (one per candidate) and paired
    bootstrap Delta-CDFs ``boot`` (resamples x candidates).

    Returns the fields ``table`` (sorted best first), ``best``, ``runner_up``, ``best_fraction``,
    ``margin``, ``margin_ci`` and ``decisive`` of :class:`IdentifyResult`.
    """
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    wins = np.bincount(np.argmin(boot, axis=1), minlength=len(names)) / len(boot)
    order = np.argsort(full, kind="stable")
    best, second = int(order[0]), int(order[1])
    margin_ci = tuple(float(q) for q in np.quantile(boot[:, second] - boot[:, best], [alpha, 1 - alpha]))
    table = pd.DataFrame(
        {"candidate": list(names), "delta_cdf": full, "ci_low": low, "ci_high": high, "best_fraction": wins}
    ).iloc[order].reset_index(drop=True)
    return {"table": table, "best": names[best], "runner_up": names[second], "best_fraction": float(wins[best]),
            "margin": float(full[second] - full[best]), "margin_ci": margin_ci,
            "decisive": bool(margin_ci[0] > 0 and wins[best] >= confidence)}
