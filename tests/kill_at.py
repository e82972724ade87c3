"""``python tests/kill_at.py GLOB dtl ARGS...``: run ``dtl ARGS`` and SIGKILL it the moment it is about to
publish a path matching GLOB (:func:`dtl_dist.library.atomic.replace_path`: the temporary is written, the
rename to the final name not done), i.e. a study killed while metrics.csv or a model directory is written."""

from __future__ import annotations

import fnmatch
import os
import runpy
import signal
import sys

from dtl_dist.library import atomic

pattern = sys.argv[1]
publish = atomic.replace_path


def replace_path(tmp, path):
    if fnmatch.fnmatch(str(path), pattern):
        sys.stderr.write(f"kill_at: SIGKILL before publishing {path}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    publish(tmp, path)


atomic.replace_path = replace_path
sys.argv = sys.argv[2:]
runpy.run_module("dtl_dist.cli", run_name="__main__")
