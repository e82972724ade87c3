"""One study per run directory: a lock that a live ``dtl study`` holds and a dead one does not.

The lock is ``fcntl.flock`` on ``RUN/study.lock``: the kernel releases it when the holder exits, however it
exits (SIGKILL, a node's out-of-memory killer), so a killed study never blocks its ``--resume``. While it holds
the lock a study is the only writer of the directory, so the temporaries a killed writer left behind (a
model directory or metrics.csv written but not yet renamed) can be removed. A study that ends removes the file
(a refused ``--resume`` leaves the directory as it found it); a process that locked a file another one removed
meanwhile sees that the path no longer names its file and locks the new one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dtl_dist.errors import UserInputError

LOCK_FILE = "study.lock"


class RunLock:
    """Hold ``out/study.lock`` (creating ``out``) until :meth:`release`, or refuse at once.

    Raises
    ------
    UserInputError
        When another live process holds the lock (its process id, as it wrote it, is named).
    """

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(self._fd, 64).decode(errors="replace").strip() or "?"
                os.close(self._fd)
                raise UserInputError(f"--out {self.path.parent}: another dtl study (process {holder}) is running "
                                     "in this directory; wait for it to end or choose another --out") from None
            if self._names_our_file():
                break
            os.close(self._fd)  # the holder removed this file as we locked it: lock the path's new file
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def _names_our_file(self) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file, then let another study have the directory."""
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1
