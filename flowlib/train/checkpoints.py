"""A run's checkpoint: what it holds, writing it, and continuing from it (resume, rollback).

    checkpoints = Checkpoints(store.checkpoint_path(run_id), run_id, tc, cfg, dist)
    checkpoints.save(learner, budget, evaluation)             # rank 0 writes; every rank counts
    ckpt = checkpoints.read(device)
    checkpoints.restore(ckpt, learner, evaluation)            # the budget loads its own part

One file per run, replaced atomically (``flowlib.core.checkpoint.save_checkpoint``): it holds
everything a resumed run needs to continue as an uninterrupted one (:meth:`Checkpoints.payload`
lists the keys; on one process with a fixed thread count the weights match bit for bit, as
tests/train/test_loop.py checks), and how to rebuild the model (``config``) for anyone who only wants the model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from flowlib.config import FlowConfig, TrainConfig
from flowlib.core.checkpoint import CheckpointError, load_checkpoint, model_payload, save_checkpoint
from flowlib.store.runs import RunStore

from .budget import Budget
from .distributed import Dist
from .evaluation import Evaluation
from .setup import Learner

__all__ = ["Checkpoints"]


class Checkpoints:
    """The checkpoint file of one run (see the module's docstring).

    ``write(path, payload)`` writes it (``save_checkpoint`` unless a session was given another);
    ``clock`` times the interval between checkpoints (``TrainConfig.checkpoint_every_minutes``).
    ``last_step`` is the step of the newest checkpoint this session wrote (on ranks other than
    0: rank 0 wrote) or read; None before the first.
    """

    def __init__(self, path: Path, run_id: int, tc: TrainConfig, cfg: FlowConfig, dist: Dist,
                 write: Callable[[Path, dict], None] = save_checkpoint,
                 clock: Callable[[], float] = time.monotonic):
        self.path, self.run_id, self.tc, self.cfg, self.dist = path, run_id, tc, cfg, dist
        # What messages call it: run-00003/checkpoint.pt, never the server's path to it.
        self.shown = f"{Path(path).parent.name}/{Path(path).name}"
        self.write, self.clock = write, clock
        self.last_step: int | None = None
        self.last_time = clock()
        self.class_names: tuple = ()        # the dataset's label names, set once the data is loaded

    def payload(self, learner: Learner, budget: Budget, evaluation: Evaluation) -> dict:
        """The checkpoint's contents: the model's ``format``, ``version``, ``config`` and ``model``
        (weights); ``optimizer``, ``step``, ``rng`` (torch's global generator, the noise
        generator, CUDA's), ``sampler`` (the batch order), ``grad_clip``; ``dataset``,
        ``dataset_options``, ``train`` (the TrainConfig); the budget's ``elapsed_s``,
        ``lr_scale``, ``rollbacks``; the evaluation's ``best_test_bpd`` (and ``early_stop`` with
        early stopping on); ``run_id`` and ``saved`` (the wall time); for a conditional model,
        ``class_names`` (the dataset's name of each label, when it has names)."""
        tc, device = self.tc, learner.device
        rng = {"torch": torch.get_rng_state(), "noise": learner.batches.noise.get_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {**model_payload(learner.model), "optimizer": learner.optimizer.state_dict(), "step": learner.step,
                "rng": rng, "sampler": learner.batches.order.state(), "dataset": tc.dataset,
                "dataset_options": dict(tc.dataset_options), "train": tc.to_dict(), **evaluation.state(),
                **budget.state(), "grad_clip": learner.clip.state(), "run_id": self.run_id, "saved": time.time(),
                **({"class_names": list(self.class_names)} if self.cfg.conditional and self.class_names else {})}

    def save(self, learner: Learner, budget: Budget, evaluation: Evaluation) -> None:
        """Write the checkpoint of the learner's step (rank 0 only; the others keep the count)."""
        # the payload holds live tensors; torch.save copies them to the file synchronously
        if self.dist.is_main:
            self.write(self.path, self.payload(learner, budget, evaluation))
        self.last_step = learner.step
        self.last_time = self.clock()

    def restart_timer(self) -> None:
        """The interval to the next periodic checkpoint starts now."""
        self.last_time = self.clock()

    def due(self) -> bool:
        """``checkpoint_every_minutes`` have passed since the last checkpoint (or restart_timer)."""
        return self.clock() - self.last_time >= self.tc.checkpoint_every_minutes * 60

    def read(self, device: torch.device) -> dict:
        return load_checkpoint(self.path, map_location=device, shown=self.shown)

    def restore(self, ckpt: dict, learner: Learner, evaluation: Evaluation) -> None:
        """Put the learner and the evaluation back to a checkpoint (and torch's generators).

        The budget is not touched: a resume loads its part (``Budget.load``), a rollback keeps
        the time running and lowers the learning rate instead."""
        if FlowConfig.from_dict(ckpt["config"]) != self.cfg:
            raise CheckpointError(f"{self.shown}: its model config differs from this run's")
        learner.model.load_state_dict(ckpt["model"])
        learner.optimizer.load_state_dict(ckpt["optimizer"])
        learner.step = int(ckpt["step"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        learner.batches.noise.set_state(ckpt["rng"]["noise"])
        if "cuda" in ckpt["rng"] and learner.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), learner.device)
        learner.batches.order.load(ckpt["sampler"])
        evaluation.load(ckpt)
        learner.clip.load(ckpt.get("grad_clip"))
        self.last_step = learner.step

    def refuse_lost(self, store: RunStore) -> None:
        """Before a fresh start without a checkpoint: CheckpointError if the run had trained
        (a stored step or metrics), since training again from step 0 would append a second
        curve over the first."""
        stored = store.get_run(self.run_id)
        trained = stored["step"] if stored is not None else 0
        if trained or store.latest_metrics(self.run_id):
            raise CheckpointError(
                f"{self.shown}: this run trained to step {trained:,} but its checkpoint is "
                "missing (was its folder deleted?); it was not restarted from step 0, which "
                "would mix two trainings in one curve. Start a new run instead.")
