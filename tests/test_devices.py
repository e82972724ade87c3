"""Device choice (issue 19), on the CPU: a task given a GPU trains on ``cuda`` when torch has CUDA (monkeypatched
here: the CPU build then refuses the CUDA tensors, which shows the trainer and the PLS kernel put them there),
otherwise on the CPU; outside a task, the CPU. The math itself is covered by the trainer and PLS tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtl_dist.devices import assigned_gpus, rank_device, resolve_device, task_device, task_gpus
from dtl_dist.linear import pls1_fit
from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock
from dtl_dist.nn.trainer import Split, TrainConfig, fit_model, train_splits

CONFIG = CNNConfig([ConvBlock(4, 5, stride=2)], [FCBlock(8)])
TRAIN = TrainConfig(batch_size=8, max_epochs=2, patience=2)


@pytest.fixture
def cuda(monkeypatch):
    """torch claims two CUDA devices (the CPU build still cannot make CUDA tensors)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def _data(n=24, bands=40):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, bands)).astype(np.float32), rng.normal(size=n).astype(np.float32)


def test_the_device_is_cuda_only_for_a_task_given_a_gpu_when_torch_has_cuda(cuda, monkeypatch):
    assert task_device() == "cpu" and assigned_gpus() == ()  # not in a task
    with task_gpus(["1"]):
        assert assigned_gpus() == ("1",) and task_device() == "cuda" and resolve_device(None).type == "cuda"
        assert resolve_device("cpu").type == "cpu"  # an explicit device wins
    assert task_device() == "cpu"  # the task's GPUs end with it
    assert task_device(gpu_ids=[]) == "cpu"
    assert rank_device(1) == "cuda:1" and rank_device(2) == "cpu"  # torchrun rank beyond the node's GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with task_gpus(["0"]):  # a GPU from Ray, but a CPU build of torch: the CPU
        assert task_device() == "cpu"


def test_trainer_and_pls_kernel_put_a_gpu_tasks_tensors_on_cuda(cuda):
    X, y = _data()
    split = [Split(np.arange(16), np.arange(16, 24))]
    with task_gpus(["0"]):
        for train in (lambda: train_splits(X, y, split, CONFIG, TRAIN, [0], mode="vectorised"),
                      lambda: fit_model(X[:16], y[:16], CONFIG, TRAIN, validation=(X[16:], y[16:])),
                      lambda: pls1_fit(X[None], y[None], 2)):
            with pytest.raises((AssertionError, RuntimeError), match="CUDA|cuda"):
                train()


def test_a_cpu_task_trains_on_the_cpu_and_keeps_its_weights_there():
    X, y = _data()
    with task_gpus([]):
        stopper, = train_splits(X, y, [Split(np.arange(16), np.arange(16, 24))], CONFIG, TRAIN, [0])
    assert all(v.device.type == "cpu" for v in stopper.state.values())
