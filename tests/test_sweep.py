"""Tests of the sweep runner: resumption after a kill, failure summary, executors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import kill_when
from synaptic_geometry.infra import sweep

JOB_MODULE = '''
import os, time, uuid
from pathlib import Path
import numpy as np
from synaptic_geometry.infra.store import experiment

@experiment("demo")
def job(i, fail=False):
    markers = Path(os.environ["SWEEP_MARKERS"])
    markers.mkdir(parents=True, exist_ok=True)
    (markers / f"{i}-{uuid.uuid4().hex}").write_text(str(os.getpid()))
    if fail:
        raise RuntimeError(f"job {i} failed on purpose")
    time.sleep(float(os.environ.get("SWEEP_SLEEP", "0")) if i > 0 else 0.0)
    return {"value": np.array(i ** 2)}

def plain(i):
    return {"value": np.array(i)}
'''


@pytest.fixture
def job_env(tmp_path, monkeypatch):
    (tmp_path / "sweepjobs.py").write_text(JOB_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SWEEP_MARKERS", str(tmp_path / "markers"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return tmp_path


def starts(tmp_path: Path, i: int) -> int:
    folder = tmp_path / "markers"
    return len(list(folder.glob(f"{i}-*"))) if folder.exists() else 0


def test_serial_sweep_computes_then_skips(job_env):
    jobs = [{"i": i} for i in range(3)]
    first = sweep.run_sweep("sweepjobs:job", jobs, root=job_env / "store", executor="serial", progress=False)
    assert (first.n_computed, first.n_cached, first.failures) == (3, 0, [])
    second = sweep.run_sweep("sweepjobs:job", jobs, root=job_env / "store", executor="serial", progress=False)
    assert (second.n_computed, second.n_cached) == (0, 3)
    assert [starts(job_env, i) for i in range(3)] == [1, 1, 1]


def test_failure_recorded_and_sweep_continues(job_env):
    jobs = [{"i": 0}, {"i": 1, "fail": True}, {"i": 2}]
    result = sweep.run_sweep("sweepjobs:job", jobs, root=job_env / "store", executor="serial", progress=False)
    assert result.n_computed == 2 and len(result.failures) == 1
    assert "failed on purpose" in result.failures[0]["error"]
    assert "FAILED" in result.summary() and "i=1" in result.summary()
    assert (job_env / "store" / "sweeps" / "demo-failures.json").exists()
    assert not sweep.is_done("sweepjobs:job", jobs[1], job_env / "store")


def test_kill_and_resume(job_env):
    """A sweep killed during its second job resumes without recomputing the first."""
    jobs = [{"i": i} for i in range(3)]
    root = job_env / "store"
    script = textwrap.dedent(f"""
        from synaptic_geometry.infra import sweep
        sweep.run_sweep("sweepjobs:job", {jobs!r}, root={str(root)!r}, executor="serial", progress=False)
    """)
    env = {**os.environ, "SWEEP_SLEEP": "60"}
    kill_when(script, lambda: sweep.is_done("sweepjobs:job", jobs[0], root) and starts(job_env, 1) == 1,
              timeout=60, env=env)
    assert not sweep.is_done("sweepjobs:job", jobs[1], root)  # killed mid-job: nothing that looks finished
    result = sweep.run_sweep("sweepjobs:job", jobs, root=root, executor="serial", progress=False)
    assert (result.n_cached, result.n_computed) == (1, 2)
    assert starts(job_env, 0) == 1  # the finished job was not redone
    assert starts(job_env, 1) == 2  # the killed one was
    assert all(sweep.is_done("sweepjobs:job", job, root) for job in jobs)


def test_local_processes(job_env):
    jobs = [{"i": i} for i in range(3)]
    result = sweep.run_sweep("sweepjobs:job", jobs, root=job_env / "store", executor="local", workers=2,
                             progress=False)
    assert (result.n_computed, result.failures) == (3, [])
    import sweepjobs

    data = np.load(sweepjobs.job.path(**jobs[2], root=job_env / "store"), allow_pickle=False)
    assert int(data["value"]) == 4


def _marker_pids(tmp_path: Path) -> set[int]:
    """Process ids written in the job markers so far."""
    folder = tmp_path / "markers"
    texts = [marker.read_text() for marker in folder.iterdir()] if folder.exists() else []
    return {int(text) for text in texts if text}


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping is left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_local_workers_end_with_the_sweep_process(job_env):
    """Killing the process that runs a local sweep (and only it) ends its workers: the jobs they
    were running stop, and no queued job starts."""
    jobs = [{"i": i} for i in range(1, 7)]
    root = job_env / "store"
    script = textwrap.dedent(f"""
        from synaptic_geometry.infra import sweep
        if __name__ == "__main__":
            sweep.run_sweep("sweepjobs:job", {jobs!r}, root={str(root)!r}, executor="local", workers=2,
                            progress=False)
    """)
    (job_env / "sweep_main.py").write_text(script)
    env = {**os.environ, "SWEEP_SLEEP": "60"}
    proc = subprocess.Popen([sys.executable, str(job_env / "sweep_main.py")], env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(workers := _marker_pids(job_env)) < 2:  # a marker may be read before its pid is written
            assert proc.poll() is None and time.time() < deadline, "the two workers did not start their jobs"
            time.sleep(0.05)
        assert len(workers) == 2 and proc.pid not in workers
        proc.kill()  # the sweep's process only, not its group
        proc.wait()
        deadline = time.time() + 10 * sweep.PARENT_POLL_SECONDS + 5
        while any(_running(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in workers), "a worker outlived the sweep's process"
        assert sum(starts(job_env, job["i"]) for job in jobs) == 2  # no queued job started
        assert not any(sweep.is_done("sweepjobs:job", job, root) for job in jobs)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group, on failure
        except ProcessLookupError:
            pass


def test_submitit_local_executor(job_env):
    jobs = [{"i": 0}, {"i": 1, "fail": True}]
    result = sweep.run_sweep("sweepjobs:job", jobs, root=job_env / "store", executor="submitit",
                             cluster="local", executor_options={"timeout_min": 2}, progress=False)
    assert result.n_computed == 1 and len(result.failures) == 1
    assert sweep.is_done("sweepjobs:job", jobs[0], job_env / "store")


def test_bad_input(job_env):
    with pytest.raises(ValueError, match="unknown executor"):
        sweep.run_sweep("sweepjobs:job", [{"i": 0}], root=job_env, executor="cloud")
    with pytest.raises(ValueError, match="module:function"):
        sweep.resolve("no_colon")
    with pytest.raises(TypeError, match="not a cached experiment"):
        sweep.run_sweep("sweepjobs:plain", [{"i": 0}], root=job_env, executor="serial")
    with pytest.raises(TypeError, match="demo"):  # a parameter the experiment does not take
        sweep.run_sweep("sweepjobs:job", [{"j": 0}], root=job_env, executor="serial")
    with pytest.raises(TypeError, match="JSON"):
        sweep.run_sweep("sweepjobs:job", [{"i": object()}], root=job_env, executor="serial")


SLOW_JOB_MODULE = '''
import os, time
from pathlib import Path
import numpy as np
from synaptic_geometry.infra.store import experiment

@experiment("array_demo")
def job(i):
    markers = Path(os.environ["SWEEP_MARKERS"])
    markers.mkdir(parents=True, exist_ok=True)
    (markers / f"{i}-{os.getpid()}").write_text(str(os.getpid()))
    if str(i) == os.environ.get("SWEEP_SLOW", ""):
        time.sleep(120)
    return {"value": np.array(i ** 2)}
'''


def test_submitit_killed_array_task_resumes(job_env, monkeypatch):
    """An array of 3 tasks on submitit's local executor; task 1 is killed (SIGKILL) while the
    others finish. The sweep records the lost task; rerunning it runs that task only, and the
    results of the others are intact (same bytes, loaded, not recomputed)."""
    import threading

    (job_env / "arrayjobs.py").write_text(SLOW_JOB_MODULE)
    monkeypatch.setenv("SWEEP_SLOW", "1")
    jobs = [{"i": i} for i in range(3)]
    root = job_env / "store"
    options = {"timeout_min": 3}
    outcome = {}

    def first_run():
        outcome["result"] = sweep.run_sweep("arrayjobs:job", jobs, root=root, executor="submitit", workers=3,
                                            cluster="local", executor_options=options, progress=False)

    thread = threading.Thread(target=first_run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not (sweep.is_done("arrayjobs:job", jobs[0], root) and sweep.is_done("arrayjobs:job", jobs[2], root)
               and starts(job_env, 1) == 1):
        assert thread.is_alive() and time.time() < deadline, "the array's tasks did not start and finish in time"
        time.sleep(0.1)
    pid = int(next((job_env / "markers").glob("1-*")).read_text())
    os.kill(pid, signal.SIGKILL)  # the task dies as on a node failure: no result, nothing half-written
    thread.join(timeout=60)
    assert not thread.is_alive()
    killed = outcome["result"]
    assert (killed.n_computed, len(killed.failures)) == (2, 1)
    assert "i=1" in killed.failures[0]["label"] and "failed" in killed.failures[0]["error"]
    assert not sweep.is_done("arrayjobs:job", jobs[1], root)
    import arrayjobs

    kept = {i: arrayjobs.job.path(i=i, root=root).read_bytes() for i in (0, 2)}

    monkeypatch.delenv("SWEEP_SLOW")
    resumed = sweep.run_sweep("arrayjobs:job", jobs, root=root, executor="submitit", workers=3, cluster="local",
                              executor_options=options, progress=False)
    assert (resumed.n_cached, resumed.n_computed, resumed.failures) == (2, 1, [])
    assert [starts(job_env, i) for i in range(3)] == [1, 2, 1]  # only the killed task ran again
    assert all(arrayjobs.job.path(i=i, root=root).read_bytes() == kept[i] for i in (0, 2))
    values = [int(np.load(arrayjobs.job.path(i=i, root=root), allow_pickle=False)["value"]) for i in range(3)]
    assert values == [0, 1, 4]


def test_submitit_options_from_the_environment(job_env, monkeypatch):
    """$SYNAPTIC_GEOMETRY_SUBMITIT reaches submitit's parameters; explicit options win; bad JSON is refused."""
    import submitit

    seen = {}
    original = submitit.AutoExecutor.update_parameters

    def record(self, **kwargs):
        seen.update(kwargs)
        return original(self, **kwargs)

    monkeypatch.setattr(submitit.AutoExecutor, "update_parameters", record)
    monkeypatch.setenv(sweep.SUBMITIT_ENV, '{"timeout_min": 3, "slurm_partition": "gpu", "gpus_per_node": 0}')
    result = sweep.run_sweep("sweepjobs:job", [{"i": 0}], root=job_env / "store", executor="submitit", workers=4,
                             cluster="local", executor_options={"gpus_per_node": 0, "timeout_min": 2}, progress=False)
    assert result.ok and result.n_computed == 1
    assert seen == {"slurm_array_parallelism": 4, "timeout_min": 2, "slurm_partition": "gpu", "gpus_per_node": 0}
    monkeypatch.setenv(sweep.SUBMITIT_ENV, "timeout=3")
    with pytest.raises(ValueError, match="JSON object"):
        sweep.submitit_options_from_env()
    monkeypatch.setenv(sweep.SUBMITIT_ENV, "[1]")
    with pytest.raises(ValueError, match="JSON object"):
        sweep.submitit_options_from_env()
