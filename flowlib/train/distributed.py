"""Training one model on several processes (``torchrun``): who does what, and the few collectives.

    torchrun --nproc_per_node=2 -m flowlib.train --preset mnist-fast --steps 2000   # one machine
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
        -m flowlib.train ...                                                         # two machines

How the work is split (``flowlib.train`` does it; this module holds the pieces):

* Every rank walks the *same* seeded batch order; each global batch of ``batch_size`` images
  is cut into ``world_size`` equal shards and rank r trains on shard r. Dequantisation noise
  is drawn for the whole global batch from the same generator on every rank and sliced the
  same way. So N processes see exactly the images and the noise one process would.
* Gradients are averaged by DistributedDataParallel; every rank then clips and steps the
  same way, so the model stays identical everywhere.
* ActNorm's data-dependent start: every rank builds the same seeded first batch (the whole
  of it, not a shard) and initialises from it, so all ranks start from the same scale and
  shift with no collective inside the model. (Initialising each rank from its own shard
  gives N different models that DDP then silently averages — the bug of public Glow ports,
  rosinality/glow-pytorch issues 2 and 46.)
* Only rank 0 writes: the run store (metrics, events, heartbeats), checkpoints and sample
  grids. Decisions that depend on it — stop requested, time budget spent — are taken by
  rank 0 and broadcast every step, so all ranks stop at the same step.
* Resume and rollback read rank 0's checkpoint file, so several machines need a shared
  filesystem for the run folder (one machine always has one).

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`from_env` reads them and joins the process group (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from flowlib.store.limits import Limits
from flowlib.store.runs import RunFolders

__all__ = ["Dist", "SINGLE", "from_env", "shard_slice", "all_reduce_mean", "broadcast_values",
           "broadcast_object", "FollowerStore", "is_peer_lost"]


@dataclass(frozen=True)
class Dist:
    """This process's place in a distributed run (world_size 1: an ordinary run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_env(device_type: str = "cpu") -> Dist:
    """The process group ``torchrun`` describes in the environment, joined; SINGLE if none."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return Dist(rank, world, local_rank)


def shard_slice(global_batch: int, d: Dist) -> slice:
    """Rank r's rows of a global batch (equal shards; the batch must divide evenly)."""
    if global_batch % d.world_size:
        raise ValueError(f"batch_size {global_batch} does not split evenly over {d.world_size} processes; "
                         f"use a multiple of {d.world_size}")
    per = global_batch // d.world_size
    return slice(d.rank * per, (d.rank + 1) * per)


# How a collective reads when another rank is gone: NCCL raises DistBackendError, a broken
# rendezvous DistNetworkError; gloo raises a plain RuntimeError naming its TCP transport
# ("[.../gloo/transport/tcp/pair.cc:537] Read error ...: Connection reset by peer").
_PEER_LOST_WORDS = ("gloo/transport", "connection reset by peer", "connection closed by peer", "broken pipe")


def is_peer_lost(exc: BaseException) -> bool:
    """Whether ``exc``, raised in a torchrun process, says that another rank is gone (killed,
    crashed, or its connection broke) rather than that this rank's own work failed."""
    errors = tuple(e for e in (getattr(dist, "DistBackendError", None), getattr(dist, "DistNetworkError", None))
                   if e is not None)
    if errors and isinstance(exc, errors):
        return True
    return isinstance(exc, RuntimeError) and any(words in str(exc).lower() for words in _PEER_LOST_WORDS)


def all_reduce_mean(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean over ranks of a float tensor (in place on a copy); the tensor itself if alone."""
    if not d.active:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / d.world_size


def broadcast_values(values: list[float], d: Dist, device: torch.device) -> list[float]:
    """Rank 0's numbers (decisions, the learning rate), on every rank: one tiny broadcast.

    float64, so a learning rate arrives bit for bit."""
    if not d.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return t.tolist()


def broadcast_object(obj, d: Dist):
    """Rank 0's picklable object, on every rank."""
    if not d.active:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class FollowerStore(RunFolders):
    """What a rank other than 0 sees of the run store: the run's folder, the server's limits
    and the run as rank 0 announced it. Rank 0 alone records metrics, events and the status;
    the others only read checkpoints (resume, rollback) from the run's folder, so this has
    no write methods: a call to one is an AttributeError, not a silent no-op."""

    def __init__(self, root, run: dict, limits: Limits | None = None):
        self.root = Path(root)
        self.limits = limits if limits is not None else Limits.from_env()
        self._run = dict(run)

    def get_run(self, run_id: int) -> dict:
        return dict(self._run)

    def latest_metrics(self, run_id: int) -> dict:
        """Nothing: rank 0 reads the curve; a follower resumes from the checkpoint alone."""
        return {}

    def truncate_after(self, run_id: int, step: int) -> int:
        """Nothing to drop: rank 0 truncates the stored curve before re-training from ``step``."""
        return 0
