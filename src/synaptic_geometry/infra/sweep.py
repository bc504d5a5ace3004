"""A resumable sweep runner: independent jobs, results in the store, local processes or SLURM.

A sweep runs one cached experiment (a function declared with
:func:`synaptic_geometry.infra.store.experiment`, or a ``"module:function"`` string naming one)
on many jobs: each job is a dict of the experiment's keyword parameters (JSON values), and its
result is the experiment's stored result, ``<root>/<name>/<key>.npz``. The store writes under a
temporary name and renames, so a job is *done* exactly when its ``.npz`` exists, and a job killed
half-way leaves nothing that looks finished. Rerunning a sweep skips done jobs and runs the rest.

Executors: ``"serial"`` (in this process), ``"local"`` (a ``ProcessPoolExecutor`` on local cores)
and ``"submitit"`` (SLURM through submitit; ``cluster="local"`` runs submitit's local executor,
which is how the tests exercise that path; scheduler settings such as the time limit and GPUs
per task come from ``executor_options`` or ``$SYNAPTIC_GEOMETRY_SUBMITIT``). A failing job is recorded with its error and
traceback, the sweep goes on, and :meth:`SweepResult.summary` lists the failures.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import json
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from synaptic_geometry.infra import store

EXECUTORS = ("serial", "local", "submitit")
PARENT_POLL_SECONDS = 1.0  # how often a local worker checks that the sweep's process is still there
SUBMITIT_ENV = "SYNAPTIC_GEOMETRY_SUBMITIT"  # JSON submitit parameters for every array (see submitit_options_from_env)
Experiment = Callable[..., store.StoredResult]


def resolve(fn: Experiment | str) -> Experiment:
    """An experiment from itself or a ``"module:function"`` string naming one."""
    if isinstance(fn, str):
        module, _, name = fn.partition(":")
        if not module or not name:
            raise ValueError(f"experiment {fn!r} must be an experiment or 'module:function'")
        fn = getattr(importlib.import_module(module), name)
    if not callable(fn) or not hasattr(fn, "experiment_name"):
        raise TypeError(f"{fn!r} is not a cached experiment; declare it with @synaptic_geometry.infra.store.experiment")
    return fn


def is_done(fn: Experiment | str, params: dict, root: str | Path | None = None) -> bool:
    """True if the job's result is in the store (written atomically, so never half-written)."""
    return resolve(fn).path(**params, root=root).exists()


def run_job(fn: Experiment | str, params: dict, root: str | None = None, threads: int | None = None,
            code_version: str | None = None) -> dict:
    """Run one job through the store; returns a status record instead of raising.

    ``code_version`` is the experiment's at the start of the sweep; a worker that sees different
    source (edited since) refuses the job, since its result would be stored under a key nobody asks for.
    """
    start = time.time()
    try:
        experiment = resolve(fn)
        if code_version is not None and experiment.version() != code_version:
            return {"ok": False, "seconds": 0.0, "error": f"source changed since the sweep started "
                    f"(code version {experiment.version()}, sweep {code_version}); rerun the sweep"}
        if threads is not None:
            torch.set_num_threads(threads)
        experiment(**params, root=root)
        return {"ok": True, "seconds": time.time() - start}
    except Exception as error:  # recorded, the sweep continues
        return {"ok": False, "seconds": time.time() - start, "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()}


@dataclass
class SweepResult:
    """What a sweep did: jobs found done, jobs computed, and failures with their errors."""

    name: str
    n_jobs: int
    n_cached: int = 0
    n_computed: int = 0
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [f"sweep {self.name!r}: {self.n_jobs} jobs, {self.n_cached} already done, "
                 f"{self.n_computed} computed, {len(self.failures)} failed, {self.seconds:.1f} s"]
        lines += [f"  FAILED {f['label']}: {f['error']}" for f in self.failures]
        return "\n".join(lines)


def _label(params: dict, keys: Sequence[str] | None) -> str:
    nested = {k: v for value in params.values() if isinstance(value, dict) for k, v in value.items()}
    params = {**nested, **{k: v for k, v in params.items() if not isinstance(v, dict)}}
    keys = keys or [k for k, v in params.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)][:4]
    return " ".join(f"{k}={params[k]}" for k in keys if k in params)


