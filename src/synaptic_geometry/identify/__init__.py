"""The identify tool: which geometry of plasticity makes the change of measured synapses most Gaussian.

Given one number per synapse before learning and one after (spine volumes, synapse areas, EPSP
amplitudes; inhibitory synapses may be entered as negative numbers), the tool computes for each
candidate potential the Delta-CDF of the change in that potential's dual space, with bootstrap
confidence intervals over synapses, and says which candidate makes the change most Gaussian and
how decisively it wins.

Modules: :mod:`~synaptic_geometry.identify.reading` (paired CSV files),
:mod:`~synaptic_geometry.identify.statistics` (the test and its verdict),
:mod:`~synaptic_geometry.identify.counts` (the test on synapse counts),
:mod:`~synaptic_geometry.identify.scale` (the scale-structure-aware statistic, with neuron ids),
:mod:`~synaptic_geometry.identify.calibration` (the verdict on simulated experiments),
:mod:`~synaptic_geometry.identify.plotting` and :mod:`~synaptic_geometry.identify.outputs`
(figure and files), :mod:`~synaptic_geometry.identify.cli` (the command).

Python::

    from synaptic_geometry.identify import identify_measurements
    result = identify_measurements(before, after, n_boot=1000, seed=0)
    result.table        # candidate, delta_cdf, ci_low, ci_high, best_fraction
    result.best, result.best_fraction, result.margin, result.margin_ci

Command line (``synaptic-geometry identify`` or ``python -m synaptic_geometry.identify``)::

    synaptic-geometry identify BEFORE.csv AFTER.csv --column size --id-column synapse \\
        --figure identify.png --table identify.csv
    synaptic-geometry identify BEFORE.csv AFTER.csv --counts --id-columns pre,post --column synapses \\
        --control BEFORE2.csv AFTER2.csv --calibrate
    synaptic-geometry identify BEFORE.csv AFTER.csv --id-columns pre,post --column size --scale-correction

Bad input raises :class:`MeasurementError` (the command prints it and exits with status 1) and
nothing is written. Outputs are written only after every step succeeded, each under a temporary
name and then renamed.
"""

from synaptic_geometry.identify.calibration import calibrate, stored_calibration
from synaptic_geometry.identify.cli import build_parser, command_line, main, run
from synaptic_geometry.identify.counts import DEQUANTISATIONS, CountResult, calibrate_counts, identify_counts
from synaptic_geometry.identify.errors import MeasurementError
from synaptic_geometry.identify.outputs import write_outputs
from synaptic_geometry.identify.plotting import plot_result
from synaptic_geometry.identify.reading import Measurements, parse_where, read_counts, read_measurements
from synaptic_geometry.identify.scale import (
    N_CORRECTED_FLOOR,
    ScaleCorrection,
    neuron_matrix,
    scale_corrected,
    simulate_neuron_synapses,
)
from synaptic_geometry.identify.tables import calibration_table, compare_results, result_table, share_upper_bound
from synaptic_geometry.identify.statistics import (
    INVALID_POLICIES,
    MIN_SYNAPSES,
    N_FLOOR,
    IdentifyResult,
    identify_measurements,
)

__all__ = [
    "DEQUANTISATIONS",
    "INVALID_POLICIES",
    "MIN_SYNAPSES",
    "N_CORRECTED_FLOOR",
    "N_FLOOR",
    "CountResult",
    "IdentifyResult",
    "MeasurementError",
    "Measurements",
    "ScaleCorrection",
    "build_parser",
    "calibrate",
    "calibrate_counts",
    "command_line",
    "calibration_table",
    "compare_results",
    "identify_counts",
    "identify_measurements",
    "main",
    "neuron_matrix",
    "parse_where",
    "plot_result",
    "read_counts",
    "result_table",
    "read_measurements",
    "run",
    "scale_corrected",
    "share_upper_bound",
    "simulate_neuron_synapses",
    "stored_calibration",
    "write_outputs",
]
