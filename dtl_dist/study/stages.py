"""A study as a small DAG of stages that run concurrently and are skipped when already done.

Each :class:`Stage` names the stages it needs and a function that writes its outputs into its own directory
``RUN/stages/NAME`` and returns a JSON-safe summary. A stage's key is a hash of its inputs (the study's
result options and the keys of the stages it needs); ``stage.json``, written last, records the key, the
summary and the wall time, so a rerun skips every stage whose ``stage.json`` holds the same key and a killed
study resumes at the stages that had not finished. Stages whose inputs are ready run at the same time, in
threads of the driver: their heavy work goes to the engines (Dask for RS-LOCAL, Ray for searches and
transfers).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import write_json

STAGE_FILE = "stage.json"


@dataclass(frozen=True)
class Stage:
    """One piece of work of a study: ``run(directory) -> summary`` after the stages in ``needs``; ``kind``
    (rslocal, search, transfer, baseline) lets a job run some kinds only (:func:`run_stages`, ``only``)."""

    name: str
    run: Callable[[Path], dict]
    needs: tuple = ()
    kind: str = ""


def stage_key(name: str, options: dict, needed: list[str]) -> str:
    """Hash of a stage's inputs: its name, the study's result options and the keys of the stages it needs."""
    text = json.dumps({"stage": name, "options": options, "needs": needed}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_dir(out: Path, name: str) -> Path:
    return Path(out) / "stages" / name.replace(":", "_")


def stage_summary(out: Path, name: str) -> dict:
    """The summary a finished stage recorded in its ``stage.json``."""
    return json.loads((stage_dir(out, name) / STAGE_FILE).read_text())["summary"]


def locked(echo: Callable[[str], None]) -> Callable[[str], None]:
    """``echo`` for several threads: one whole line at a time."""
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            echo(line)

    return say


def plan_stages(stages: list[Stage], out: Path, options: dict, only=None) -> tuple[dict, list[Stage], Callable]:
    """The keys of ``stages``, those to run (every kind in ``only``, or all; plus the finished ones, which are
    read back) and a ``finished(stage) -> summary or None``.

    Raises
    ------
    UserInputError
        When a stage to run needs a stage that is neither to run nor finished.
    """
    keys: dict[str, str] = {}
    for stage in stages:  # stages are listed after the ones they need
        keys[stage.name] = stage_key(stage.name, options, [keys[n] for n in stage.needs])

    def finished(stage: Stage) -> dict | None:
        record = stage_dir(out, stage.name) / STAGE_FILE
        if record.is_file():
            done = json.loads(record.read_text())
            if done.get("key") == keys[stage.name]:
                return done["summary"]
        return None

    chosen = [s for s in stages if only is None or s.kind in only or finished(s) is not None]
    names = {s.name for s in chosen}
    for stage in chosen:
        missing = [n for n in stage.needs if n not in names]
        if missing:
            raise UserInputError(f"--only {','.join(sorted(only))}: stage {stage.name} needs {', '.join(missing)}, "
                                 "which has not run yet; run its kind first")
    return keys, chosen, finished


def run_stages(stages: list[Stage], out: Path, options: dict, *, only=None,
               echo: Callable[[str], None] = print) -> dict:
    """Run ``stages`` (in dependency order, independent ones at the same time); return name -> summary of every
    stage that is done.

    A stage whose ``stage.json`` holds its current key is not run again. ``only`` (kinds of stage) runs those
    kinds alone, e.g. RS-LOCAL on CPU nodes in one job and the searches on GPU nodes in the next; a stage they
    need must have run before (:func:`plan_stages`). The first stage that raises stops the study (stages
    already running finish) and its exception propagates.
    """
    keys, chosen, finished = plan_stages(stages, out, options, only)
    start = time.perf_counter()
    futures: dict = {}

    def work(stage: Stage) -> dict:
        for name in stage.needs:
            futures[name].result()
        summary = finished(stage)
        if summary is not None:
            echo(f"[{time.perf_counter() - start:7.1f} s] {stage.name}: done before, skipped")
            return summary
        directory = stage_dir(out, stage.name)
        record = directory / STAGE_FILE
        directory.mkdir(parents=True, exist_ok=True)
        echo(f"[{time.perf_counter() - start:7.1f} s] {stage.name}: started")
        began = time.perf_counter()
        summary = stage.run(directory)
        seconds = time.perf_counter() - began
        write_json(record, {"key": keys[stage.name], "seconds": seconds, "summary": summary})
        echo(f"[{time.perf_counter() - start:7.1f} s] {stage.name}: done in {seconds:.1f} s")
        return summary

    with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
        for stage in chosen:
            futures[stage.name] = pool.submit(work, stage)
        done, _ = wait(futures.values(), return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for future in futures.values():
                future.cancel()
            raise failed[0].exception()
    return {name: future.result() for name, future in futures.items()}
