"""Single-process and torchrun/DDP training: process group, device, sharded deterministic batches.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) the process group uses NCCL on GPUs and
Gloo on CPUs. Every global batch is one slice of the epoch's order (a pure function of seed and epoch);
rank ``r`` takes the ``r``-th equal part of it, so W ranks together see exactly the batch one process would,
and the gradient DDP averages equals the single-process one. Only rank 0 writes files.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from spnir.device import pick_device
from spnir.errors import SpnirError


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join torchrun's process group when launched by it; otherwise a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=pick_device(device_preference, setting="train.device"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank, setting="train.device")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(minutes=30)
        store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
        # torchrun's c10d rendezvous keeps one store across restarts: the keys of each attempt get their own
        # prefix, or restarted ranks may read a dead rank's address and fail to connect
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend, store=dist.PrefixStore(f"spnir/attempt{attempt}/", store), rank=rank,
                                world_size=world_size, timeout=timeout)
    return DistContext(rank, world_size, local_rank, device)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum over ranks (in place; a no-op in a single process)."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


class ShardedBatchSampler(Sampler):
    """This rank's part of each global batch, endless, starting at global step ``start_step``.

    ``order(epoch)`` gives the epoch's permutation of dataset indices. An epoch has
    ``length // global_batch`` steps (the last partial batch is dropped). Yields lists of
    ``(epoch, index)`` keys, the form :class:`spnir.data.datasets.PatchDataset` reads.
    """

    def __init__(self, order: Callable[[int], list[int]], length: int, global_batch: int,
                 ctx: DistContext, start_step: int = 0) -> None:
        if global_batch % ctx.world_size:
            raise SpnirError(f"data.train.batch_size {global_batch} does not divide evenly over "
                             f"{ctx.world_size} processes")
        if length < global_batch:
            raise SpnirError(f"the training set has {length} samples, fewer than data.train.batch_size "
                             f"{global_batch}; raise data.train.enlarge or lower the batch size")
        self.order, self.length, self.global_batch = order, length, global_batch
        self.per_rank = global_batch // ctx.world_size
        self.rank = ctx.rank
        self.start_step = start_step

    @property
    def steps_per_epoch(self) -> int:
        return self.length // self.global_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        epoch, cached = -1, []
        while True:
            e, b = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, cached = e, self.order(e)
            start = b * self.global_batch + self.rank * self.per_rank
            yield [(epoch, i) for i in cached[start:start + self.per_rank]]
            step += 1
