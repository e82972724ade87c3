"""The torch device of a task: ``cuda`` when the engine gave the task a GPU and torch sees one, else ``cpu``.

An engine that places a task on GPUs (``dtl_dist.engines.ray``: a Ray task or Tune trial with ``num_gpus``)
runs it inside :func:`task_gpus` with the GPU ids it was given; the trainer, the batched PLS kernel and the
streamed library trainer take ``device=None`` to mean :func:`task_device`. Ray makes only the assigned GPUs
visible to the task (``CUDA_VISIBLE_DEVICES``), so ``cuda`` is the task's own GPU, shared with the other
tasks of a fractional request (``--gpus-per-trial 0.25``: four tasks per GPU). Without a GPU build of torch
(or outside an engine's task) the device is the CPU, so a study asked for GPUs on a CPU-only machine gives the
same numbers as one that was not.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

_TASK_GPUS: ContextVar[tuple] = ContextVar("dtl_task_gpus", default=())


@contextmanager
def task_gpus(ids):
    """Run the body as a task the engine gave the GPUs ``ids`` (e.g. ``ray.get_gpu_ids()``)."""
    token = _TASK_GPUS.set(tuple(str(i) for i in ids))
    try:
        yield
    finally:
        _TASK_GPUS.reset(token)


def assigned_gpus() -> tuple:
    """The GPU ids the engine gave the running task (empty: none, or not in a task)."""
    return _TASK_GPUS.get()


def task_device(gpu_ids=None) -> str:
    """``"cuda"`` when the task was given a GPU (``gpu_ids``, default :func:`assigned_gpus`) and torch has CUDA,
    else ``"cpu"``."""
    import torch

    ids = assigned_gpus() if gpu_ids is None else tuple(gpu_ids)
    return "cuda" if ids and torch.cuda.is_available() else "cpu"


def resolve_device(device=None):
    """``device``, or the task's (:func:`task_device`) when None, as a ``torch.device``."""
    import torch

    return torch.device(task_device() if device is None else device)


def rank_device(local_rank: int) -> str:
    """Device of data-parallel rank ``local_rank`` on its node (``torchrun``): ``cuda:<local_rank>`` when torch
    sees that many GPUs, else ``cpu`` (gloo ranks on CPU cores)."""
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() and local_rank < torch.cuda.device_count() else "cpu"
