"""torchrun support: ranks from the environment, the process group, and the whole-batch loss.

`torchrun --nproc_per_node N main.py train ...` runs N processes; each trains on its share of
every batch (`--batch-size` rows per process) and DistributedDataParallel averages gradients.
The contrastive losses score every caption against every image of the batch, so averaging
per-process losses would lose the other processes' negatives: `gather_rows` gives every
process the whole batch's embeddings, and its backward hands each process the gradient of
its own rows, so N processes of batch B take the step one process of batch N*B would take.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world) from torchrun's environment; (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world, device); starts the process group under torchrun (idempotent)."""
    rank, local, world = dist_info()
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a cache), the others after it (and read it)."""
    setup_distributed()
    if not is_distributed():
        yield
        return
    if dist.get_rank() != 0:
        dist.barrier()
    yield
    if dist.get_rank() == 0:
        dist.barrier()


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's decision, on every rank (e.g. early stopping decided on rank 0's val)."""
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, 0)
    return bool(t.item())


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # Every process computed the same whole-batch loss L, so summing over processes gives
        # N * dL/d(own rows); DDP then averages the parameter gradients: exactly dL/dtheta.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows of `x`, in rank order, keeping the gradient path to this process's
    own rows; `x` itself outside torchrun. All processes must pass the same number of rows."""
    return _GatherRows.apply(x) if is_distributed() else x
