#!/usr/bin/env python3
"""A fake SLURM / PBS cluster on one machine, to run the real job scripts of ``cluster/slurm`` and
``cluster/pbs`` end to end (issue 10). Each command of ``cluster/local/bin`` (sbatch, srun, scontrol, scancel,
squeue, sacct, qsub, qdel, qstat, mpiexec, hostname, ray) calls ``fakecluster.py COMMAND ARGS``.

The cluster is a folder (``DTL_LOCAL_CLUSTER``) of job records and logs, and ``DTL_LOCAL_NODES`` fake nodes
(default 2) named ``dtl-node1``, ``dtl-node2``, ... with ``DTL_LOCAL_CPUS_PER_NODE`` CPUs (default 1) and
``DTL_LOCAL_GPUS_PER_NODE`` GPUs (default 0). Fake node *i* has the loopback address ``127.0.0.(10 + i)``
(``hostname --ip-address`` on it says so), so a Ray "node" started there listens on its own address.

- ``sbatch`` / ``qsub`` read the script's ``#SBATCH`` / ``#PBS`` lines and options (the command line wins), cap
  CPUs and GPUs at what the fake nodes have (with a note in the job log), print the job id and return at
  once; a background runner waits for ``--dependency=afterok:ID`` / ``-W depend=afterok:ID`` (a failed
  dependency cancels the job), runs the script with bash in the submit folder with the scheduler's
  variables (SLURM_JOB_NODELIST, SLURM_CPUS_ON_NODE, ...; PBS_NODEFILE, PBS_O_WORKDIR, ...), writes
  ``slurm-ID.out`` / ``NAME.oID`` and records the exit code, then ends every process the job left behind.
- ``srun`` and PBS ``mpiexec`` run a step's tasks through the real ``mpiexec`` of the mpich wheel (one MPI
  job, so dask-mpi and mpi4py work), each task with the variables of the fake node it is placed on.
- ``ray start`` gets the node's address and its own temporary folder; ``ray stop`` ends the Ray processes of
  this job on this node only (never another user's or another job's Ray).
- A job's processes carry ``DTL_LOCAL_JOB`` in their environment: that is how the runner, ``scancel`` and
  ``ray stop`` find them, and they are ended by process id.

Job states: PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED; ``fakecluster.py wait ID...`` waits for
jobs to end (exit 0 when all COMPLETED).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
FINAL = ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED")
KEEP_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TERM", "SHELL")
"""What a job started without --export=ALL / -V still gets from the submitting shell (a login environment)."""


# --- the cluster: folder, nodes, records ----------------------------------------------------------------


def die(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def cluster_dir() -> Path:
    value = os.environ.get("DTL_LOCAL_CLUSTER")
    if not value:
        die("fake cluster: set DTL_LOCAL_CLUSTER to the folder holding its jobs and logs")
    path = Path(value).resolve()
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def settings() -> dict:
    return {key: int(os.environ.get(f"DTL_LOCAL_{key.upper()}", default))
            for key, default in (("nodes", 2), ("cpus_per_node", 1), ("gpus_per_node", 0))}


def node_names(n: int) -> list[str]:
    return [f"dtl-node{i}" for i in range(1, n + 1)]


def node_ip(name: str) -> str:
    return f"127.0.0.{10 + int(name.removeprefix('dtl-node'))}"


def compress(names: list[str]) -> str:
    """``dtl-node[1-3]`` for consecutive fake nodes (SLURM's host list)."""
    numbers = [int(n.removeprefix("dtl-node")) for n in names]
    if len(numbers) == 1:
        return names[0]
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"dtl-node[{numbers[0]}-{numbers[-1]}]"
    return "dtl-node[" + ",".join(map(str, numbers)) + "]"


def expand(text: str) -> list[str]:
    """Host names of a SLURM host list: ``dtl-node[1-3,5]``, ``a,b`` or ``dtl-node2``."""
    names = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", text):
        match = re.fullmatch(r"(.*)\[(.*)\]", part)
        if not match:
            names.append(part)
            continue
        for item in match.group(2).split(","):
            lo, _, hi = item.partition("-")
            names += [f"{match.group(1)}{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return names


class Records:
    """Job records (``jobs/ID.json``) under one lock."""

    def __init__(self):
        self.root = cluster_dir()
        self.lock_path = self.root / "lock"

    def _locked(self):
        fh = open(self.lock_path, "a")
        fcntl.flock(fh, fcntl.LOCK_EX)
        return fh

    def new(self, record: dict) -> str:
        with self._locked():
            counter = self.root / "next_id"
            job_id = int(counter.read_text()) if counter.exists() else 1
            counter.write_text(str(job_id + 1))
            record["id"] = str(job_id)
            self._write(record)
        return str(job_id)

    def get(self, job_id: str) -> dict:
        path = self.root / "jobs" / f"{job_id}.json"
        if not path.exists():
            die(f"fake cluster: no job {job_id}")
        return json.loads(path.read_text())

    def update(self, job_id: str, **fields) -> dict:
        with self._locked():
            record = self.get(job_id)
            if record["state"] in FINAL and fields.get("state") not in (None, "CANCELLED"):
                fields.pop("state", None)  # a cancelled job stays cancelled
            record.update(fields)
            self._write(record)
        return record

    def all(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "jobs").glob("*.json"),
                                                          key=lambda p: int(p.stem))]

    def _write(self, record: dict) -> None:
        path = self.root / "jobs" / f"{record['id']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)


