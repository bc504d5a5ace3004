"""The project's install files agree with each other."""

import re
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
