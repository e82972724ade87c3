"""The study's run-directory lock (dtl_dist.study.lock): one live study per directory, none left by a dead one."""

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from dtl_dist.errors import UserInputError
from dtl_dist.study.lock import LOCK_FILE, RunLock

TAKE = "import sys, time; from dtl_dist.study.lock import RunLock; RunLock(sys.argv[1]); print('held', flush=True); " \
       "time.sleep(60)"


def test_a_second_study_is_refused_while_a_live_one_holds_the_directory(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", TAKE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserInputError, match=f"another dtl study \\(process {holder.pid}\\) is running"):
            RunLock(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lock = RunLock(tmp_path)  # the killed holder held nothing
    lock.release()


def test_a_released_lock_leaves_the_directory_as_it_was(tmp_path):
    (tmp_path / "study.json").write_text("{}")
    RunLock(tmp_path).release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.json"]


def test_a_lock_on_a_file_removed_meanwhile_moves_to_the_new_file(tmp_path, monkeypatch):
    """The race of removing the file: B opened the old file, A removed it and ended, B locks the removed file.
    B must not think it holds the directory (C would lock a new file beside it): it locks the path's file."""
    stale = os.open(tmp_path / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    os.unlink(tmp_path / LOCK_FILE)
    real_open = os.open
    calls = []

    def open_stale_first(path, *args):
        calls.append(path)
        return os.dup(stale) if len(calls) == 1 else real_open(path, *args)

    monkeypatch.setattr(os, "open", open_stale_first)
    lock = RunLock(tmp_path)
    monkeypatch.undo()
    assert len(calls) == 2  # it saw the removed file and opened the path again
    probe = real_open(tmp_path / LOCK_FILE, os.O_RDWR)
    with pytest.raises(BlockingIOError):  # the file at the path is the one held
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(probe)
    lock.release()
    os.close(stale)
