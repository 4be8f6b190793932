"""Process-group setup for torchrun (one or many nodes) and SLURM (srun), or a single process."""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
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


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list: 'node[01-03,07],gpu5' -> 'node01' (what `scontrol show hostnames`
    would list first, without needing scontrol)."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):  # the first comma outside brackets ends the first entry
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            end = i
            break
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[-,]", m.group(1))[0], nodelist[:end])


def _slurm_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) inside an srun step of several tasks. The batch script of an sbatch -n8
    allocation also carries SLURM_NTASKS=8 and SLURM_PROCID=0, but it is one process: only a step's own
    SLURM_STEP_NUM_TASKS counts."""
    world = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if world <= 1 or "SLURM_PROCID" not in os.environ:
        return None
    if "MASTER_ADDR" not in os.environ:  # the step's first host hosts the rendezvous
        nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "localhost")
        os.environ["MASTER_ADDR"] = first_host(nodes)
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
    return int(os.environ["SLURM_PROCID"]), world, int(os.environ.get("SLURM_LOCALID", "0"))


def launch_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as set by torchrun (whatever its size: it wins over the Slurm step it
    may run in) or srun; (0, 1, 0) for a plain process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    return _slurm_env() or (0, 1, 0)


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was requested but no CUDA device is available")
        # modulo: with --gpus-per-task (or CUDA_VISIBLE_DEVICES per rank) each process sees only its own GPU
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


def init_distributed(device: str = "auto", timeout_s: float = 3600.0) -> DistInfo:
    """Join the process group if launched by torchrun/srun; nccl on GPUs, gloo on CPU. `timeout_s` bounds a
    collective (NCCL's default, 10 minutes, is shorter than rank 0's fsync of a large checkpoint)."""
    rank, world_size, local_rank = launch_env()
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(local_rank))
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local_rank, dev)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is True on any (one all-reduce under DDP; no-op otherwise)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