# --- options of sbatch, srun, qsub ----------------------------------------------------------------------

SBATCH_VALUE = {"N": "nodes", "n": "ntasks", "c": "cpus-per-task", "J": "job-name", "o": "output", "e": "error",
                "t": "time", "p": "partition", "A": "account", "d": "dependency", "w": "nodelist", "D": "chdir",
                "G": "gpus"}
SBATCH_VALUES = {"nodes", "ntasks", "ntasks-per-node", "cpus-per-task", "gpus-per-node", "gpus", "gres", "job-name",
                 "output", "error", "time", "partition", "account", "dependency", "mem", "mem-per-cpu", "export",
                 "kill-on-invalid-dep", "qos", "chdir", "nodelist", "distribution", "cpu-bind", "mpi",
                 "threads-per-core", "gpus-per-task", "gpu-bind", "hint", "signal", "mail-type", "mail-user"}
SBATCH_FLAGS = {"exclusive", "parsable", "overlap", "exact", "unbuffered", "label", "kill-on-bad-exit", "u", "l",
                "K", "overcommit", "oversubscribe", "requeue", "no-requeue"}


def parse_options(args: list[str], values: set, short: dict, flags: set, what: str) -> tuple[dict, list[str]]:
    """``--name=value``, ``--name value``, ``-X value``, ``-Xvalue`` and flags, up to the first non-option."""
    options, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "--":
            i += 1
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
        else:
            name, value, eq = arg[1:2], arg[2:], ""
            eq = "=" if value else ""
            name = short.get(name, name)
        if name in flags:
            options[name] = True
            i += 1
            continue
        if name not in values:
            die(f"{what}: unrecognized option '{arg}'")
        if not eq:
            i += 1
            if i >= len(args):
                die(f"{what}: option '{arg}' needs a value")
            value = args[i]
        options[name] = value
        i += 1
    return options, args[i:]


def directives(script: Path, prefix: str) -> list[str]:
    """The ``#SBATCH`` / ``#PBS`` arguments of a script (before its first command)."""
    args = []
    for line in script.read_text().splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith(prefix):
            args += shlex.split(stripped[len(prefix):], comments=True)
        elif stripped and not stripped.startswith("#"):
            break
    return args


