"""The eight C. elegans brain connectomes of Witvliet et al. (2021): reading, checking, regenerating.

Witvliet et al. (Nature 596:257, 2021) reconstructed the brain (nerve ring and ventral ganglion)
of eight isogenic hermaphrodites from birth to adulthood by serial-section electron microscopy
and counted, for every pair of identified cells, the chemical synapses (presynaptic active zones
agreed by at least two of three annotators) and the electrical synapses (gap junctions, only
partially annotated). The OpenWorm "C. elegans Connectome Toolbox" (the PyPI package ``cect``,
MIT licence) ships these tables as one spreadsheet per animal,
``cect/data/witvliet_2020_<k> <stage>.xlsx``, with the columns ``pre``, ``post``, ``type``
(``chemical`` or ``electrical``) and ``synapses`` (a count).

``cect`` itself cannot be a dependency (it pins ``numpy<2.4`` and pulls heavy packages), so the
package carries a derived copy: one CSV per animal in ``synaptic_geometry/data/witvliet2021/``
(the same four columns, cell names as in the spreadsheets, rows sorted), with ``manifest.json``
(source wheel and its sha256, the member read for each animal and its sha256, each CSV's
sha256, stage and age of each animal, licence and citation), the toolbox's licence text and a
README. :func:`load_connections` and :func:`animals` read that copy and check it against the
manifest; :func:`regenerate` rebuilds it from the wheel::

    pip download cect==0.3.5 --no-deps -d /tmp/cect
    python -m synaptic_geometry.experiments.connectome_data /tmp/cect/cect-0.3.5-py3-none-any.whl

An ``.xlsx`` file is a zip archive of XML parts; :func:`read_spreadsheet` reads its first sheet
with the standard library (``zipfile`` and ``xml.etree``), so no spreadsheet package is needed.
The inputs are the members of one wheel whose sha256 is checked before anything is read.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pandas as pd

from synaptic_geometry.infra.store import atomic_write_bytes

__all__ = [
    "COLUMNS",
    "DATA_DIR",
    "SYNAPSE_TYPES",
    "WHEEL",
    "Animal",
    "ConnectomeDataError",
    "animals",
    "data_version",
    "load_connections",
    "read_spreadsheet",
    "regenerate",
]

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "witvliet2021"
COLUMNS = ("pre", "post", "type", "synapses")
SYNAPSE_TYPES = ("chemical", "electrical")
MANIFEST = "manifest.json"
LICENCE_FILE = "LICENSE-cect.txt"


@dataclass(frozen=True)
class Animal:
    """One of the eight animals: its dataset number, larval stage and age in hours after birth."""

    dataset: int
    stage: str
    age_hours: float

    @property
    def csv_name(self) -> str:
        return f"witvliet_2020_{self.dataset}.csv"

    @property
    def member(self) -> str:
        return f"cect/data/witvliet_2020_{self.dataset} {self.stage}.xlsx"


#: The source: the pinned wheel of the toolbox (name and sha256 of the file PyPI serves).
WHEEL = {
    "name": "cect-0.3.5-py3-none-any.whl",
    "package": "cect",
    "version": "0.3.5",
    "sha256": "ea47f7a6b0d69a8d0bd3b0ade4037b7cc32d31ad0449f823d7ec153d6fd25057",
}

#: Stages as in the spreadsheets' names; ages (hours after birth) as given for the datasets by the
#: authors' NemaNode database and in Fig. 1 of Witvliet et al. (2021).
ANIMALS = (
    Animal(1, "L1", 0.0), Animal(2, "L1", 5.0), Animal(3, "L1", 8.0), Animal(4, "L1", 16.0),
    Animal(5, "L2", 23.0), Animal(6, "L3", 27.0), Animal(7, "adult", 50.0), Animal(8, "adult", 50.0),
)

CITATION = ("Witvliet D, Mulcahy B, Mitchell JK, Meirovitch Y, Berger DR, Wu Y, Liu Y, Koh WX, Parvathala R, "
            "Holmyard D, Schalek RL, Shavit N, Chisholm AD, Lichtman JW, Samuel ADT, Zhen M. Connectomes across "
            "development reveal principles of brain maturation. Nature 596, 257-261 (2021). "
            "doi:10.1038/s41586-021-03778-8")
TOOLBOX = ("OpenWorm C. elegans Connectome Toolbox (PyPI package cect, version 0.3.5, MIT licence), "
           "maintained by Padraig Gleeson and the OpenWorm contributors")


class ConnectomeDataError(ValueError):
    """Data files that are missing, modified or malformed; the message says which and what is accepted."""


# --------------------------------------------------------------------------- spreadsheets
_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_RELS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PACKAGE_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def _column_index(reference: str) -> int:
    """0-based column of a cell reference such as ``C12``."""
    letters = re.match(r"[A-Z]+", reference)
    if letters is None:
        raise ConnectomeDataError(f"cell reference {reference!r} has no column letters")
    index = 0
    for letter in letters.group(0):
        index = index * 26 + ord(letter) - ord("A") + 1
    return index - 1


def _cell_text(cell: ElementTree.Element, shared: list[str]) -> str:
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        return "".join(t.text or "" for t in cell.iter(f"{_MAIN}t"))
    value = cell.find(f"{_MAIN}v")
    if value is None or value.text is None:
        return ""
    if kind == "s":
        return shared[int(value.text)]
    return value.text


def _first_sheet_part(archive: zipfile.ZipFile) -> str:
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    sheet = workbook.find(f"{_MAIN}sheets/{_MAIN}sheet")
    if sheet is None:
        raise ConnectomeDataError("the workbook lists no sheet")
    rel_id = sheet.get(f"{_RELS}id")
    rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    for rel in rels.iter(f"{_PACKAGE_RELS}Relationship"):
        if rel.get("Id") == rel_id:
            target = rel.get("Target", "").lstrip("/")
            return target if target.startswith("xl/") else f"xl/{target}"
    raise ConnectomeDataError(f"the workbook's first sheet (relationship {rel_id!r}) has no part")


def read_spreadsheet(source: str | Path | bytes) -> list[list[str]]:
    """The first sheet of an ``.xlsx`` workbook as rows of cell texts (missing cells are ``""``).

    Parameters
    ----------
    source
        A path to the workbook or its bytes.

    Returns
    -------
    list of list of str
        One list per row, in sheet order, each as long as the row's last filled cell.

    Raises
    ------
    ConnectomeDataError
        If the file is not a readable workbook.
    """
    what = "workbook bytes" if isinstance(source, bytes) else str(source)
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (OSError, zipfile.BadZipFile) as error:
        raise ConnectomeDataError(f"{what} is not an .xlsx workbook (a zip archive): {error}") from None
    try:
        with archive:
            names = set(archive.namelist())
            shared = []
            if "xl/sharedStrings.xml" in names:
                table = ElementTree.fromstring(archive.read("xl/sharedStrings.xml"))
                shared = ["".join(t.text or "" for t in item.iter(f"{_MAIN}t")) for item in table.findall(f"{_MAIN}si")]
            sheet = ElementTree.fromstring(archive.read(_first_sheet_part(archive)))
    except (KeyError, ElementTree.ParseError) as error:
        raise ConnectomeDataError(f"{what} is not a readable .xlsx workbook: {error}") from None
    rows = []
    for row in sheet.iter(f"{_MAIN}row"):
        cells: dict[int, str] = {}
        for position, cell in enumerate(row.findall(f"{_MAIN}c")):
            reference = cell.get("r")
            cells[_column_index(reference) if reference else position] = _cell_text(cell, shared)
        width = max(cells) + 1 if cells else 0
        rows.append([cells.get(i, "") for i in range(width)])
    return rows


# --------------------------------------------------------------------------- checking a table
def _check_table(rows: list[list[str]], what: str) -> pd.DataFrame:
    """Rows (header first) as a checked, sorted table of ``COLUMNS`` with integer counts >= 1."""
    if not rows:
        raise ConnectomeDataError(f"{what} is empty; expected a header {', '.join(COLUMNS)} and one row per connection")
    header = [cell.strip() for cell in rows[0]]
    if tuple(header[: len(COLUMNS)]) != COLUMNS or any(header[len(COLUMNS):]):
        raise ConnectomeDataError(f"{what} has columns {header}; expected exactly {list(COLUMNS)}")
    body = [row + [""] * (len(COLUMNS) - len(row)) for row in rows[1:] if any(cell.strip() for cell in row)]
    if not body:
        raise ConnectomeDataError(f"{what} has a header but no connections")
    table = pd.DataFrame([[cell.strip() for cell in row[: len(COLUMNS)]] for row in body], columns=list(COLUMNS))
    lines = pd.Series(range(2, len(table) + 2))
    empty = (table[["pre", "post"]] == "").any(axis=1)
    if empty.any():
        raise ConnectomeDataError(f"{what} has rows without a cell name (lines {list(lines[empty])[:8]})")
    unknown = ~table["type"].isin(SYNAPSE_TYPES)
    if unknown.any():
        raise ConnectomeDataError(
            f"{what} has synapse types {sorted(set(table['type'][unknown]))} (lines {list(lines[unknown])[:8]}); "
            f"accepted: {', '.join(SYNAPSE_TYPES)}")
    counts = pd.to_numeric(table["synapses"], errors="coerce")
    bad = counts.isna() | (counts < 1) | (counts != counts.round())
    if bad.any():
        examples = [f"line {ln}: {text!r}" for ln, text in zip(lines[bad], table["synapses"][bad])][:5]
        raise ConnectomeDataError(f"{what} has synapse counts that are not whole numbers >= 1 ({'; '.join(examples)})")
    table["synapses"] = counts.astype("int64")
    duplicated = table.duplicated(["pre", "post", "type"], keep=False)
    if duplicated.any():
        pairs = sorted({f"{a}->{b} ({t})" for a, b, t in table.loc[duplicated, ["pre", "post", "type"]].itertuples(index=False)})
        raise ConnectomeDataError(f"{what} lists connections more than once: {', '.join(pairs[:8])}")
    return table.sort_values(["type", "pre", "post"], kind="stable").reset_index(drop=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pinned_bytes(path: Path, sha256: str, missing: str, differs: Callable[[str], str]) -> bytes:
    """The bytes of ``path``, which must be a file (else the error ``missing``) with this sha256
    (else the error ``differs(found)``, given the file's sha256)."""
    if not path.is_file():
        raise ConnectomeDataError(missing)
    data = path.read_bytes()
    found = _sha256(data)
    if found != sha256:
        raise ConnectomeDataError(differs(found))
    return data


# --------------------------------------------------------------------------- the committed copy
def _manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise ConnectomeDataError(
            f"no {MANIFEST} in {folder}: the Witvliet data are missing; rebuild them with "
            "`python -m synaptic_geometry.experiments.connectome_data CECT_WHEEL` (see the module's docstring)")
    try:
        manifest = json.loads(path.read_text())
        [entry["csv"] for entry in manifest["animals"]]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConnectomeDataError(f"{path} is not a valid manifest ({error}); regenerate the data") from None
    return manifest


def data_version(folder: str | Path | None = None) -> str:
    """A short hash of the manifest, which records the sha256 of every CSV: it names the data in result keys."""
    folder = Path(folder) if folder is not None else DATA_DIR
    _manifest(folder)
    return _sha256((folder / MANIFEST).read_bytes())[:16]


def animals(folder: str | Path | None = None) -> pd.DataFrame:
    """The eight animals: ``dataset``, ``stage``, ``age_hours``, and per synapse type the number of
    connections and of synapses (``chemical_connections``, ``chemical_synapses``, and the same for
    electrical), from the committed copy."""
    folder = Path(folder) if folder is not None else DATA_DIR
    manifest = _manifest(folder)
    rows = []
    for entry in manifest["animals"]:
        table = _read_csv(folder, entry)
        row = {"dataset": int(entry["dataset"]), "stage": entry["stage"], "age_hours": float(entry["age_hours"])}
        for kind in SYNAPSE_TYPES:
            part = table[table["type"] == kind]
            row[f"{kind}_connections"] = len(part)
            row[f"{kind}_synapses"] = int(part["synapses"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _read_csv(folder: Path, entry: dict) -> pd.DataFrame:
    path = folder / entry["csv"]
    data = _pinned_bytes(
        path, entry["csv_sha256"], f"{path} is missing (listed in {folder / MANIFEST}); regenerate the data",
        lambda found: f"{path} differs from the file recorded in {MANIFEST} (sha256 {found[:12]}..., recorded "
                      f"{entry['csv_sha256'][:12]}...); it was modified: restore it or regenerate the data")
    try:
        rows = [line.split(",") for line in data.decode("utf-8").splitlines()]
    except UnicodeDecodeError as error:
        raise ConnectomeDataError(f"{path} is not UTF-8 text ({error})") from None
    return _check_table(rows, str(path))


def load_connections(
    dataset: int | Sequence[int] | None = None,
    synapse_type: str | None = "chemical",
    folder: str | Path | None = None,
) -> pd.DataFrame:
    """Connections of one or more animals from the committed copy, checked against the manifest.

    Parameters
    ----------
    dataset
        Dataset number(s) 1..8, or None for all eight.
    synapse_type
        ``"chemical"``, ``"electrical"`` or None for both.
    folder
        The data folder (default: the package's copy).

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset``, ``pre``, ``post``, ``type``, ``synapses`` (int, >= 1); one row per
        animal and connection, sorted by dataset, type, pre, post.

    Raises
    ------
    ConnectomeDataError
        For an unknown dataset or synapse type, or a missing, modified or malformed file.
    """
    folder = Path(folder) if folder is not None else DATA_DIR
    manifest = _manifest(folder)
    known = {int(entry["dataset"]): entry for entry in manifest["animals"]}
    wanted = sorted(known) if dataset is None else [dataset] if isinstance(dataset, int) else list(dataset)
    unknown = [d for d in wanted if d not in known]
    if unknown or not wanted:
        raise ConnectomeDataError(f"unknown dataset(s) {unknown or wanted}; known: {sorted(known)}")
    if synapse_type is not None and synapse_type not in SYNAPSE_TYPES:
        raise ConnectomeDataError(f"unknown synapse type {synapse_type!r}; accepted: {', '.join(SYNAPSE_TYPES)} or None")
    parts = []
    for number in wanted:
        table = _read_csv(folder, known[number])
        if synapse_type is not None:
            table = table[table["type"] == synapse_type]
        parts.append(table.assign(dataset=number))
    return pd.concat(parts, ignore_index=True)[["dataset", *COLUMNS]]


# --------------------------------------------------------------------------- regeneration
def _csv_bytes(table: pd.DataFrame) -> bytes:
    for column in ("pre", "post"):
        if table[column].str.contains(r'[,"\n]').any():
            raise ConnectomeDataError(f"a cell name contains a comma, quote or newline; this CSV format has no quoting")
    lines = [",".join(COLUMNS)] + [f"{a},{b},{t},{n}" for a, b, t, n in table[list(COLUMNS)].itertuples(index=False)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def regenerate(wheel: str | Path, folder: str | Path | None = None) -> dict:
    """Rebuild the committed copy from the toolbox's wheel: one CSV per animal and the manifest.

    Parameters
    ----------
    wheel
        Path to ``cect-0.3.5-py3-none-any.whl`` (``pip download cect==0.3.5 --no-deps``); its
        sha256 must be the one recorded in :data:`WHEEL`.
    folder
        Where to write (default: the package's data folder). Files are written atomically.

    Returns
    -------
    dict
        The manifest that was written.
    """
    wheel = Path(wheel)
    folder = Path(folder) if folder is not None else DATA_DIR
    data = _pinned_bytes(
        wheel, WHEEL["sha256"], f"{wheel} does not exist; download it with `pip download cect==0.3.5 --no-deps`",
        lambda found: f"{wheel} has sha256 {found}, not the pinned {WHEEL['sha256']} of {WHEEL['name']}; use that exact file")
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        licence = next((n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")), None)
        if licence is None:
            raise ConnectomeDataError(f"{wheel} holds no licence file")
        licence_text = archive.read(licence)
        for animal in ANIMALS:
            try:
                workbook = archive.read(animal.member)
            except KeyError:
                raise ConnectomeDataError(f"{wheel} has no member {animal.member!r}") from None
            table = _check_table(read_spreadsheet(workbook), f"{wheel.name}:{animal.member}")
            csv = _csv_bytes(table)
            atomic_write_bytes(folder / animal.csv_name, csv)
            entries.append({
                "dataset": animal.dataset, "stage": animal.stage, "age_hours": animal.age_hours,
                "member": animal.member, "member_sha256": _sha256(workbook),
                "csv": animal.csv_name, "csv_sha256": _sha256(csv), "rows": len(table),
            })
    atomic_write_bytes(folder / LICENCE_FILE, licence_text)
    manifest = {
        "description": "Chemical and electrical synapse counts per pair of identified cells in the brains of eight "
                       "C. elegans hermaphrodites from birth to adulthood, one CSV per animal "
                       "(columns pre, post, type, synapses), derived without change from the spreadsheets of the toolbox.",
        "citation": CITATION,
        "doi": "10.1038/s41586-021-03778-8",
        "source": {**WHEEL, "toolbox": TOOLBOX, "licence": "MIT", "licence_file": LICENCE_FILE,
                   "licence_member": licence},
        "ages": "hours after birth, as given for the datasets by the authors (Witvliet et al. 2021, Fig. 1; "
                "NemaNode dataset descriptions)",
        "counts": "integer number of presynaptic active zones between two cells agreed by at least two of three "
                  "annotators; electrical synapses were only partially annotated (Witvliet et al. 2021)",
        "derivation": "pip download cect==0.3.5 --no-deps -d DIR && "
                      "python -m synaptic_geometry.experiments.connectome_data DIR/cect-0.3.5-py3-none-any.whl",
        "animals": entries,
    }
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m synaptic_geometry.experiments.connectome_data WHEEL [--out FOLDER]``."""
    parser = argparse.ArgumentParser(
        prog="python -m synaptic_geometry.experiments.connectome_data",
        description="Rebuild the Witvliet et al. (2021) CSVs and manifest from the cect 0.3.5 wheel.")
    parser.add_argument("wheel", help="path to cect-0.3.5-py3-none-any.whl (pip download cect==0.3.5 --no-deps)")
    parser.add_argument("--out", help="output folder (default: the package's data folder)")
    args = parser.parse_args(argv)
    try:
        manifest = regenerate(args.wheel, args.out)
    except ConnectomeDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for entry in manifest["animals"]:
        print(f"{entry['csv']}: {entry['rows']} connections ({entry['stage']}, {entry['age_hours']:g} h)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
