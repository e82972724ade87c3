"""Run ``dtl rslocal`` as a subprocess in one engine layout and sample the memory of its processes by role.

A layout string names how the search runs (paper section 2.3.2, issue 10):

``inprocess:T``   this process on T threads (``--workers 0 --threads T``)
``local:WxT``     a Dask LocalCluster of W worker processes with T threads each (``--workers W --threads T``)
``mpiexec:NxT``   ``mpiexec -n N`` with dask-mpi: rank 0 scheduler, rank 1 driver, N - 2 worker ranks of T threads

Every 0.5 s the resident (RSS) and proportional (PSS: shared pages split between the processes that map them,
so their sum is what the node holds) memory of each process is read and attributed to a role: ``driver``
(the process running the search loop; with a LocalCluster it also hosts the scheduler), ``scheduler``
(dask-mpi rank 0), ``worker``. Used by bench_rslocal_layouts.py (memory per node, 1M on Dask, strong scaling).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

VENV_BIN = Path(sys.executable).parent


@dataclass
class Layout:
    """One engine layout (see the module docstring)."""

    kind: str  # inprocess | local | mpiexec
    processes: int  # in-process: 1; local: workers; mpiexec: ranks
    threads: int

    @classmethod
    def parse(cls, text: str) -> "Layout":
        kind, _, size = text.partition(":")
        count, _, threads = size.partition("x")
        if kind == "inprocess":
            return cls(kind, 1, int(count or 1))
        if kind not in ("local", "mpiexec"):
            raise ValueError(f"layout {text!r}: expected inprocess:T, local:WxT or mpiexec:NxT")
        return cls(kind, int(count), int(threads or 1))

    @property
    def worker_processes(self) -> int:
        return {"inprocess": 0, "local": self.processes, "mpiexec": self.processes - 2}[self.kind]

    @property
    def cores_used(self) -> int:
        """Threads doing the scoring."""
        return self.threads * max(1, self.worker_processes)

    def __str__(self) -> str:
        if self.kind == "inprocess":
            return f"in-process, {self.threads} thread(s)"
        if self.kind == "local":
            return f"LocalCluster {self.processes} worker(s) x {self.threads} thread(s)"
        return f"mpiexec -n {self.processes} ({self.worker_processes} worker rank(s) x {self.threads} thread(s))"

    def command(self, library: Path, site: Path, out: Path, options: list[str]) -> list[str]:
        dtl = [sys.executable, "-m", "dtl_dist.cli", "rslocal", "--library", str(library), "--site", str(site),
               "--out", str(out), "--threads", str(self.threads), *options]
        if self.kind == "local":
            return [*dtl, "--workers", str(self.processes)]
        if self.kind == "mpiexec":
            return [str(VENV_BIN / "mpiexec"), "-n", str(self.processes), *dtl]
        return dtl


@dataclass
class Run:
    """Outcome of one layout: wall time, selection file, and memory peaks in bytes."""

    layout: Layout
    wall_s: float
    selected: str
    summary_line: str
    peak_rss: dict = field(default_factory=dict)  # role -> largest RSS of one process of that role
    node_rss: int = 0  # largest sum of RSS over all processes at one moment
    node_pss: int = 0  # largest sum of PSS over all processes at one moment
    workers_pss: int = 0  # largest sum of PSS over the worker processes at one moment
    load_before: float = 0.0
    baseline: dict = field(default_factory=dict)  # the run's baseline.json (iterations, driver_s, engine_s, ...)


def _role(proc: psutil.Process, root: psutil.Process, layout: Layout) -> str | None:
    if layout.kind == "mpiexec":
        try:
            rank = proc.environ().get("PMI_RANK")
        except psutil.Error:
            return None
        if rank is None or "python" not in proc.name():
            return None  # mpiexec and its hydra proxy
        return {"0": "scheduler", "1": "driver"}.get(rank, "worker")
    if proc.pid == root.pid:
        return "driver"
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    return "worker" if "spawn_main" in cmdline and "resource_tracker" not in cmdline else "other"


def run_layout(layout: Layout, library: Path, site: Path, out: Path, options: list[str], *,
               timeout_s: float = 7200, interval_s: float = 0.5) -> Run:
    """Run ``dtl rslocal`` in ``layout`` (``out`` is replaced) and sample its memory until it ends."""
    if out.exists():
        shutil.rmtree(out)
    env = dict(os.environ, DASK_LOGGING__DISTRIBUTED="error", PYTHONUNBUFFERED="1")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(layout.command(library, site, out, options), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    root = psutil.Process(proc.pid)
    run = Run(layout, 0.0, "", "", {}, load_before=load)
    output: dict = {}
    reader = threading.Thread(target=lambda: output.update(zip(("stdout", "stderr"), proc.communicate())))
    reader.start()
    try:
        while reader.is_alive() and time.perf_counter() - start < timeout_s:
            _sample(root, layout, run)
            reader.join(interval_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        reader.join()
    run.wall_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{layout} failed ({proc.returncode}): {output.get('stderr', '')[-2000:]}")
    run.selected = (out / "selected.csv").read_text()
    run.summary_line = output["stdout"].strip().splitlines()[-1]
    run.baseline = json.loads((out / "baseline.json").read_text())
    return run


def _sample(root: psutil.Process, layout: Layout, run: Run) -> None:
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    total_rss = total_pss = workers_pss = 0
    for p in procs:
        role = _role(p, root, layout)
        if role is None:
            continue
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        total_rss += info.rss
        total_pss += info.pss
        if role == "worker":
            workers_pss += info.pss
        run.peak_rss[role] = max(run.peak_rss.get(role, 0), info.rss)
    run.node_rss = max(run.node_rss, total_rss)
    run.node_pss = max(run.node_pss, total_pss)
    run.workers_pss = max(run.workers_pss, workers_pss)
