"""Tests of the Fig 3D-E measures: angle to the teacher, path detour, half-way progress."""

import numpy as np
import pytest

from synaptic_geometry.experiments import spiking_fields as F
from synaptic_geometry.experiments import spiking_protocol as P


def test_angle_to_target_zero_along_and_ninety_across():
    grid = np.array([[0.0, 0.0], [1.0, 0.0]])
    teacher = np.array([0.0, 1.0])
    towards = teacher - grid
    across = np.array([[1.0, 0.0], [1.0, 1.0]])  # perpendicular to (0, 1) and to (-1, 1)
    assert F.angle_to_target(towards, grid, teacher) == pytest.approx([0.0, 0.0], abs=1e-6)
    assert F.angle_to_target(across, grid, teacher) == pytest.approx([90.0, 90.0])


def test_path_deviation_straight_and_l_shaped():
    s = np.linspace(0, 1, 11)[:, None]
    straight = np.array([0.0, 1.0]) + s * np.array([1.0, -1.0])
    assert F.path_deviation(straight, [1.0, 0.0]) == pytest.approx(0.0, abs=1e-12)
    corner = np.concatenate([np.c_[np.zeros(11), 1 - s[:, 0]], np.c_[s[1:, 0], np.zeros(10)]])
    # the corner (0, 0) is 1/sqrt(2) from the segment (0, 1)-(1, 0) of length sqrt(2)
    assert F.path_deviation(corner, [1.0, 0.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        F.path_deviation(np.zeros((3, 2)), [0.0, 0.0])


def test_half_way_progress_homogeneous_and_one_weight_first():
    s = np.linspace(0, 1, 1001)[:, None]
    straight = (1 - s) * np.array([1.0, 1.0])
    assert F.half_way_progress(straight, [0.0, 0.0]) == pytest.approx((0.5, 0.5), abs=2e-3)
    # the second weight first: (1, 1) -> (1, 0) -> (0, 0); half the distance is reached on the
    # second leg at x = 1/sqrt(2), with all of the second weight's error removed
    first_leg = np.c_[np.ones(1001), 1 - s[:, 0]]
    second_leg = np.c_[1 - s[1:, 0], np.zeros(1000)]
    low, high = F.half_way_progress(np.concatenate([first_leg, second_leg]), [0.0, 0.0])
    assert low == pytest.approx(1 - 2**-0.5, abs=2e-3) and high == pytest.approx(1.0)
    assert np.isnan(F.half_way_progress(straight[:100], [0.0, 0.0])[0])


def test_field_angle_matches_the_stored_field_and_orders_the_rules(tmp_path):
    fields = P.two_synapse_fields(n_samples=300, grid_step=0.2, seed=3, root=tmp_path)
    nat = F.field_angle("natural", fields, 300, 3, n_boot=200)
    euc = F.field_angle("euclidean", fields, 300, 3, n_boot=200)
    for point, lo, hi in (nat, euc):
        assert lo <= point <= hi and hi - lo > 0
    direct = F.angle_to_target(fields["field_natural"], fields["grid"], fields["teacher"]).mean()
    assert nat[0] == pytest.approx(direct, rel=1e-6)
    assert nat[2] < euc[1]  # the natural updates point closer to the teacher
    with pytest.raises(ValueError, match="does not match"):
        F.field_angle("natural", fields, 300, 4, n_boot=10)  # other input states than the stored field's
    with pytest.raises(ValueError):
        F.field_angle("approximate", fields, 300, 3)
