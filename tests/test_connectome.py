"""The Witvliet et al. (2021) data, the count statistics and the calibration simulator."""

import io
import json
import os
import shutil
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synaptic_geometry.experiments import connectome as ce
from synaptic_geometry.experiments import connectome_data as cd
from synaptic_geometry.experiments import count_geometry as cg

REPO = Path(__file__).resolve().parents[1]
# Where a local copy of the pinned wheel may be (never downloaded by the tests).
WHEEL_PLACES = [os.environ.get("CECT_WHEEL", ""), "/tmp/cect/cect-0.3.5-py3-none-any.whl",
                str(Path.home() / "cect" / "cect-0.3.5-py3-none-any.whl")]
WHEEL = next((Path(p) for p in WHEEL_PLACES if p and Path(p).is_file()), None)


# --------------------------------------------------------------------------- the committed data
def test_the_eight_animals_have_their_stages_ages_and_sizes():
    animals = cd.animals()
    assert list(animals.dataset) == list(range(1, 9))
    assert list(animals.stage) == ["L1"] * 4 + ["L2", "L3", "adult", "adult"]
    assert list(animals.age_hours) == [0, 5, 8, 16, 23, 27, 50, 50]
    # sizes of the spreadsheets (rows per type), as read independently by the toolbox's own reader
    assert list(animals.chemical_connections) == [775, 986, 1012, 1136, 1515, 1525, 2202, 2186]
    assert list(animals.electrical_connections) == [83, 124, 94, 209, 292, 214, 291, 310]
    assert animals.chemical_synapses.iloc[0] == 1296  # the toolbox's cached matrix sums to this
    assert (animals.chemical_synapses.diff().iloc[1:6] > 0).all()  # synapses are added through L1 to L3


def test_known_connections_and_matching_across_animals():
    table = cd.load_connections([1, 8])
    assert set(table.columns) == {"dataset", "pre", "post", "type", "synapses"}
    assert (table.type == "chemical").all() and table.synapses.min() >= 1
    row = table[(table.dataset == 1) & (table.pre == "ADAL") & (table.post == "AVBL")]
    assert row.synapses.tolist() == [3]
    adults = ce._matched(7, 8)
    newborn_adult = ce._matched(1, 8)
    # shared connections as counted with the toolbox in the issue that asked for this chapter
    assert adults.both.sum() == 1469 and newborn_adult.both.sum() == 634
    assert adults.appeared.sum() + adults.vanished.sum() + adults.both.sum() == len(adults.ids)
    electrical = cd.load_connections(1, "electrical")
    assert len(electrical) == 83 and (electrical.type == "electrical").all()
    assert len(cd.load_connections(1, None)) == 858


def test_loader_refuses_unknown_datasets_and_types():
    with pytest.raises(cd.ConnectomeDataError, match=r"unknown dataset\(s\) \[9\]; known: \[1, 2"):
        cd.load_connections(9)
    with pytest.raises(cd.ConnectomeDataError, match="unknown synapse type 'gap'"):
        cd.load_connections(1, "gap")


def _copy_data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(cd.DATA_DIR, folder)
    return folder