def run_sweep(fn: Experiment | str, jobs: Sequence[dict], root: str | Path | None = None,
              executor: str = "local", workers: int = 1, threads: int | None = 1, progress: bool = True,
              label_keys: Sequence[str] | None = None, cluster: str | None = None,
              executor_options: dict | None = None) -> SweepResult:
    """Run the experiment ``fn`` on every job not yet in the store; see the module docstring.

    ``workers`` processes (``"local"``) or array tasks in flight (``"submitit"``); each job sets
    torch to ``threads`` threads. ``cluster`` and ``executor_options`` go to ``submitit.AutoExecutor``
    and its ``update_parameters`` (e.g. ``{"slurm_partition": "gpu", "timeout_min": 120}``).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}")
    experiment = resolve(fn)
    name = experiment.experiment_name
    root = Path(root) if root is not None else store.default_root()  # workers must not guess it
    root_str = str(root)
    version = experiment.version()
    start = time.time()
    result = SweepResult(name, len(jobs))
    todo = []
    for params in jobs:
        experiment.key(**params)  # validates parameters and JSON now, not inside a worker
        if is_done(experiment, params, root):
            result.n_cached += 1
        else:
            todo.append(params)
    bar = _progress_bar(len(jobs), result.n_cached, name, progress)

    def record(params: dict, status: dict) -> None:
        if status["ok"]:
            result.n_computed += 1
        else:
            result.failures.append({"label": _label(params, label_keys), "params": params,
                                    "error": status["error"], "traceback": status.get("traceback", "")})
        bar.update(1)

    if executor == "serial":
        for params in todo:
            record(params, run_job(fn, params, root_str, threads, version))
    elif executor == "local":
        context = multiprocessing.get_context("spawn")  # fork after torch threads start can deadlock
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with_parent,
                                    initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(run_job, fn, params, root_str, threads, version): params for params in todo}
            for future in cf.as_completed(futures):
                try:
                    status = future.result()
                except Exception as error:  # the worker process itself died
                    status = {"ok": False, "error": f"worker died: {type(error).__name__}: {error}"}
                record(futures[future], status)
    else:  # slurm_* options are ignored by the other clusters
        options = {"slurm_array_parallelism": workers, **submitit_options_from_env(), **(executor_options or {})}
        _run_submitit(fn, name, todo, root, root_str, threads, cluster, options, record, version)
    bar.close()
    result.seconds = time.time() - start
    if result.failures:
        _write_failures(name, root, result.failures)
    return result


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker as soon as the process that started it (``parent``) is gone.

    Without it, a sweep whose process is killed (say, a notebook kernel whose build was stopped)
    leaves its workers running the jobs already queued to them, sharing the machine with whatever
    runs next. The job a worker was in the middle of is lost, and stored results stay valid (the
    store writes atomically)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def submitit_options_from_env() -> dict:
    """submitit parameters from ``$SYNAPTIC_GEOMETRY_SUBMITIT`` (a JSON object; empty if unset).

    This is how the book build (whose machine flags have no place for a scheduler's settings)
    gets a time limit, GPUs and a partition to every array it submits, e.g.
    ``{"timeout_min": 240, "gpus_per_node": 1, "slurm_partition": "gpu"}``; options passed to
    :func:`run_sweep` as ``executor_options`` take precedence.
    """
    text = os.environ.get(SUBMITIT_ENV, "").strip()
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"${SUBMITIT_ENV} must be a JSON object of submitit parameters; got {text!r} ({error})") from None
    if not isinstance(options, dict):
        raise ValueError(f"${SUBMITIT_ENV} must be a JSON object of submitit parameters, got {type(options).__name__}")
    return options


def _run_submitit(fn, name, todo, root, root_str, threads, cluster, options, record, version) -> None:
    """Submit every job through submitit (one array) and record results as they finish."""
    import submitit

    folder = (Path(root) if root is not None else store.default_root()) / "submitit" / name
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**options)
    with executor.batch():  # one job array on SLURM
        jobs = [(executor.submit(run_job, fn, params, root_str, threads, version), params) for params in todo]
    pending = list(jobs)
    while pending:
        still = []
        for job, params in pending:
            if job.done():
                try:
                    status = job.result()
                except Exception as error:  # the job crashed outside run_job (killed, timed out)
                    status = {"ok": False, "error": f"submitit job {job.job_id} failed: {type(error).__name__}: {error}"}
                record(params, status)
            else:
                still.append((job, params))
        pending = still
        if pending:
            time.sleep(0.5)


def _progress_bar(total: int, done: int, name: str, enabled: bool):
    return tqdm(total=total, initial=done, desc=name, disable=not enabled, leave=True)


def _write_failures(name: str, root, failures: list[dict]) -> None:
    folder = (Path(root) if root is not None else store.default_root()) / "sweeps"
    text = json.dumps({"name": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "failures": failures},
                      indent=2, default=str)
    store.atomic_write_bytes(folder / f"{name}-failures.json", text.encode())
