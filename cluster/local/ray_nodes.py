"""Several Ray nodes on this machine's loopback, as a job script starts them (``ray start --head --block`` on
127.0.0.11, ``ray start --address`` on 127.0.0.12, ...), each with its own CPUs, logical GPUs
(``--num-gpus``: Ray schedules them on a CPU-only machine too) and temporary folder. Used by the tests and
benchmarks that need a multi-node Ray cluster without a batch system; nothing here is used by the product.

    with LoopbackRay(nodes=2, cpus=4, gpus=2) as cluster:
        ray_engine.init(cluster.address)    # or: dtl study --ray-address cluster.address

Every process a cluster started carries a mark in its environment and is ended by process id on exit (never
``ray stop``, which would stop other people's Ray on the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_memory_monitor_refresh_ms": "0", "RAY_AIR_NEW_OUTPUT": "0"}
"""Set in this process (several nodes on one machine need Ray's cluster mode)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackRay:
    """``nodes`` Ray nodes on 127.0.0.11, 127.0.0.12, ... with ``cpus`` CPUs and ``gpus`` logical GPUs each."""

    def __init__(self, nodes: int, cpus: int, gpus: int = 0, object_store_bytes: int = 200_000_000):
        os.environ.update(ENV)
        self.nodes, self.cpus, self.gpus, self.store = nodes, cpus, gpus, object_store_bytes
        self.mark = uuid.uuid4().hex
        self.address = f"127.0.0.11:{free_port()}"
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[Path] = []

    def __enter__(self) -> "LoopbackRay":
        from dtl_dist.engines.ray import wait_for_nodes

        ray = str(Path(sys.executable).parent / "ray")
        try:
            for i in range(self.nodes):
                folder = Path(tempfile.mkdtemp(prefix=f"dtlr{i}-", dir="/tmp"))  # short: socket paths < 108 chars
                self.dirs.append(folder)
                role = (["--head", f"--port={self.address.rsplit(':', 1)[1]}", "--include-dashboard=false"]
                        if i == 0 else [f"--address={self.address}"])
                cmd = [ray, "start", *role, f"--node-ip-address=127.0.0.{11 + i}", f"--num-cpus={self.cpus}",
                       f"--num-gpus={self.gpus}", f"--temp-dir={folder}", f"--object-store-memory={self.store}",
                       "--block"]
                self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True,
                                                   env=dict(os.environ, DTL_LOOPBACK_RAY=self.mark)))
                if i == 0:
                    wait_for_nodes(self.address, 1, 120)
            wait_for_nodes(self.address, self.nodes, 120)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(2)
        for pid in _marked(self.mark):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait(timeout=30)
        for folder in self.dirs:
            shutil.rmtree(folder, ignore_errors=True)


def _marked(mark: str) -> list[int]:
    """Processes carrying this cluster's mark in their environment (not this one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if f"DTL_LOOPBACK_RAY={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found
