"""Formatting of the book's tables and numbers, and the parameter tables."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from synaptic_geometry.book import report
from synaptic_geometry.book.build import load_profile


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (3, 3, "3"),
        (np.int64(12000), 3, "12000"),
        (0.123456, 3, "0.123"),
        (1.5, 3, "1.50"),
        (2.0, 3, "2"),
        (123.456, 3, "123"),
        (1234.5, 3, "1234"),
        (0.000001234, 2, "1.2e-06"),
        (float("nan"), 3, "–"),
        (None, 3, "–"),
        (True, 3, "yes"),
        (np.bool_(False), 3, "no"),
        (math.inf, 3, "∞"),
        (0.0, 3, "0"),
        ("2-norm", 3, "2-norm"),
        ([0.5, 2], 2, "0.50, 2"),
        ({"rnn-1000": 1000}, 3, "rnn-1000: 1000"),
        ({}, 3, "–"),
        ([], 3, "–"),
    ],
)
def test_format_value(value, digits, text):
    assert report.format_value(value, digits) == text


def test_exact_values_are_shown_as_set():
    assert report.format_value(0.05, exact=True) == "0.05"
    assert report.format_value(1e-6, exact=True) == "1e-6"
    assert report.format_value([1e-5, 0.1], exact=True) == "1e-5, 0.1"
    assert report.format_value({"epochs": 5, "lr": 0.05}, exact=True) == "epochs: 5; lr: 0.05"


def test_format_value_refuses_zero_digits():
    with pytest.raises(ValueError, match="digits"):
        report.format_value(1.0, 0)


def test_markdown_table_has_headers_no_index_and_formatted_cells():
    frame = pd.DataFrame({"potential": ["2-norm", "a|b"], "delta_cdf": [0.012345, np.nan], "ok": [True, False]},
                         index=[7, 9])
    text = report.markdown_table(frame, columns={"potential": "Potential", "delta_cdf": "Delta-CDF", "ok": "Identified"},
                                 digits={"delta_cdf": 2})
    lines = text.splitlines()
    assert lines[0] == "| Potential | Delta-CDF | Identified |"
    assert lines[1] == "|:---|---:|:---|"
    assert lines[2] == "| 2-norm | 0.012 | yes |"
    assert lines[3] == "| a\\|b | – | no |"
    assert "7" not in text and "9" not in text


def test_markdown_table_names_missing_columns():
    with pytest.raises(KeyError, match="nope"):
        report.markdown_table(pd.DataFrame({"a": [1]}), columns={"nope": "Nope"})
    with pytest.raises(TypeError, match="DataFrame"):
        report.markdown_table({"a": [1]})


def test_parameter_table_lists_every_meaning_with_its_value():
    values = {"profile": "tiny", **load_profile("linear_regression", "tiny"), "failure_widths": [100, 200]}
    table = report.parameter_table("linear_regression", values)
    assert list(table.columns) == ["Parameter", "Value", "Meaning"]
    row = table[table.Parameter == "`failure_widths`"].iloc[0]
    assert row.Value == "100, 200" and "width" in row.Meaning
    with pytest.raises(KeyError, match="n_seeds"):
        report.parameter_table("linear_regression", {k: v for k, v in values.items() if k != "n_seeds"})


def test_glue_figure_closes_the_figure_and_refuses_other_objects():
    figure, _ = plt.subplots()
    report.glue_figure("fig-test", figure)
    assert not plt.fignum_exists(figure.number)
    with pytest.raises(TypeError, match="Figure"):
        report.glue_figure("fig-test", object())
