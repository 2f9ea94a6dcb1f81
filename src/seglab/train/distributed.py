"""Training on several processes started by `torchrun`: DistributedDataParallel over NCCL on GPUs
and gloo on CPUs. Without torchrun's environment everything here is a no-op on a single process.

Each rank draws its own patches (its own random stream), gets `batch_size / world` of the plan's
batch so that a plan means the same optimisation on any number of processes (as nnU-Net does),
validates its share of the validation cases, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "Distributed":
        """Joins the process group torchrun describes (WORLD_SIZE > 1), once per process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if cuda else "gloo")
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def wrap(self, model: torch.nn.Module, find_unused: bool) -> torch.nn.Module:
        """The model in DDP (gradients averaged across ranks at each step); itself on one process."""
        if not self.active:
            return model
        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids,
                                       find_unused_parameters=find_unused)

    def shutdown(self) -> None:
        if self.active and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

