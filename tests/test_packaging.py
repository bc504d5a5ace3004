"""The project's install files agree with each other."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["test"])


def test_environment_yml_pins_the_same_packages_as_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip_section) == _pyproject_requirements()


def test_every_requirement_is_pinned_and_torch_is_the_cpu_release():
    requirements = _pyproject_requirements()
    unpinned = [r for r in requirements if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.+]*", r)]
    assert not unpinned, f"unpinned requirements: {unpinned}"
    assert "torch==2.13.0" in requirements
    assert "jupyter-book==1.0.4.post1" in requirements


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def _check_schema(schema: str, path: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run([str(script), "--builtin-schema", schema, str(path)], capture_output=True, text=True)


def test_publishing_workflow_is_a_valid_github_workflow_that_builds_the_book():
    workflow = REPO / ".github" / "workflows" / "book.yml"
    checked = _check_schema("vendor.github-workflows", workflow)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    spec = yaml.safe_load(workflow.read_text())
    steps = spec["jobs"]["build"]["steps"]
    assert any(step.get("run") == "make book" for step in steps)
    upload = next(step for step in steps if str(step.get("uses", "")).startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert spec[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads the key `on` as True
    assert "deploy-pages" in str(spec["jobs"]["deploy"]["steps"])


def test_a_broken_workflow_is_refused(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("name: x\non: push\njobs:\n  build:\n    steps: []\n")  # no runs-on
    assert _check_schema("vendor.github-workflows", broken).returncode != 0


def test_citation_file_is_valid():
    checked = _check_schema("vendor.citation-file-format", REPO / "CITATION.cff")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_bibliography_parses_with_unique_keys():
    import pybtex.database

    text = (REPO / "book" / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", text, flags=re.M)
    assert len(keys) == len(set(keys)), "duplicate BibTeX keys"
    entries = pybtex.database.parse_string(text, "bibtex").entries
    assert set(entries) == set(keys)
    for key, entry in entries.items():
        assert "title" in entry.fields and "year" in entry.fields, f"{key} lacks a title or year"
