"""torch.distributed set-up for torchrun (NCCL on CUDA, gloo on CPU) and the collectives training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1  # processes on this machine (they share its cores)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: str = "auto") -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is None:
            dist.init_process_group(backend)
        else:
            # After a torchrun restart the rendezvous keys of the failed attempt are still in the agent's store;
            # a prefix per attempt keeps the new workers from dialling the dead ones' addresses.
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                world,
                is_master=os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and rank == 0,
            )
            dist.init_process_group(
                backend, store=dist.PrefixStore(f"attempt{restart}", store), rank=rank, world_size=world
            )
    return DistInfo(rank, world, local, dev, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this is the process that writes files and logs (rank 0, or the only one)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_reduce_sum(value: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    """Sum (or ``op``) over processes (no-op with one); returns a new tensor on ``value``'s device. NCCL reduces
    CUDA tensors only: a CPU tensor goes to this process's GPU and back."""
    value = value.detach().clone()
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl" and not value.is_cuda:
            on_gpu = value.cuda()
            dist.all_reduce(on_gpu, op=op)
            return on_gpu.to(value.device)
        dist.all_reduce(value, op=op)
    return value


def agree_on_min(value: int) -> int:
    """The smallest of every process's ``value`` (itself with one process)."""
    return int(all_reduce_sum(torch.tensor([value], dtype=torch.int64), dist.ReduceOp.MIN).item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