def test_missing_and_modified_files_are_refused(tmp_path):
    with pytest.raises(cd.ConnectomeDataError, match="no manifest.json .* the Witvliet data are missing"):
        cd.load_connections(1, folder=tmp_path)
    folder = _copy_data(tmp_path)
    (folder / "witvliet_2020_3.csv").unlink()
    with pytest.raises(cd.ConnectomeDataError, match="witvliet_2020_3.csv is missing"):
        cd.load_connections(3, folder=folder)
    path = folder / "witvliet_2020_2.csv"
    path.write_text(path.read_text().replace(",chemical,3", ",chemical,4", 1))
    with pytest.raises(cd.ConnectomeDataError, match="differs from the file recorded .* it was modified"):
        cd.load_connections(2, folder=folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(cd.ConnectomeDataError, match="is not a valid manifest"):
        cd.animals(folder)


@pytest.mark.parametrize("text, message", [
    ("pre,post,type,synapses\nA,B,chemical,2.5\n", "not whole numbers >= 1"),
    ("pre,post,type,synapses\nA,B,chemical,0\n", "not whole numbers >= 1"),
    ("pre,post,kind,synapses\nA,B,chemical,2\n", "expected exactly"),
    ("pre,post,type,synapses\nA,B,chemical,2\nA,B,chemical,3\n", "more than once: A->B"),
    ("pre,post,type,synapses\nA,B,gap,2\n", "synapse types \\['gap'\\]"),
    ("pre,post,type,synapses\n,B,chemical,2\n", "without a cell name"),
    ("pre,post,type,synapses\n", "no connections"),
])
def test_malformed_files_are_refused_with_what_is_wrong(tmp_path, text, message):
    folder = _copy_data(tmp_path)
    path = folder / "witvliet_2020_1.csv"
    path.write_text(text)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["animals"][0]["csv_sha256"] = cd._sha256(path.read_bytes())  # a consistent but bad file
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(cd.ConnectomeDataError, match=message):
        cd.load_connections(1, folder=folder)


def _workbook(rows_xml: str, shared: list[str]) -> bytes:
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rels = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", f'<workbook xmlns="{main}" xmlns:r="{rels}"><sheets>'
                         f'<sheet name="s" sheetId="1" r:id="rId7"/></sheets></workbook>')
        archive.writestr("xl/_rels/workbook.xml.rels",
                         '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                         '<Relationship Id="rId7" Target="worksheets/sheet9.xml" Type="t"/></Relationships>')
        archive.writestr("xl/sharedStrings.xml", f'<sst xmlns="{main}">'
                         + "".join(f"<si><t>{s}</t></si>" for s in shared) + "</sst>")
        archive.writestr("xl/worksheets/sheet9.xml", f'<worksheet xmlns="{main}"><sheetData>{rows_xml}</sheetData></worksheet>')
    return buffer.getvalue()


def test_spreadsheet_reader_follows_the_workbook_and_fills_gaps():
    rows = ('<row r="1"><c r="A1" t="s"><v>0</v></c><c r="C1" t="inlineStr"><is><t>x y</t></is></c></row>'
            '<row r="2"><c r="B2" t="n"><v>7</v></c></row>')
    assert cd.read_spreadsheet(_workbook(rows, ["pre"])) == [["pre", "", "x y"], ["", "7"]]
    with pytest.raises(cd.ConnectomeDataError, match="not an .xlsx workbook"):
        cd.read_spreadsheet(b"pre,post\n")


def test_package_data_in_pyproject_covers_every_data_file():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO / "src" / "synaptic_geometry"
    covered = {path for pattern in config["synaptic_geometry"] for path in package.glob(pattern)}
    files = {path for path in cd.DATA_DIR.iterdir() if path.is_file()}
    assert files and files <= covered
    assert {"manifest.json", "LICENSE-cect.txt", "README.md"} <= {path.name for path in files}


def test_regeneration_refuses_a_missing_or_different_wheel(tmp_path):
    with pytest.raises(cd.ConnectomeDataError, match="does not exist; download it"):
        cd.regenerate(tmp_path / "absent.whl", tmp_path)
    fake = tmp_path / "cect-0.3.5-py3-none-any.whl"
    fake.write_bytes(b"not the wheel")
    with pytest.raises(cd.ConnectomeDataError, match="not the pinned"):
        cd.regenerate(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(WHEEL is None, reason="no local cect-0.3.5 wheel (set CECT_WHEEL or put it in /tmp/cect); "
                    "the tests never download it")
def test_regeneration_from_the_wheel_reproduces_the_committed_files(tmp_path):
    manifest = cd.regenerate(WHEEL, tmp_path)
    for path in cd.DATA_DIR.iterdir():
        if path.name != "README.md":
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    # the toolbox's own cached reading of each spreadsheet has the same chemical totals
    with zipfile.ZipFile(WHEEL) as archive:
        for entry in manifest["animals"]:
            cached = json.loads(archive.read(f"cect/cache/WitvlietDataReader{entry['dataset']}.json"))
            matrix = np.array(cached["connections"]["Generic_CS"])
            ours = cd.load_connections(entry["dataset"], folder=tmp_path)
            assert matrix.sum() == ours.synapses.sum() and np.count_nonzero(matrix) == len(ours)


# --------------------------------------------------------------------------- count statistics
def test_uniform_dequantisation_stays_within_half_a_count():
    rng = np.random.default_rng(0)
    counts = np.repeat([0, 1, 2, 7], 5000)
    values = cg.dequantise(counts, "uniform", rng)
    for k in (1, 2, 7):
        chosen = values[counts == k]
        assert chosen.min() >= k - 0.5 and chosen.max() < k + 0.5 and abs(chosen.mean() - k) < 0.02
    assert values[counts == 0].min() >= 0 and values[counts == 0].max() < 0.5
    assert np.array_equal(cg.dequantise(counts, "none", rng), counts.astype(float))
    with pytest.raises(ValueError, match="unknown dequantisation 'gamma'; accepted: uniform, none"):
        cg.dequantise(counts, "gamma", rng)
    with pytest.raises(ValueError, match="not whole numbers >= 0"):
        cg.dequantise([1, 2.5], "uniform", rng)


def test_matching_by_ids_counts_appeared_and_vanished():
    before = pd.DataFrame({"pre": ["A", "A", "B"], "post": ["B", "C", "C"], "synapses": [1, 2, 3]})
    after = pd.DataFrame({"pre": ["B", "A", "C"], "post": ["C", "B", "A"], "synapses": [5, 4, 1]})
    matched = cg.match_counts(before, after)
    pairs = list(matched.ids.itertuples(index=False, name=None))
    assert pairs == [("A", "B"), ("A", "C"), ("B", "C"), ("C", "A")]
    assert matched.before.tolist() == [1, 2, 3, 0] and matched.after.tolist() == [4, 0, 5, 1]
    assert matched.both.tolist() == [True, False, True, False]
    assert matched.appeared.sum() == 1 and matched.vanished.sum() == 1
    with pytest.raises(ValueError, match="repeats ids"):
        cg.match_counts(pd.concat([before, before]), after)
    with pytest.raises(ValueError, match=r"no column\(s\) \['weight'\]"):
        cg.match_counts(before, after, value_column="weight")


def test_the_centred_profile_finds_the_geometry_of_continuous_changes():
    rng = np.random.default_rng(1)
    w = rng.lognormal(1.0, 0.8, 4000)
    multiplicative = w * np.exp(0.7 + 0.3 * rng.standard_normal(w.size))  # a net growth the centring removes
    additive = w + 3.0 + 1.0 * rng.standard_normal(w.size)
    keep = additive > 0
    names = ["negative_entropy", "2-norm", "3-norm"]
    assert np.argmin(cg.count_change_profile(w, multiplicative, names)) == 0
    assert np.argmin(cg.count_change_profile(w[keep], additive[keep], names)) == 1
    uncentred = cg.count_change_profile(w, multiplicative, names, centered=False)
    assert uncentred[0] > 5 * cg.count_change_profile(w, multiplicative, names)[0]


def test_profile_draws_and_bootstrap_are_seeded_and_use_connections_in_both():
    before = np.array([1, 2, 3, 0, 4, 5, 6, 2, 1, 3])
    after = np.array([2, 0, 3, 1, 5, 8, 9, 3, 2, 2])
    draws = cg.profile_draws(before, after, ["negative_entropy", "2-norm"], 4, seed=3)
    assert draws.shape == (4, 2) and np.array_equal(draws, cg.profile_draws(before, after, ["negative_entropy", "2-norm"], 4, seed=3))
    assert len({tuple(row) for row in draws}) == 4
    raw = cg.profile_draws(before, after, ["2-norm"], 3, "none")
    assert np.all(raw == raw[0])
    boot = cg.bootstrap_profiles(before, after, ["negative_entropy", "2-norm"], 50, seed=1)
    assert boot.shape == (50, 2) and np.isfinite(boot).all()
    with pytest.raises(ValueError, match="only 1 item"):
        cg.profile_draws([1, 0, 0], [1, 2, 0])


def test_count_fits_recover_their_own_family():
    rng = np.random.default_rng(2)
    pln = rng.poisson(np.exp(rng.normal(0.5, 0.9, 6000)))
    pln = pln[pln > 0]
    fit = cg.fit_count_distribution(pln, "poisson_lognormal")
    assert abs(fit.params["mu"] - 0.5) < 0.15 and abs(fit.params["sigma"] - 0.9) < 0.1
    assert fit.p_value > 0.001 and fit.df > 0
    nb = rng.negative_binomial(2.0, 2.0 / (2.0 + 3.0), 6000)
    nb = nb[nb > 0]
    fits = {family: cg.fit_count_distribution(nb, family) for family in cg.FAMILIES}
    assert fits["negative_binomial"].aic < fits["poisson_lognormal"].aic
    assert abs(fits["negative_binomial"].params["size"] - 2.0) < 0.4
    k = np.arange(1, 400)
    for family, result in fits.items():
        assert abs(cg.truncated_pmf(k, family, result.params).sum() - 1) < 1e-6
    with pytest.raises(ValueError, match="at least 10 counts, all >= 1"):
        cg.fit_count_distribution([0, 1, 2] * 5, "poisson_lognormal")


def test_individual_variability_is_estimated_from_two_animals_of_one_age():
    rng = np.random.default_rng(3)
    strength = np.exp(rng.normal(2.0, 1.0, 20000))
    s2 = 0.2
    a, b = (rng.poisson(strength * np.exp(rng.normal(-s2 / 2, np.sqrt(s2), strength.size))) for _ in range(2))
    assert abs(cg.individual_variability(a, b) - s2) < 0.03
    same = [rng.poisson(strength) for _ in range(2)]
    assert cg.individual_variability(*same) < 0.01
    with pytest.raises(ValueError, match="pair them first"):
        cg.individual_variability([1, 2], [1])


def test_simulated_growth_has_the_mean_and_zeros_of_its_geometry():
    rng = np.random.default_rng(4)
    before = rng.integers(5, 40, 20000)
    doubled = cg.simulate_after(before, "negative_entropy", np.log(2.0), 0.0, 0.0, rng)
    assert abs(doubled.mean() / before.mean() - 2.0) < 0.03
    unchanged = cg.simulate_after(before, cg.NO_GROWTH, 0.0, 0.0, 0.0, rng)
    assert abs(unchanged.mean() / before.mean() - 1.0) < 0.02
    shrunk = cg.simulate_after(before, "2-norm", -30.0, 1.0, 0.0, rng)
    assert (shrunk == 0).mean() > 0.5  # additive loss takes strengths below zero: connections vanish
    assert (cg.simulate_after(before, "negative_entropy", -3.0, 0.1, 0.0, rng) > 0).mean() > 0.3
    with pytest.raises(ValueError, match="every count must be >= 1"):
        cg.simulate_after([0, 1], "2-norm", 0, 1, 0, rng)


def test_growth_fit_reproduces_the_pair_it_is_fitted_to():
    rng = np.random.default_rng(5)
    before = rng.poisson(np.exp(rng.normal(1.0, 0.8, 3000)))
    before = before[before > 0]
    after = cg.simulate_after(before, "negative_entropy", 0.5, 0.4, 0.0, rng)
    for truth in ("negative_entropy", "2-norm"):
        fit = cg.fit_growth(before, after, truth, 0.0)
        assert abs(fit.simulated["mean_after"] / fit.observed["mean_after"] - 1) < 1e-3
        assert abs(fit.simulated["change_sd"] / fit.observed["change_sd"] - 1) < 1e-3
    fit = cg.fit_growth(before, after, "negative_entropy", 0.0)
    assert abs(fit.simulated["survival"] - fit.observed["survival"]) < 0.03  # not fitted: a check


def test_calibration_recovers_both_geometries_when_counts_are_large():
    # hundreds of synapses per connection: counting noise is small against the growth spread
    rng = np.random.default_rng(6)
    before = rng.poisson(np.exp(rng.normal(6.0, 0.4, 1500)))
    truths = ["negative_entropy", "2-norm"]
    candidates = ["negative_entropy", "1.5-norm", "2-norm", "3-norm"]
    for t, truth in enumerate(truths):
        after = cg.simulate_after(before, truth, *((0.5, 0.3) if t == 0 else (100.0, 150.0)), 0.0, rng)
        result = cg.calibrate(before, after, truths, 0.0, candidates, n_reps=6, n_draws=1, seed=t)
        named = result["profiles"].argmin(axis=2)  # truths x reps
        assert (named[0] == 0).all() and (named[1] == 2).all()
        assert result["profiles"].shape == (2, 6, 4) and (result["n_present"] > 1400).all()


def test_simulation_p_values():
    simulated = np.arange(99.0)
    assert cg.simulation_p_value(49.0, simulated) == 1.0
    assert cg.simulation_p_value(500.0, simulated) == pytest.approx(2 / 100)
    assert cg.simulation_p_value(-1.0, simulated) == pytest.approx(2 / 100)


# --------------------------------------------------------------------------- the chapter's module
def test_pairs_and_their_kinds():
    pairs = ce.all_pairs()
    assert len(pairs) == 28 and len(set(pairs)) == 28 and (7, 8) in pairs and (1, 8) in pairs
    assert all(cd.ANIMALS[a - 1].age_hours <= cd.ANIMALS[b - 1].age_hours for a, b in pairs)
    assert [ce.pair_kind(*p) for p in ((7, 8), (1, 4), (4, 5))] == ["same age", "within L1", "across stages"]


def test_same_age_dispersion_bins_every_adult_connection():
    table = ce.same_age_dispersion(n_null=200)
    assert table.n.sum() == len(ce._matched(7, 8).ids)
    assert table.ratio.iloc[0] == 1.0  # a connection with one synapse in total always differs by one
    assert ((table.null_low <= 1) & (table.null_high >= 1)).all()


def _fake_calibration(separation: float, observed: float, noise: float = 0.01) -> dict:
    rng = np.random.default_rng(0)
    candidates = np.array(["negative_entropy", "2-norm"])
    profiles = np.zeros((1, 2, 200, 2))
    profiles[0, 0, :, 1] = separation + noise * rng.standard_normal(200)  # multiplicative: 2-norm worse
    profiles[0, 1, :, 1] = noise * rng.standard_normal(200)  # additive: no contrast
    return {"candidates": candidates, "truths": np.array(ce.GROWTH_TRUTHS), "key_pairs": np.array([[1, 8]]),
            "profiles": profiles, "observed": np.array([[0.0, observed]]), "spread": np.ones((1, 2)),
            "spread_at_floor": np.zeros((1, 2)), "survival": np.ones((1, 2)), "survival_observed": np.ones(1)}


@pytest.mark.parametrize("separation, observed, word", [
    (0.2, 0.2, "multiplicative"), (0.2, 0.0, "additive"), (0.2, 0.5, "neither"), (0.2, 0.1, "neither"),
    (0.005, 0.0, "not separable"),
])
def test_verdicts_follow_the_simulation_tests(separation, observed, word):
    result = _fake_calibration(separation, observed)
    table = ce.verdicts(result)
    assert table.verdict.tolist() == [word]
    assert ce.verdict_summary(table) == f"1 {word}"


def test_pair_profiles_on_the_real_data_at_a_small_size(tmp_path):
    result = ce.pair_profiles.compute(candidates=["negative_entropy", "2-norm"], n_draws=2, n_boot=5, n_floor=3,
                                      dequantisation="uniform", seed=0, data_version=cd.data_version())
    table = ce.pair_table(result, [[1, 8], [7, 8]])
    assert table.n_both.tolist() == [634, 1469] and table.kind.tolist() == ["across stages", "same age"]
    assert table.growth.iloc[0] > 3 and 0.9 < table.growth.iloc[1] < 1.2
    assert (result["boot_low"] <= result["boot_high"]).all()
    assert (result["n_appeared_new_cell"] <= result["n_appeared"]).all()
    assert np.isnan(result["union"][:, 0]).all() and np.isfinite(result["union"][:, 1]).all()


def test_adult_agreement_compares_development_to_either_adult():
    table = pd.DataFrame({"pair": ["1 → 7", "1 → 8", "6 → 7", "6 → 8", "4 → 5", "7 → 8"],
                          "verdict": ["additive", "not separable", "multiplicative", "multiplicative",
                                      "undecided", "not separable"]})
    assert ce.adult_agreement(table) == (1, 2)
    assert ce.adult_agreement(table.iloc[[0, 4]]) == (0, 0)


def test_pairs_are_parsed_and_checked():
    assert ce.parse_pair("1-8") == (1, 8) and ce.parse_pair(" 7 - 8 ") == (7, 8)
    for bad in ("1,8", "1-9", "3-3", [1, 8]):
        with pytest.raises(ValueError, match="pair"):
            ce.parse_pair(bad)
