"""Agreement across DDP ranks for the statistics SPN keeps itself (the adaptive refresh's residual, the
running averages of ``weight="auto"``): averaged over all ranks when a process group is running, so every
rank takes the same decisions as one process with the same global batch."""
from __future__ import annotations

import torch
import torch.distributed as dist


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged over the ranks of the default process group (unchanged without one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()
