"""torch.distributed engine: data-parallel library training over several GPUs (or CPU processes).

The global and country 1D-CNNs learn from whole spectral libraries (paper section 2.3.1, Table 2).
:func:`dtl_dist.nn.stream.fit_library` takes a ``data_parallel`` engine; :class:`DataParallel` is the one for
processes started by ``torchrun`` (one per device)::

    torchrun --nproc_per_node=4 -m dtl_dist.engines.torch_ddp LIBRARY.zarr CNN_CONFIG.json OUT_MODEL_DIR

(``--nnodes``/``--rdzv-endpoint`` for several nodes). Rank 0 writes the model directory.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from dtl_dist.devices import rank_device


class DataParallel:
    """This process's place in a ``torch.distributed`` job: its rank, the world size, its device and a model
    wrapper (``DistributedDataParallel``, which averages gradients over the ranks).

    The device is ``cuda:LOCAL_RANK`` when torch sees that GPU (:func:`dtl_dist.devices.rank_device`; made the
    current CUDA device before NCCL starts, so each rank talks through its own GPU), else the CPU with gloo.
    Joins the default process group from the ``torchrun`` environment unless the caller already initialised one.
    """

    def __init__(self):
        self.device = torch.device(rank_device(int(os.environ.get("LOCAL_RANK", 0))))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def wrap(self, model):
        if self.world_size == 1:
            return model
        if self.device.type == "cuda":
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index],
                                                             output_device=self.device.index)
        return torch.nn.parallel.DistributedDataParallel(model)

    @staticmethod
    def close() -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv=None) -> int:  # pragma: no cover - exercised through torchrun by users
    """``torchrun ... -m dtl_dist.engines.torch_ddp LIBRARY CNN_CONFIG.json OUT_DIR``: data-parallel training."""
    from dtl_dist.library import SpectralLibrary
    from dtl_dist.nn.builder import CNNConfig
    from dtl_dist.nn.model_dir import save_model
    from dtl_dist.nn.stream import fit_library
    from dtl_dist.nn.trainer import TrainConfig

    library_path, config_path, out = (argv or sys.argv[1:])[:3]
    spec = json.loads(Path(config_path).read_text())
    parallel = DataParallel()
    library = SpectralLibrary.open(library_path)
    cnn_config = CNNConfig.from_dict(spec["cnn_config"])
    fit = fit_library(library, cnn_config, TrainConfig.from_dict(spec.get("train_config", {})), device=parallel.device,
                      data_parallel=parallel)
    if parallel.rank == 0:
        save_model(out, cnn_config, [fit.state_dict], wavelengths=library.wavelengths,
                   training={"train_config": spec.get("train_config", {}), "epochs": fit.epochs},
                   provenance={"library": str(library_path)})
    parallel.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
