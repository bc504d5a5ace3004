"""Profiles, parameter checks and failure reporting of the papermill pipeline."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from synaptic_geometry.book import build as pipeline
from synaptic_geometry.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_every_notebook_is_a_chapter_of_the_book():
    on_disk = sorted(p.stem for p in (REPO / "notebooks").glob("*.md"))
    assert sorted(pipeline.chapters(REPO)) == on_disk


@pytest.mark.parametrize("chapter", pipeline.chapters(REPO))
@pytest.mark.parametrize("profile", pipeline.PROFILES)
def test_profiles_only_set_declared_parameters(chapter, profile):
    params = pipeline.load_profile(chapter, profile)
    assert params["profile"] == profile
    pipeline.check_parameters(chapter, params, REPO)  # raises on an unknown name


@pytest.mark.parametrize("chapter", pipeline.chapters(REPO))
def test_parameters_cell_holds_the_default_profile(chapter):
    declared = pipeline.notebook_parameters(chapter, REPO)
    assert declared["profile"] == "default"
    assert declared["machine"] == pipeline.load_machine("default")
    for name, value in pipeline.load_profile(chapter, "default").items():
        assert declared[name] == value, f"{chapter}: parameters cell has {name}={declared[name]!r}, default profile {value!r}"


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(pipeline.PipelineError, match="valid profiles: tiny, default, paper"):
        pipeline.load_profile("mirror_descent", "huge")


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(pipeline.PipelineError, match=r"unknown parameter\(s\) widht .*valid: .*width"):
        pipeline.check_parameters("mirror_descent", {"widht": 3}, REPO)


def test_unknown_chapter_is_refused():
    with pytest.raises(pipeline.PipelineError, match="unknown chapter 'nope'"):
        pipeline.execute("nope", "tiny", root=REPO)


def _scratch_project(tmp_path, monkeypatch, body: str) -> Path:
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_config.yml").write_text("title: scratch\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: book/broken\n")
    header = "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
    header += "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n\n# Broken\n\n"
    cells = "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = 'default'\nmachine = {}\nn = 1\n```\n\n" + body
    (tmp_path / "notebooks" / "broken.md").write_text(header + cells)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "broken.yml").write_text(yaml.safe_dump({"tiny": {"n": 0}, "default": {"n": 1}, "paper": {"n": 2}}))
    shutil.copy(pipeline.PROFILE_DIR / "machine.yml", profiles / "machine.yml")
    monkeypatch.setattr(pipeline, "PROFILE_DIR", profiles)
    return tmp_path


def test_a_failing_notebook_names_its_cell_and_is_not_published(tmp_path, monkeypatch):
    body = textwrap.dedent("""\
        ```{code-cell} ipython3
        x = 1
        ```

        ```{code-cell} ipython3
        1 / n
        ```
        """)
    root = _scratch_project(tmp_path, monkeypatch, body)
    out = tmp_path / "out"
    with pytest.raises(pipeline.PipelineError) as error:
        pipeline.execute("broken", "tiny", out_dir=out, results_root=tmp_path / "results", root=root)
    message = str(error.value)
    assert "'broken'" in message and "'tiny'" in message and "ZeroDivisionError" in message
    assert "code cell" in message
    assert not (out / "broken.ipynb").exists()
    assert (root / "_build" / "failed" / "broken.ipynb").exists()


def test_profile_values_are_injected(tmp_path, monkeypatch):
    import nbformat

    body = "```{code-cell} ipython3\nassert n == 2 and profile == 'paper'\n```\n"
    root = _scratch_project(tmp_path, monkeypatch, body)
    done = pipeline.execute("broken", "paper", out_dir=tmp_path / "out", results_root=tmp_path / "r", root=root)
    notebook = nbformat.read(done.path, as_version=4)
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "n = 2" in injected[0].source


def test_cli_reports_errors_with_exit_code(capsys):
    assert main(["book", "execute", "--profile", "tiny", "--chapter", "nope"]) == 1
    assert "unknown chapter" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    with pytest.raises(SystemExit):
        main(["book", "build", "--profile", "huge"])


def test_console_script_dispatches_identify(tmp_path, capsys):
    assert main(["identify", str(tmp_path / "missing.csv"), str(tmp_path / "other.csv")]) == 1
    assert "missing.csv" in capsys.readouterr().err
    script = Path(sys.executable).parent / "synaptic-geometry"
    listing = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert listing.returncode == 0 and "identify" in listing.stdout and "book" in listing.stdout


@pytest.mark.parametrize("chapter", pipeline.chapters(REPO))
def test_every_parameter_has_a_meaning(chapter):
    declared = set(pipeline.notebook_parameters(chapter, REPO)) - {"profile", "machine"}
    assert set(pipeline.load_meanings(chapter)) == declared


def test_machine_settings_are_validated_and_overridable():
    assert pipeline.load_machine("tiny")["executor"] == "serial"
    assert pipeline.load_machine("default", {"workers": 4, "device": None})["workers"] == 4
    with pytest.raises(pipeline.PipelineError, match="known: serial, local, submitit"):
        pipeline.load_machine("default", {"executor": "mpi"})
    with pytest.raises(pipeline.PipelineError, match="positive integer"):
        pipeline.load_machine("default", {"workers": 0})
    with pytest.raises(pipeline.PipelineError, match="unknown machine setting"):
        pipeline.load_machine("default", {"gpus": 2})


def test_imported_modules_lists_package_modules_of_code_cells():
    source = (REPO / "notebooks" / "mirror_descent.md").read_text()
    modules = pipeline.imported_modules(source)
    assert "synaptic_geometry.potentials" in modules
    assert all(name.startswith("synaptic_geometry.") for name in modules)


def test_unchanged_chapter_is_not_reexecuted_and_a_changed_parameter_is(tmp_path, monkeypatch):
    body = "```{code-cell} ipython3\nimport time\nprint(time.time())\n```\n"
    root = _scratch_project(tmp_path, monkeypatch, body)
    out = tmp_path / "out"
    first = pipeline.execute("broken", "tiny", out_dir=out, results_root=tmp_path / "r", root=root)
    again = pipeline.execute("broken", "tiny", out_dir=out, results_root=tmp_path / "r", root=root,
                             machine={"workers": 3})  # machine settings do not count
    assert not first.reused and again.reused
    changed = pipeline.execute("broken", "tiny", out_dir=out, results_root=tmp_path / "r", root=root, overrides={"n": 5})
    assert not changed.reused
    forced = pipeline.execute("broken", "tiny", out_dir=out, results_root=tmp_path / "r", root=root,
                              overrides={"n": 5}, force=True)
    assert not forced.reused


def test_parameter_cells_are_hidden_from_the_book(tmp_path, monkeypatch):
    import nbformat

    root = _scratch_project(tmp_path, monkeypatch, "```{code-cell} ipython3\nx = n\n```\n")
    done = pipeline.execute("broken", "tiny", out_dir=tmp_path / "out", results_root=tmp_path / "r", root=root)
    notebook = nbformat.read(done.path, as_version=4)
    hidden = [c for c in notebook.cells if {"parameters", "injected-parameters"} & set(c.metadata.get("tags", []))]
    assert len(hidden) == 2 and all("remove-cell" in c.metadata["tags"] for c in hidden)


def _timed_chapter(chapter: str, profile: str, log: str) -> "pipeline.Executed":
    """A stand-in for ``execute``: sleeps, records its interval, fails for the chapter 'bad'."""
    import time

    start = time.time()
    time.sleep(0.5)
    if chapter == "bad":
        raise pipeline.PipelineError(f"notebook {chapter!r} failed")
    Path(log, chapter).write_text(f"{start} {time.time()}")
    return pipeline.Executed(chapter, Path(log, chapter), time.time() - start)


def _intervals(log: Path, names: list[str]) -> list[tuple[float, float]]:
    return [tuple(map(float, (log / name).read_text().split())) for name in names]


def test_chapters_execute_jobs_at_a_time(tmp_path):
    names = ["a", "b"]
    for jobs, overlap in ((2, True), (1, False)):
        log = tmp_path / str(jobs)
        log.mkdir()
        done = list(pipeline.execute_chapters(names, "tiny", jobs, run=_timed_chapter, log=str(log)))
        assert sorted(d.chapter for d in done) == names
        (a0, a1), (b0, b1) = _intervals(log, names)
        assert (max(a0, b0) < min(a1, b1)) is overlap


def test_longest_chapters_start_first():
    toc = pipeline.chapters()
    order = pipeline.start_order(toc)
    assert sorted(order) == sorted(toc) and order[:len(pipeline.LONGEST_FIRST)] == list(pipeline.LONGEST_FIRST)
    assert pipeline.start_order(["mirror_descent", "spiking", "biology", "deep_networks"]) == \
        ["deep_networks", "spiking", "mirror_descent", "biology"]  # the rest keep their order
    assert set(pipeline.LONGEST_FIRST) <= set(toc)  # no stale name


def test_a_failed_chapter_stops_a_parallel_build(tmp_path):
    with pytest.raises(pipeline.PipelineError, match="'bad' failed"):
        list(pipeline.execute_chapters(["bad", "a"], "tiny", 2, run=_timed_chapter, log=str(tmp_path)))
    with pytest.raises(pipeline.PipelineError, match="jobs must be a positive integer"):
        pipeline.build("tiny", jobs=0)


def test_each_kernel_has_its_own_socket_path():
    first, second = pipeline.QuietKernelManager(), pipeline.QuietKernelManager()
    assert first.transport == second.transport == "ipc"
    assert first.ip != second.ip and Path(first.ip).is_absolute()