def seconds(text: str | None) -> float | None:
    """SLURM/PBS time: minutes, MM:SS, HH:MM:SS or D-HH:MM:SS."""
    if not text:
        return None
    days, _, rest = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = [float(p) for p in rest.split(":")]
    if len(parts) == 1:
        return float(days or 0) * 86400 + parts[0] * 60
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return float(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def job_environment(export: str, extra: dict) -> dict:
    """The submitting shell's variables the job sees (``--export``/``-V``/``-v``), plus the harness's."""
    items = [item for item in export.split(",") if item] if export else ["ALL"]
    env = dict(os.environ) if "ALL" in items else {k: v for k, v in os.environ.items()
                                                   if k in KEEP_ENV or k.startswith("DTL_LOCAL_")}
    for item in items:
        name, eq, value = item.partition("=")
        if name in ("ALL", "NONE"):
            continue
        if eq:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    env.update(extra)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', os.environ.get('PATH', ''))}"
    if env.get("DTL_VENV"):
        env["DTL_VENV"] = str(venv_wrapper(Path(env["DTL_VENV"])))
    return env


def venv_wrapper(venv: Path) -> Path:
    """A stand-in for ``venv`` whose ``bin/activate`` activates it and puts this harness's commands back in front
    of its ``ray`` and ``mpiexec`` (a job script activates DTL_VENV after the harness set its PATH)."""
    wrapper = cluster_dir() / f"venv-{hashlib.sha1(str(venv).encode()).hexdigest()[:8]}"
    (wrapper / "bin").mkdir(parents=True, exist_ok=True)
    (wrapper / "bin" / "activate").write_text(
        f"# fake cluster: {venv}, with the fake cluster's commands first on PATH\n"
        f"source {shlex.quote(str(venv / 'bin' / 'activate'))}\n"
        f"PATH={shlex.quote(str(BIN))}:$PATH\nexport PATH\n")
    return wrapper


def allocate(nodes_wanted: int, cpus: int | None, gpus: int | None, notes: list) -> tuple[list[str], int, int]:
    have = settings()
    if nodes_wanted > have["nodes"]:
        die(f"sbatch: error: Batch job submission failed: Requested node configuration is not available "
            f"({nodes_wanted} nodes; the fake cluster has {have['nodes']}: DTL_LOCAL_NODES)")
    cpus_on_node = have["cpus_per_node"]
    if cpus and cpus > cpus_on_node:
        notes.append(f"{cpus} CPUs per task asked for, the fake nodes have {cpus_on_node}: capped")
    gpus_on_node = have["gpus_per_node"]
    if gpus and gpus > gpus_on_node:
        notes.append(f"{gpus} GPUs per node asked for, the fake nodes have {gpus_on_node}: capped")
    return node_names(nodes_wanted), cpus_on_node, min(gpus or 0, gpus_on_node)


def new_job(kind: str, name: str, script: Path, args: list[str], submit_dir: Path, nodes: list[str], deps: list[str],
            notes: list, time_limit: str | None) -> tuple["Records", str]:
    """Record a submitted job (PENDING) with a copy of its script as submitted (the scheduler's spool: the file
    may change or go away); (the records, its id)."""
    record = {"kind": kind, "name": name, "args": args, "submit_dir": str(submit_dir), "nodes": nodes, "deps": deps,
              "state": "PENDING", "notes": notes, "time_limit_s": seconds(time_limit), "submitted": time.time()}
    records = Records()
    job_id = records.new(record)
    copy = records.root / "jobs" / f"{job_id}.script"
    shutil.copyfile(script, copy)
    records.update(job_id, script=str(copy), submitted_script=str(script))
    return records, job_id


def spawn_runner(job_id: str) -> None:
    subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_run", job_id], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                     env={k: v for k, v in os.environ.items() if k != "DTL_LOCAL_JOB"})


# --- SLURM ------------------------------------------------------------------------------------------------


def sbatch(args: list[str]) -> None:
    cli, rest = parse_options(args, SBATCH_VALUES, SBATCH_VALUE, SBATCH_FLAGS, "sbatch")
    if not rest:
        die("sbatch: error: no batch script given")
    script = Path(rest[0]).resolve()
    if not script.is_file():
        die(f"sbatch: error: Unable to open file {rest[0]}")
    options, _ = parse_options(directives(script, "#SBATCH"), SBATCH_VALUES, SBATCH_VALUE, SBATCH_FLAGS,
                               f"sbatch ({script.name})")
    options.update(cli)
    notes: list = []
    n_nodes = int(options.get("nodes", 1))
    per_node = int(options.get("ntasks-per-node", 0)) or None
    ntasks = int(options.get("ntasks", 0)) or (per_node or 1) * n_nodes
    gpus = options.get("gpus-per-node") or (options.get("gres", "").rpartition(":")[2] if "gpu" in
                                            options.get("gres", "") else None)
    nodes, cpus, gpus_on_node = allocate(n_nodes, int(options.get("cpus-per-task", 0) or 0) or None,
                                         int(gpus) if gpus else None, notes)
    deps = []
    if "dependency" in options:
        kind, _, ids = options["dependency"].partition(":")
        if kind != "afterok":
            die(f"sbatch: error: the fake cluster knows --dependency=afterok:ID only, got {options['dependency']}")
        deps = [i.split(".")[0] for i in ids.split(":") if i]
    submit_dir = Path(options.get("chdir", os.getcwd())).resolve()
    name = options.get("job-name", script.name)
    records, job_id = new_job("slurm", name, script, rest[1:], submit_dir, nodes, deps, notes, options.get("time"))
    cpus_per_task = min(int(options.get("cpus-per-task", 1)), cpus)
    job_vars = {"SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id, "SLURM_JOB_NAME": name,
                "SLURM_JOB_NODELIST": compress(nodes), "SLURM_NODELIST": compress(nodes),
                "SLURM_NNODES": str(len(nodes)), "SLURM_JOB_NUM_NODES": str(len(nodes)), "SLURM_NTASKS": str(ntasks),
                "SLURM_NPROCS": str(ntasks), "SLURM_CPUS_ON_NODE": str(cpus), "SLURM_JOB_CPUS_PER_NODE": str(cpus),
                "SLURM_SUBMIT_DIR": str(submit_dir), "SLURM_CLUSTER_NAME": "dtl-local",
                "SLURM_JOB_PARTITION": options.get("partition", "work")}
    if per_node:
        job_vars["SLURM_NTASKS_PER_NODE"] = str(per_node)
    if "cpus-per-task" in options:
        job_vars["SLURM_CPUS_PER_TASK"] = str(cpus_per_task)
    if gpus:
        job_vars |= {"SLURM_GPUS_ON_NODE": str(gpus_on_node), "SLURM_GPUS_PER_NODE": str(gpus_on_node)}
    output = options.get("output", "slurm-%j.out").replace("%j", job_id).replace("%x", name)
    env = job_environment(options.get("export", "ALL"), job_vars)
    records.update(job_id, env=env, output=str(submit_dir / output))
    spawn_runner(job_id)
    print(job_id if options.get("parsable") else f"Submitted batch job {job_id}", flush=True)


SRUN_VALUE = {"N": "nodes", "n": "ntasks", "c": "cpus-per-task", "w": "nodelist", "m": "distribution", "J": "job-name",
              "G": "gpus"}


def srun(args: list[str]) -> None:
    if "DTL_LOCAL_JOB" not in os.environ:
        die("srun: error: no job allocation: run srun inside a job of the fake cluster (sbatch)")
    options, command = parse_options(args, SBATCH_VALUES, SRUN_VALUE, SBATCH_FLAGS, "srun")
    if not command:
        die("srun: fatal: no command to run")
    job_nodes = expand(os.environ["SLURM_JOB_NODELIST"])
    if "nodelist" in options:
        nodes = expand(options["nodelist"])
        unknown = [n for n in nodes if n not in job_nodes]
        if unknown:
            die(f"srun: error: {','.join(unknown)} not in the job's allocation {os.environ['SLURM_JOB_NODELIST']}")
    else:
        nodes = job_nodes[:int(options["nodes"])] if "nodes" in options else job_nodes
    if "nodes" in options and "nodelist" in options and len(nodes) != int(options["nodes"]):
        nodes = nodes[:int(options["nodes"])]
    per_node = int(options.get("ntasks-per-node", 0))
    if "ntasks" in options:
        ntasks = int(options["ntasks"])
        nodes = nodes[:max(1, min(len(nodes), ntasks))]
    elif per_node:
        ntasks = per_node * len(nodes)
    elif "nodes" in options or "nodelist" in options:
        ntasks = len(nodes)
    else:
        ntasks = int(os.environ.get("SLURM_NTASKS", len(nodes)))
    counts = [per_node] * len(nodes) if per_node else [ntasks // len(nodes) + (i < ntasks % len(nodes))
                                                        for i in range(len(nodes))]
    placement = [node for node, count in zip(nodes, counts) for _ in range(count)]
    step_vars = {"SLURM_STEP_NODELIST": compress(nodes), "SLURM_STEP_NUM_NODES": str(len(nodes)),
                 "SLURM_STEP_NUM_TASKS": str(ntasks)}
    if "cpus-per-task" in options:
        step_vars["SLURM_CPUS_PER_TASK"] = str(min(int(options["cpus-per-task"]), settings()["cpus_per_node"]))
    run_tasks(placement, command, lambda rank, local, node: {
        "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(local), "SLURM_NODEID": str(nodes.index(node)),
        "SLURMD_NODENAME": node, **step_vars})


def run_tasks(placement: list[str], command: list[str], task_vars) -> None:
    """Run ``command`` once per entry of ``placement`` (a fake node per task) as one MPI job of the real
    ``mpiexec``, each task with its node's variables; this process becomes mpiexec (signals reach it)."""
    # fork + user: every task here, whatever SLURM/PBS variables Hydra would otherwise read its hosts from
    argv, local = [real_command("mpiexec"), "-launcher", "fork", "-rmk", "user"], {}
    for rank, node in enumerate(placement):
        local[node] = local.get(node, -1) + 1
        env = {"DTL_LOCAL_NODE": node, "DTL_LOCAL_NODE_IP": node_ip(node), **task_vars(rank, local[node], node)}
        argv += [":"] if rank else []
        argv += ["-n", "1"] + [x for key, value in env.items() for x in ("-env", key, value)] + command
    sys.stdout.flush()
    os.execv(argv[0], argv)


def scontrol(args: list[str]) -> None:
    if args[:2] == ["show", "hostnames"]:
        text = args[2] if len(args) > 2 else os.environ.get("SLURM_JOB_NODELIST", "")
        print("\n".join(expand(text)))
        return
    if args[:2] == ["show", "job"] and len(args) > 2:
        record = Records().get(args[2])
        print(f"JobId={record['id']} JobName={record['name']} JobState={record['state']} "
              f"NodeList={compress(record['nodes'])} Command={record['submitted_script']} "
              f"WorkDir={record['submit_dir']}")
        return
    die(f"scontrol: the fake cluster knows 'show hostnames LIST' and 'show job ID' only, not {' '.join(args)}")


def cancel(args: list[str]) -> None:
    records = Records()
    for job_id in [a.split(".")[0] for a in args if not a.startswith("-")]:
        record = records.get(job_id)
        if record["state"] in FINAL:
            continue
        records.update(job_id, state="CANCELLED", reason="cancelled by the user")
        if record.get("pgid"):
            _signal_group(record["pgid"], signal.SIGTERM)
        end_processes({"DTL_LOCAL_JOB": job_tag(job_id)})


def squeue(args: list[str]) -> None:
    records = [r for r in Records().all() if r["state"] in ("PENDING", "RUNNING")]
    if "-h" not in args and "--noheader" not in args:
        print(f"{'JOBID':>8} {'NAME':<24} {'ST':<3} {'NODES':>5} NODELIST(REASON)")
    for r in records:
        state = "R" if r["state"] == "RUNNING" else "PD"
        where = compress(r["nodes"]) if state == "R" else f"(Dependency {':'.join(r['deps'])})"
        print(f"{r['id']:>8} {r['name'][:24]:<24} {state:<3} {len(r['nodes']):>5} {where}")


def sacct(args: list[str]) -> None:
    options, _ = parse_options(args, {"j", "jobs", "format", "o"}, {}, {"n", "P", "X", "noheader", "parsable2"},
                               "sacct")
    wanted = set((options.get("j") or options.get("jobs") or "").split(",")) - {""}
    for r in Records().all():
        if not wanted or r["id"] in wanted:
            print(f"{r['id']}|{r['name']}|{r['state']}|{r.get('exit_code', '')}")


# --- PBS --------------------------------------------------------------------------------------------------

QSUB_VALUES = {"W", "v", "N", "l", "o", "e", "j", "q", "A", "J", "m", "M", "k", "S"}


def qsub(args: list[str]) -> None:
    cli, rest = _pbs_options(args)
    if not rest:
        die("qsub: no script given")
    script = Path(rest[0]).resolve()
    if not script.is_file():
        die(f"qsub: script file:: No such file or directory ({rest[0]})")
    options, _ = _pbs_options(directives(script, "#PBS"))
    resources = options.pop("l", []) + cli.pop("l", [])
    options.update(cli)
    select = {}
    for item in ",".join(resources).split(","):
        key, _, value = item.partition("=")
        if key == "select":
            count, *chunk = value.split(":")
            select["nodes"] = int(count)
            select.update(dict(c.split("=", 1) for c in chunk if "=" in c))
        elif key:
            select[key] = value
    notes: list = []
    nodes, cpus, gpus = allocate(int(select.get("nodes", 1)), int(select.get("ncpus", 0)) or None,
                                 int(select.get("ngpus", 0)) or None, notes)
    deps = []
    for item in options.get("W", "").split(","):
        if item.startswith("depend="):
            kind, _, ids = item[7:].partition(":")
            if kind != "afterok":
                die(f"qsub: the fake cluster knows -W depend=afterok:ID only, got {item}")
            deps += [i.split(".")[0] for i in ids.split(":") if i]
    name = options.get("N", script.name)
    submit_dir = Path(os.getcwd()).resolve()
    records, job_id = new_job("pbs", name, script, rest[1:], submit_dir, nodes, deps, notes, select.get("walltime"))
    nodefile = records.root / f"nodefile.{job_id}"
    mpiprocs = int(select.get("mpiprocs", 1))
    nodefile.write_text("".join(f"{n}\n" * mpiprocs for n in nodes))
    pbs_id = f"{job_id}.dtl-local"
    job_vars = {"PBS_JOBID": pbs_id, "PBS_JOBNAME": name, "PBS_NODEFILE": str(nodefile),
                "PBS_O_WORKDIR": str(submit_dir), "PBS_O_HOME": os.environ.get("HOME", ""),
                "PBS_ENVIRONMENT": "PBS_BATCH", "NCPUS": str(cpus), "OMP_NUM_THREADS": str(cpus),
                "NGPUS": str(gpus)}
    export = ",".join(["ALL" if options.get("V") else "NONE", *options.get("v", "").split(",")])
    output = options.get("o", f"{name}.o{job_id}")
    records.update(job_id, env=job_environment(export, job_vars), output=str(submit_dir / output))
    spawn_runner(job_id)
    print(pbs_id, flush=True)


def _pbs_options(args: list[str]) -> tuple[dict, list[str]]:
    options, i = {"l": []}, 0
    while i < len(args) and args[i].startswith("-"):
        name = args[i][1:]
        if name == "V":
            options["V"] = True
            i += 1
            continue
        if name not in QSUB_VALUES or i + 1 >= len(args):
            die(f"qsub: invalid option -- '{name}'")
        if name == "l":
            options["l"].append(args[i + 1])
        else:
            options[name] = args[i + 1]
        i += 2
    return options, args[i:]


def qstat(args: list[str]) -> None:
    for r in Records().all():
        state = {"PENDING": "H" if r["deps"] else "Q", "RUNNING": "R"}.get(r["state"], "F")
        print(f"{r['id']}.dtl-local  {r['name'][:16]:<16} {state}")


def pbs_mpiexec(args: list[str]) -> None:
    """PBS ``mpiexec -n N [--ppn P] [--hosts h1,h2] [--depth D] CMD``: the tasks on the job's fake nodes; outside
    a fake job (or with no fake host involved) the real mpiexec runs as it is."""
    if "DTL_LOCAL_JOB" not in os.environ:
        os.execv(real_command("mpiexec"), [real_command("mpiexec"), *args])
    values = {"n": "n", "np": "n", "ppn": "ppn", "hosts": "hosts", "host": "hosts", "depth": "depth", "d": "depth",
              "cpu-bind": "cpu-bind", "env": "env", "genv": "env"}
    options, i = {}, 0
    while i < len(args) and args[i].startswith("-"):
        name = values.get(args[i].lstrip("-"))
        if name is None:
            die(f"mpiexec: unrecognized option '{args[i]}'")
        if name == "env":
            options.setdefault("env", {})[args[i + 1]] = args[i + 2]
            i += 3
            continue
        options[name] = args[i + 1]
        i += 2
    command = args[i:]
    job_nodes = (Path(os.environ["PBS_NODEFILE"]).read_text().split() if "PBS_NODEFILE" in os.environ
                 else expand(os.environ.get("SLURM_JOB_NODELIST", os.environ["DTL_LOCAL_NODE"])))
    hosts = list(dict.fromkeys(options["hosts"].split(","))) if "hosts" in options else list(dict.fromkeys(job_nodes))
    ntasks = int(options.get("n", len(hosts)))
    ppn = int(options.get("ppn", 0))
    if ppn:
        hosts = hosts[:-(-ntasks // ppn)]
        counts = [min(ppn, ntasks - k * ppn) for k in range(len(hosts))]
    else:
        counts = [ntasks // len(hosts) + (k < ntasks % len(hosts)) for k in range(len(hosts))]
    placement = [host for host, count in zip(hosts, counts) for _ in range(count)]
    extra = options.get("env", {})
    run_tasks(placement, command, lambda rank, local, node: {"PALS_RANKID": str(rank), "PALS_LOCAL_RANKID": str(local),
                                                              **extra})


# --- the job runner ---------------------------------------------------------------------------------------


def job_tag(job_id: str) -> str:
    return f"{cluster_dir()}:{job_id}"


def run_job(job_id: str) -> None:
    """Wait for the job's dependencies, run its script, record the outcome, end what it left running."""
    records = Records()
    record = records.get(job_id)
    while True:
        states = [records.get(d)["state"] for d in record["deps"]]
        if any(s in ("FAILED", "TIMEOUT", "CANCELLED") for s in states):
            records.update(job_id, state="CANCELLED", reason="DependencyNeverSatisfied", end=time.time())
            _append(record["output"], f"dtl-local: job {job_id} cancelled: a dependency did not complete\n")
            return
        if all(s == "COMPLETED" for s in states):
            break
        if records.get(job_id)["state"] == "CANCELLED":
            return
        time.sleep(0.3)
    if records.get(job_id)["state"] == "CANCELLED":
        return
    head = record["nodes"][0]
    env = dict(record["env"], DTL_LOCAL_JOB=job_tag(job_id), DTL_LOCAL_NODE=head, DTL_LOCAL_NODE_IP=node_ip(head))
    for note in record["notes"]:
        _append(record["output"], f"dtl-local: {note}\n")
    with open(record["output"], "a") as out:
        proc = subprocess.Popen(["bash", record["script"], *record["args"]], cwd=record["submit_dir"], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    records.update(job_id, state="RUNNING", start=time.time(), pgid=proc.pid)
    limit = record["time_limit_s"]
    try:
        code = proc.wait(timeout=limit)
        state = "COMPLETED" if code == 0 else "FAILED"
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            code = proc.wait()
        state = "TIMEOUT"
        _append(record["output"], f"dtl-local: job {job_id} reached its time limit ({limit:g} s)\n")
    end_processes({"DTL_LOCAL_JOB": job_tag(job_id)})
    for folder in Path(os.environ.get("TMPDIR", "/tmp")).glob(f"dtl-ray-{ray_tag(job_tag(job_id))}-*"):
        shutil.rmtree(folder, ignore_errors=True)
    records.update(job_id, state=state, exit_code=code, end=time.time())


def _append(path: str, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def processes_with(marks: dict) -> list[int]:
    """Process ids whose environment holds every ``marks`` variable with that value (this process and its
    ancestors excluded)."""
    skip, pid = set(), os.getpid()
    while pid > 1:
        skip.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    wanted = {f"{k}={v}".encode() for k, v in marks.items()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= environ:
            found.append(int(entry.name))
    return found


def end_processes(marks: dict, grace_s: float = 5.0) -> None:
    """SIGTERM the processes carrying ``marks``, then SIGKILL those still there after ``grace_s``."""
    pids = processes_with(marks)
    for pid in pids:
        _kill(pid, signal.SIGTERM)
    deadline = time.time() + grace_s
    while pids and time.time() < deadline:
        time.sleep(0.2)
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    for pid in pids:
        _kill(pid, signal.SIGKILL)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait(args: list[str]) -> None:
    """``wait [--timeout S] ID...``: wait for the jobs to end; print each one's state; exit 0 if all COMPLETED."""
    timeout = None
    if args[:1] == ["--timeout"]:
        timeout, args = float(args[1]), args[2:]
    ids = [a.split(".")[0] for a in args]
    records, deadline = Records(), None if timeout is None else time.time() + timeout
    while not all(records.get(i)["state"] in FINAL for i in ids):
        if deadline is not None and time.time() > deadline:
            cancel(ids)
            die(f"fake cluster: jobs {' '.join(ids)} still running after {timeout:g} s: cancelled", 3)
        time.sleep(0.3)
    states = {i: records.get(i)["state"] for i in ids}
    for i, state in states.items():
        print(f"{i} {state} {records.get(i).get('exit_code', '')}")
    sys.exit(0 if all(s == "COMPLETED" for s in states.values()) else 1)


def shutdown(args: list[str]) -> None:
    """End every job of this fake cluster and the processes they started (what a test does when it
    finishes, however it ends)."""
    records = Records()
    for record in records.all():
        if record["state"] not in FINAL:
            records.update(record["id"], state="CANCELLED", reason="cluster shut down")
        if record.get("pgid"):
            _signal_group(record["pgid"], signal.SIGKILL)
        end_processes({"DTL_LOCAL_JOB": job_tag(record["id"])}, grace_s=2.0)


# --- shims: hostname, ray ----------------------------------------------------------------------------------


def real_command(name: str) -> str:
    """``name`` on PATH without this harness's bin folder (or DTL_LOCAL_<NAME>)."""
    override = os.environ.get(f"DTL_LOCAL_{name.upper()}")
    if override:
        return override
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != BIN)
    found = shutil.which(name, path=path)
    if not found:
        die(f"fake cluster: no real {name} on PATH")
    return found


def hostname(args: list[str]) -> None:
    node = os.environ.get("DTL_LOCAL_NODE")
    if node is None:
        os.execv(real_command("hostname"), ["hostname", *args])
    ip_flags = {"-i", "-I", "--ip-address", "--ip-addresses", "--all-ip-addresses"}
    print(node_ip(node) if ip_flags & set(args) else node)


def ray(args: list[str]) -> None:
    node, job = os.environ.get("DTL_LOCAL_NODE"), os.environ.get("DTL_LOCAL_JOB")
    real = real_command("ray")
    if args[:1] == ["stop"] and (node is None or job is None):
        die("ray stop outside a job of the fake cluster: refused (it would stop every Ray of this user on the "
            "machine, other people's too)")
    if node is None or job is None or not args or args[0] not in ("start", "stop"):
        os.execv(real, [real, *args])
    if args[0] == "stop":
        ray_pids = [pid for pid in processes_with({"DTL_LOCAL_JOB": job, "DTL_LOCAL_NODE": node})
                    if _is_ray(pid)]
        for pid in ray_pids:
            _kill(pid, signal.SIGTERM)
        time.sleep(2)
        for pid in ray_pids:
            if Path(f"/proc/{pid}").exists():
                _kill(pid, signal.SIGKILL)
        print(f"dtl-local: stopped {len(ray_pids)} Ray process(es) of job {job.rsplit(':', 1)[1]} on {node}")
        return
    extra = []
    given = " ".join(args)
    if "--node-ip-address" not in given:
        extra.append(f"--node-ip-address={node_ip(node)}")
    if "--temp-dir" not in given:  # short: Ray's socket paths must stay under 108 characters
        extra.append(f"--temp-dir={os.environ.get('TMPDIR', '/tmp')}/dtl-ray-{ray_tag(job)}-{node}")
    os.execv(real, [real, "start", *args[1:], *extra])


def ray_tag(job: str) -> str:
    """Short name of a job's Ray temporary folders (removed when the job ends)."""
    return hashlib.sha1(job.encode()).hexdigest()[:8]


def _is_ray(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "/ray/" in cmdline or "ray::" in cmdline or "bin/ray " in cmdline


COMMANDS = {"sbatch": sbatch, "srun": srun, "scontrol": scontrol, "scancel": cancel, "squeue": squeue,
            "sacct": sacct, "qsub": qsub, "qdel": cancel, "qstat": qstat, "mpiexec": pbs_mpiexec,
            "hostname": hostname, "ray": ray, "wait": wait, "shutdown": shutdown,
            "_run": lambda args: run_job(args[0])}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        die(f"usage: fakecluster.py {{{','.join(COMMANDS)}}} ARGS")
    COMMANDS[sys.argv[1]](sys.argv[2:])
