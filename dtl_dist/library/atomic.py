"""Write-then-rename helpers: a failed write leaves no partial output and an existing one unchanged."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path


TEMPORARY = re.compile(r"\..+\.tmp-[0-9a-f]{12}")
"""Name of a :func:`temporary_sibling`."""


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden path next to ``path`` (same file system, so the final rename is atomic)."""
    path = Path(path)
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"


def replace_path(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path``; an existing ``path`` (file or directory) is swapped out, then removed."""
    tmp, path = Path(tmp), Path(path)
    if path.is_dir():
        trash = temporary_sibling(path)
        os.replace(path, trash)
        os.replace(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, path)


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree if it exists."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    replace_path(tmp, path)


def write_text(path: Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def remove_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries (:func:`temporary_sibling`) that a killed writer left anywhere under ``folder``;
    only for a folder no live process writes to (e.g. under a :class:`~dtl_dist.study.lock.RunLock`). Returns
    what was removed."""
    found = sorted(p for p in Path(folder).rglob(".*.tmp-*") if TEMPORARY.fullmatch(p.name))
    for path in found:
        remove_path(path)
    return found
