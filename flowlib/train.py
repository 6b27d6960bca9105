"""The training loop: headless runs the app can watch.

Beside it: the settings in ``flowlib.config``, the command line (``python -m flowlib.train``)
in ``flowlib.cli``, heartbeat / stop flag / signals in ``flowlib.session``, the PNG sample
grids in ``flowlib.samples``.

    from flowlib.store import RunStore
    from flowlib.train import TrainConfig, train_run
    store = RunStore()
    run_id = store.create_run("mnist-a", "mnist", preset("mnist-fast").to_dict(),
                              TrainConfig(dataset="mnist", max_steps=2000).to_dict())
    store.request_start(run_id)          # claims a concurrency slot (the worker does this for the app)
    train_run(store, run_id)             # trains in this process; everything lands in the store

Every knob lives in :class:`TrainConfig` (the model's in ``FlowConfig``, both declared in
``flowlib.config``); ``train_run`` reads both from the store, so the app, the worker and the CLI train identically.

What it logs (metric keys in the store, every ``log_every`` steps, means over those steps):

``loss_nats``        discrete negative log-likelihood in nats per image: train_bpd · D · ln 2
``train_bpd``        bits/dim of the training batches (dequantised as the model's config says)
``bpd_prior_L{i}``   the part of train_bpd from level i's latent prior, finest first
``bpd_logdet``       the part from Σ log|det J| (negative when the flow expands volume);
                     train_bpd = Σ bpd_prior_L{i} + bpd_logdet [+ bpd_dequant] + n_bits
``bpd_dequant``      only for learned (variational) dequantisation: the part from log q(u|x)
``grad_norm``        gradient norm before clipping
``lr``               learning rate at the step (warm-up × rollback drops)
``images_per_s``     training throughput over the window (eval and checkpoint time excluded)
``elapsed_s``        training wall time of the run so far, across resumes
``epoch``            images seen / epoch size
``test_bpd``         every eval: bits/dim on a fixed held-out subset (fixed noise, comparable)
``test_bpd_full``    once, at the end: bits/dim on the whole test split

Events (kind, step, message): start, resume, nan_skip, rollback, lr_drop, eval, checkpoint,
samples, warning, error, stop, finish.

Non-finite loss or gradient: the step is skipped (no optimizer update) and recorded; after
``nan_patience`` in a row the model, optimizer and sampler roll back to the last checkpoint
(one is written right after ActNorm's init, so there always is one), the learning rate is
multiplied by ``lr_drop``, and both are recorded. After ``MAX_ROLLBACKS`` rollbacks the run
fails with a message saying so: it never trains on NaNs silently and never dies silently.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import torch

from .checkpoint import CheckpointError, load_checkpoint, model_payload, save_checkpoint
from .config import LR_SCHEDULES, PRESET_LR, FlowConfig, TrainConfig  # noqa: F401 (re-exported)
from .data import DatasetError, load_images
from .device import bf16_is_fast, configure_threads, describe_device, pick_device
from .distributed import SINGLE, Dist, all_reduce_mean, broadcast_values, shard_slice
from .layers import low_precision_networks, noise_shard
from .model import FlowModel
from .optim import make_optimizer  # noqa: F401 (re-exported: benchmarks and scripts use it)
from .samples import write_sample_grid
from .session import STOP_POLL_S, Monitor, append_log, persist, stop_signals
from .speed import tune_for_training
from .threads import ThreadGovernor
from .train_parts import (EVAL_BATCH, EVAL_SEED, _GradClip, _LossModule, _Sampler,  # noqa: F401
                          augment_batch, evaluate_bpd)   # evaluate_bpd is re-exported: tests and scripts use it
from .store import RunStore, StoreBusyError, StoreUnavailableError

__all__ = ["TrainConfig", "RunResult", "train_run", "describe_failure", "write_sample_grid",
           "evaluate_bpd", "make_optimizer", "TrainingDiverged", "MAX_ROLLBACKS",
           "LR_SCHEDULES", "PRESET_LR"]

MAX_ROLLBACKS = 8           # lr is then lr_drop**8 of the original (1/256 at 0.5): give up, say so
SAMPLE_SEED = 1234          # fixed latents, so successive grids show the same samples improving


class TrainingDiverged(RuntimeError):
    """Non-finite losses kept coming back after every rollback and learning-rate drop."""


class OutOfMemoryAtBatch(RuntimeError):
    """A training step ran out of memory; ``fits`` is the largest halved batch size whose step
    was tried afterwards and fitted (None: not even one image), and the checkpoint holds
    every step before the failed one."""

    def __init__(self, batch: int, fits: int | None, step: int, device: str):
        self.batch, self.fits, self.step = batch, fits, step
        where = "this GPU" if device == "cuda" else f"this {device}"
        if fits is None:
            advice = (f"Not even a batch of 1 fits on {where} now: the model is too large for it "
                      "(fewer levels, flow steps or hidden channels), or other programs hold its memory.")
        else:
            advice = (f"A step with batch size {fits} fits on {where} (tried just after the failure): "
                      f"resume with batch size {fits}, or start a new run with it.")
        super().__init__(f"Out of memory at step {step + 1:,} with batch size {batch}. {advice}")


def _free_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class RunResult:
    status: str     # stopped | finished | failed
    message: str    # in words, for the app
    step: int


# --------------------------------------------------------------------------------- failures
def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower())


def _os_error_behind(exc: BaseException) -> OSError | None:
    """The OSError that caused ``exc``, if any: torch.save turns a failed write (a full disk)
    into ``RuntimeError: ... unexpected pos`` with the OSError only as its context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_failure(exc: BaseException, during: str = "", batch_size: int | None = None,
                     last_checkpoint_step: int | None = None) -> str:
    """A one-paragraph explanation of a failure for the app: what, when, what to do. No traceback.

    ``last_checkpoint_step``: pass it only when that checkpoint file still exists.
    """
    where = f" {during}" if during else ""
    kept = (f" The previous checkpoint (step {last_checkpoint_step}) is intact."
            if last_checkpoint_step is not None else "")
    if isinstance(exc, StoreUnavailableError):
        if exc.reason == "disk_full":
            return f"The disk is full (no space left on device){where}.{kept} Free some space, then resume."
        return f"The run store could not be used{where}: {exc}{kept}"
    if not isinstance(exc, OSError) and ("unexpected pos" in str(exc) or "failed writing" in str(exc)):
        cause = _os_error_behind(exc)
        if cause is not None:
            exc = cause
        else:   # torch.save's writer lost bytes: nearly always a full disk
            return (f"Writing a file failed{where} (the disk may be full: {str(exc).strip()[:200]})."
                    f"{kept} Free some space, then resume.")
    if isinstance(exc, OutOfMemoryAtBatch):
        return f"{exc}{kept}"
    if _is_oom(exc):
        smaller = f" (e.g. {max(1, batch_size // 2)} instead of {batch_size})" if batch_size else ""
        return (f"Out of memory{where}. Try a smaller batch size{smaller} or a smaller model "
                f"(fewer levels, steps or hidden channels).{kept}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"The disk is full (no space left on device){where}.{kept} Free some space, then resume."
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Permission denied{where} ({exc.filename or exc}).{kept}"
    if isinstance(exc, TrainingDiverged):
        return str(exc)
    if isinstance(exc, (DatasetError, CheckpointError)):
        return str(exc)
    if isinstance(exc, StoreBusyError):
        return f"The run database stayed locked{where}: {exc}"
    if isinstance(exc, ValueError):
        return f"Invalid setting{where}: {exc}"
    text = str(exc).strip().splitlines()
    detail = f": {text[0][:300]}" if text else ""
    return f"Training failed{where} ({type(exc).__name__}{detail}).{kept}"


# ---------------------------------------------------------------------------- pieces
def _compute_terms(model: FlowModel, x_uint8: torch.Tensor, generator: torch.Generator, autocast):
    """The model's bits/dim terms for one batch (tests patch this to inject NaN or OOM)."""
    with autocast():
        return model.bits_per_dim_terms(x_uint8, generator=generator)


# ---------------------------------------------------------------------------- the run
class _Training:
    """One training session of one run. Internal: all knobs are in TrainConfig / FlowConfig."""

    def __init__(self, store: RunStore, run: dict, monitor: Monitor,
                 should_stop: Callable[[], bool] | None, on_log: Callable[[dict], None] | None,
                 dist: Dist = SINGLE):
        self.store, self.run_id, self.monitor = store, run["id"], monitor
        self.dist = dist            # under torchrun: this rank; only rank 0 writes anything
        self.should_stop, self.on_log = should_stop, on_log
        self.tc = TrainConfig.from_dict(run["train"])
        self.cfg = FlowConfig.from_dict(run["config"])
        self.run_dir = store.run_dir(self.run_id)
        self.ckpt_path = store.checkpoint_path(self.run_id)
        self.stage = "while starting"
        self.step = 0
        self.last_ckpt_step: int | None = None
        self.best = None
        self.last_test = None
        # early stopping (TrainConfig.early_stop_evals): the best eval-subset score, its step and
        # weights, and how many evaluations since did not beat it
        self.early = {"best": None, "step": None, "since": 0, "weights": None}
        self.early_stopped = False
        self.metric_buffer: list[tuple] = []

    # -- helpers ----------------------------------------------------------------------
    def event(self, kind: str, message: str, step: int | None = None) -> None:
        if not self.dist.is_main:
            return
        try:
            self.store.add_event(self.run_id, kind, message, self.step if step is None else step)
        except StoreBusyError:
            pass  # an event lost to a locked database is better than a dead run

    def flush_metrics(self) -> None:
        if not self.metric_buffer or not self.dist.is_main:
            self.metric_buffer = [] if not self.dist.is_main else self.metric_buffer
            return
        try:
            self.store.append_metrics(self.run_id, self.metric_buffer)
            self.metric_buffer = []
        except StoreBusyError:
            if len(self.metric_buffer) > 100_000:  # a day-long lock: keep the newest
                self.metric_buffer = self.metric_buffer[-50_000:]

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.session_start)

    # -- setup ----------------------------------------------------------------------
    def setup(self) -> None:
        tc, cfg = self.tc, self.cfg
        self.set_up = False                 # train_run keeps the stored step until this is True
        self.server_cap_hit = False         # ended by the server's minutes cap (budget_reached)
        self.store.limits.check_run(cfg.to_dict(), tc.to_dict())
        self.stage = "while choosing the device"
        self.device = pick_device(tc.device)
        if self.dist.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)   # one GPU per rank
        shared_cores = None
        if self.dist.active and self.device.type == "cpu" and tc.threads is None:
            shared_cores = max(1, (os.cpu_count() or 1) // self.dist.world_size)   # ranks share the cores
        threads = configure_threads(self.device, tc.threads if shared_cores is None else shared_cores)
        # threads=None on a CPU of its own: the count follows the load (flowlib.threads). A fixed
        # count (a number, or the ranks' share under torchrun) stays put, so runs are bit-exact.
        self.governor = (ThreadGovernor(cores=threads) if self.device.type == "cpu" and tc.threads is None
                         and not self.dist.active and (os.cpu_count() or 1) > 1 else None)
        self.use_bf16 = tc.bf16 and bf16_is_fast(self.device)
        if self.device.type == "cpu":
            tune_for_training()
        torch.manual_seed(tc.seed)
        self.stage = f"while loading the {tc.dataset} dataset"
        train_set = load_images(tc.dataset, "train", **tc.dataset_options)
        test_set = load_images(tc.dataset, "test", **tc.dataset_options)
        shape = tuple(train_set.images.shape[1:])
        if shape != tuple(cfg.image_shape):
            c, h, w = cfg.image_shape
            raise ValueError(f"the model expects {c}×{h}×{w} images but {tc.dataset} images are "
                             f"{shape[0]}×{shape[1]}×{shape[2]}; set image_shape to match")
        self.stage = f"while moving the data to {self.device.type}"
        self.train_x = train_set.images.to(self.device).contiguous()
        test = test_set.images
        order = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(EVAL_SEED))
        self.eval_x = test[order[:min(tc.eval_subset, test.shape[0])]].to(self.device)
        self.test_x = test
        self.images_per_epoch = tc.epoch_size or self.train_x.shape[0]
        self.stage = "while building the model"
        self.model = FlowModel(cfg).to(self.device)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.params, tc.lr)
        self.clipper = _GradClip(tc.grad_clip, tc.grad_clip_relative)
        self.sampler = _Sampler(self.train_x.shape[0], tc.batch_size, tc.seed)
        self.noise_gen = torch.Generator().manual_seed(tc.seed + 1)
        self.lr_scale, self.rollbacks = 1.0, 0
        self.elapsed_before = 0.0
        self.session_start = time.monotonic()
        self.last_grid_step = None
        for stale in (self.run_dir.glob(".*.tmp") if self.dist.is_main else ()):  # left by a kill mid-write
            stale.unlink(missing_ok=True)
        where = describe_device(self.device)
        if self.dist.active:
            where += f" × {self.dist.world_size} processes (torchrun; global batch {tc.batch_size})"
        if self.ckpt_path.is_file():
            self.stage = "while loading the checkpoint"
            self.restore(load_checkpoint(self.ckpt_path, map_location=self.device))
            dropped = self.store.truncate_after(self.run_id, self.step)
            note = f"; {dropped} metric rows after it will be re-trained" if dropped else ""
            self.event("resume", f"resumed from the checkpoint at step {self.step} on {where}{note}")
        else:
            stored = self.store.get_run(self.run_id)
            trained = stored["step"] if stored is not None else 0
            if trained or self.store.latest_metrics(self.run_id):
                # Training again from step 0 would append a second curve over the first.
                raise CheckpointError(
                    f"{self.ckpt_path}: this run trained to step {trained:,} but its checkpoint is "
                    "missing (was its folder deleted?); it was not restarted from step 0, which "
                    "would mix two trainings in one curve. Start a new run instead.")
            self.stage = "while initialising ActNorm"
            gen = torch.Generator().manual_seed(tc.seed + 2)
            n_init = min(self.train_x.shape[0], max(tc.batch_size, 512))
            n_init -= n_init % self.dist.world_size          # equal shards under torchrun
            idx = torch.randperm(self.train_x.shape[0], generator=gen)[:n_init].to(self.device)
            with torch.no_grad():
                x0 = self.model.preprocess(self.train_x[idx], generator=gen)
                # each rank passes its shard; ActNorm all-reduces, so all start from the global batch
                self.model.initialize(x0[shard_slice(n_init, self.dist)])
            self.event("start", f"training {cfg.summary()} on {tc.dataset} ({self.train_x.shape[0]:,} "
                                f"images) on {where}; {self.model.num_parameters():,} parameters")
            self.stage = "while saving the first checkpoint"
            self.save_checkpoint(announce=False)
        if tc.bf16 and not self.use_bf16:
            self.event("warning", f"bf16 would be slower than float32 on this {self.device.type}; "
                                  "training in float32")
        self.eps = self.model.sample_eps(tc.samples_per_temperature, torch.Generator().manual_seed(SAMPLE_SEED))
        if self.step == 0 and self.dist.is_main and self.last_grid_step is None:
            # A grid before the first step: the page shows what an untrained flow samples
            # (noise) at once, instead of an empty panel until the first evaluation.
            self.stage = "while saving the first sample grid"
            path = write_sample_grid(self.model, self.eps, tc.sample_temperatures,
                                     self.run_dir / f"samples_step{0:07d}.png")
            self.last_grid_step = 0
            try:
                self.store.add_samples(self.run_id, 0, path)
            except StoreBusyError:
                pass
        self.ddp = None
        if self.dist.active:
            shard_slice(tc.batch_size, self.dist)       # refuses a batch that does not split evenly
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            try:   # buffers (ActNorm's "initialized" flag) are equal on every rank: no per-step sync
                self.ddp = DistributedDataParallel(_LossModule(self.model), device_ids=ids,
                                                   forward_sync_buffers=False)
            except TypeError:   # a torch from before forward_sync_buffers
                self.ddp = DistributedDataParallel(_LossModule(self.model), device_ids=ids,
                                                   broadcast_buffers=False)
        self.threads = threads
        self.set_up = True

    def payload(self) -> dict:
        tc = self.tc
        rng = {"torch": torch.get_rng_state(), "noise": self.noise_gen.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {**model_payload(self.model), "optimizer": self.opt.state_dict(), "step": self.step,
                "rng": rng, "sampler": self.sampler.state(), "dataset": tc.dataset,
                "dataset_options": dict(tc.dataset_options), "train": tc.to_dict(),
                "best_test_bpd": self.best, "elapsed_s": self.elapsed(), "lr_scale": self.lr_scale,
                "rollbacks": self.rollbacks, "grad_clip": self.clipper.state(), "run_id": self.run_id,
                "saved": time.time(), **({"early_stop": dict(self.early)} if tc.early_stop_evals else {})}

    def save_checkpoint(self, announce: bool = True) -> None:
        # model_payload holds live tensors; torch.save copies them to the file synchronously.
        if self.dist.is_main:   # under torchrun rank 0 writes; the others keep the same bookkeeping
            save_checkpoint(self.ckpt_path, self.payload())
        self.last_ckpt_step = self.step
        self.last_ckpt_time = time.monotonic()
        if announce:
            self.event("checkpoint", f"checkpoint saved at step {self.step}")

    def restore(self, ckpt: dict) -> None:
        if FlowConfig.from_dict(ckpt["config"]) != self.cfg:
            raise CheckpointError(f"{self.ckpt_path}: its model config differs from this run's")
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.step = int(ckpt["step"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.noise_gen.set_state(ckpt["rng"]["noise"])
        if "cuda" in ckpt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), self.device)
        self.sampler.load(ckpt["sampler"])
        self.best = ckpt.get("best_test_bpd")
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        self.lr_scale = float(ckpt.get("lr_scale", 1.0))
        self.rollbacks = int(ckpt.get("rollbacks", 0))
        self.clipper.load(ckpt.get("grad_clip"))
        if self.tc.early_stop_evals and "early_stop" in ckpt:
            self.early = dict(ckpt["early_stop"])
        self.last_ckpt_step = self.step
        self.monitor.step = self.step

    # -- the loop -----------------------------------------------------------------------
    def peak_lr(self) -> float:
        """The learning rate after warm-up, before any decay (lowered by rollbacks)."""
        return self.tc.lr * self.lr_scale

    def budget_fraction(self, step: int, server_cap: bool = True) -> float:
        """How much of the budget is spent, 0..1: the largest of the step and the time fractions,
        the server's minutes cap included unless ``server_cap`` is False (so the cosine of a
        run that the cap will end still anneals by then)."""
        tc, used = self.tc, 0.0
        if tc.max_steps is not None:
            used = step / tc.max_steps
        minutes = [tc.max_minutes] if tc.max_minutes is not None else []
        if server_cap and self.store.limits.max_minutes is not None:
            minutes.append(self.store.limits.max_minutes)
        if minutes:
            used = max(used, self.elapsed() / (min(minutes) * 60))
        return min(1.0, max(0.0, used))

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.tc.warmup_steps) if self.tc.warmup_steps else 1.0
        decay = 1.0
        if self.tc.lr_schedule == "cosine":
            # Annealing to zero as the budget (steps or minutes, whichever ends first) runs
            # out: a fixed-budget run ends at a lower loss than one stopped at full speed.
            decay = 0.5 * (1.0 + math.cos(math.pi * self.budget_fraction(step)))
        return self.peak_lr() * warm * decay

    def budget_reached(self) -> bool:
        """The run's own budget is spent, or the server's minutes cap (FLOWLAB_MAX_MINUTES) is
        reached: the cap holds whatever budget the run asked for (a run created before the cap
        was set, or with a step budget only)."""
        if self.early_stopped or self.budget_fraction(self.step, server_cap=False) >= 1.0:
            return True
        cap = self.store.limits.max_minutes
        if cap is not None and self.elapsed() >= cap * 60:
            self.server_cap_hit = True
            return True
        return False

    def release(self) -> None:
        """Drop the DistributedDataParallel wrapper now, while its process group still exists.

        Left to the garbage collector, it can outlive ``destroy_process_group`` and abort the
        process at exit ("terminate called without an active exception", seen under load).
        """
        if getattr(self, "ddp", None) is not None:
            self.ddp = None
            import gc
            gc.collect()

    def decide(self) -> tuple[bool, bool, float]:
        """(budget spent, stop wanted, this step's learning rate). Under torchrun rank 0 decides
        (it alone sees the store, the signals and its clock) and every rank gets its answer."""
        if self.dist.is_main:
            values = [float(self.budget_reached()), float(self.stop_wanted(time.monotonic())),
                      self.lr_at(self.step)]
        else:
            values = [0.0, 0.0, 0.0]
        budget, stop, lr = broadcast_values(values, self.dist, self.device)
        return budget > 0.5, stop > 0.5, lr

    def stop_wanted(self, now: float) -> bool:
        if self.monitor.stop_event.is_set():
            return True
        if self.should_stop is not None and now - self._last_stop_poll >= STOP_POLL_S:
            self._last_stop_poll = now
            if self.should_stop():
                self.monitor.stop_event.set()
                return True
        return False

    def reset_window(self) -> None:
        self.win_sums = [0.0] * (self.cfg.levels + 4)   # sums of: bpd, grad norm, priors..., logdet, dequant
        self.win_good, self.win_images, self.win_time = 0, 0, 0.0

    def log_window(self) -> None:
        """One metrics row per key: means over the good steps since the last row, one DB write."""
        if not self.win_images or not self.dist.is_main:
            self.reset_window()
            return
        tc, wall, step = self.tc, time.time(), self.step
        rows = []
        if self.win_good:
            means = [v / self.win_good for v in self.win_sums]
            keys = ["train_bpd", "grad_norm"] + [f"bpd_prior_L{i}" for i in range(self.cfg.levels)] + ["bpd_logdet"]
            if self.cfg.dequantization != "uniform":
                keys.append("bpd_dequant")   # always 0 with uniform noise: not worth a chart
            rows.append((step, wall, "loss_nats", means[0] * self.cfg.dims * math.log(2)))
            rows += [(step, wall, k, v) for k, v in zip(keys, means)]
        rows += [(step, wall, "lr", self.lr_at(step - 1)),
                 (step, wall, "images_per_s", self.win_images / max(self.win_time, 1e-9)),
                 (step, wall, "elapsed_s", self.elapsed()),
                 (step, wall, "epoch", step * tc.batch_size / self.images_per_epoch)]
        self.metric_buffer += rows
        self.flush_metrics()
        self.reset_window()
        if self.on_log is not None:
            self.on_log({"step": step, **{k: v for _, _, k, v in rows}, "test_bpd": self.last_test,
                         "max_steps": tc.max_steps})

    def run(self) -> RunResult:
        tc = self.tc
        self.session_start = time.monotonic()
        self.last_ckpt_time = time.monotonic()
        self._last_stop_poll = 0.0
        # Evaluations (test bits/dim) always run in float32: reported numbers are exact.
        autocast = ((lambda: low_precision_networks(torch.bfloat16)) if self.use_bf16
                    else contextlib.nullcontext)
        self.reset_window()
        bad_streak = 0
        self.stage = "while training"
        while True:
            budget_spent, stop, lr = self.decide()
            if budget_spent:
                return self.finish()
            if stop:
                return self.stop()
            t0 = time.perf_counter()
            for group in self.opt.param_groups:
                group["lr"] = lr
            idx = self.sampler.next()
            oom = None
            try:
                if self.ddp is None:
                    x = augment_batch(self.train_x[idx.to(self.device)], tc.augment, tc.seed, self.step)
                    terms = _compute_terms(self.model, x, self.noise_gen, autocast)
                else:   # this rank's shard of the global batch, with its rows of the global noise
                    rows = shard_slice(idx.shape[0], self.dist)
                    x = augment_batch(self.train_x[idx[rows].to(self.device)], tc.augment, tc.seed,
                                      self.step, rows=rows, global_batch=idx.shape[0])
                    with noise_shard(self.dist.rank, self.dist.world_size), autocast():
                        terms = self.ddp(x, self.noise_gen)
                loss = terms.total.float().mean()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
            except Exception as exc:   # noqa: BLE001 - only out-of-memory is handled here
                if not _is_oom(exc) or self.ddp is not None:
                    raise
                oom = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
            if oom is not None:
                # outside the except block: its traceback, which holds the failed step's
                # activations, is gone before the smaller batches are tried
                terms = loss = x = None
                raise self.out_of_memory(autocast, oom)
            clip = self.clipper.threshold()
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, clip)
            # one host sync per step: loss, grad norm and the bpd split together
            stats = torch.cat([loss.detach().reshape(1), gnorm.detach().float().reshape(1).to(loss.device),
                               terms.prior_levels.detach().float().mean(0),
                               terms.logdet.detach().float().mean().reshape(1),
                               terms.dequant.detach().float().mean().reshape(1)])
            # under torchrun: the global batch's means, the same on every rank (so is the verdict below)
            stats = all_reduce_mean(stats, self.dist).tolist()
            finite = all(math.isfinite(v) for v in stats)
            if finite:
                self.opt.step()
                self.clipper.record(stats[1], clip)
                bad_streak = 0
                self.win_good += 1
                for i, v in enumerate(stats):
                    self.win_sums[i] += v
            self.step += 1
            self.monitor.step = self.step
            images = x.shape[0] * self.dist.world_size
            self.win_images += images
            step_time = time.perf_counter() - t0
            self.win_time += step_time
            if self.governor is not None:
                self.governor.step_done(step_time, images)
            if not finite:
                bad_streak += 1
                what = "loss" if not math.isfinite(stats[0]) else "gradient norm"
                self.event("nan_skip", f"step {self.step}: non-finite {what} ({stats[0]:.4g} bits/dim, "
                                       f"grad norm {stats[1]:.4g}); step skipped, no update")
                if bad_streak >= tc.nan_patience:
                    self.rollback(bad_streak)
                    bad_streak = 0
                    self.reset_window()
                    continue
            if self.step % tc.log_every == 0:
                self.log_window()
            if self.step == tc.first_eval or self.step % tc.eval_every == 0:
                self.evaluate()
            if time.monotonic() - self.last_ckpt_time >= tc.checkpoint_every_minutes * 60 and bad_streak == 0:
                self.stage = f"while saving the checkpoint at step {self.step}"
                self.save_checkpoint()
                self.stage = "while training"

    def rollback(self, streak: int) -> None:
        tc = self.tc
        self.stage = "while rolling back to the last checkpoint"
        bad_step = self.step
        if self.rollbacks >= MAX_ROLLBACKS:
            raise TrainingDiverged(
                f"Training diverged: non-finite losses kept returning after {self.rollbacks} rollbacks "
                f"(the peak learning rate is down to {self.peak_lr():.3g}). Lower lr, raise warmup_steps, "
                "lower affine_clamp, or try additive coupling."
                + (f" The last checkpoint (step {self.last_ckpt_step}) is intact."
                   if self.ckpt_path.is_file() else ""))
        ckpt = load_checkpoint(self.ckpt_path, map_location=self.device)
        rollbacks, lr_scale, elapsed = self.rollbacks + 1, self.lr_scale * tc.lr_drop, self.elapsed()
        self.restore(ckpt)
        self.rollbacks, self.lr_scale = rollbacks, lr_scale
        self.elapsed_before, self.session_start = elapsed, time.monotonic()  # time keeps running
        self.store.truncate_after(self.run_id, self.step)
        self.metric_buffer = [r for r in self.metric_buffer if r[0] <= self.step]
        self.event("rollback", f"{streak} non-finite steps in a row at step {bad_step}: rolled back "
                               f"to the checkpoint at step {self.step}", step=bad_step)
        self.event("lr_drop", f"peak learning rate lowered to {self.peak_lr():.3g} "
                              f"(×{tc.lr_drop:g} per rollback; rollback {self.rollbacks})", step=self.step)
        self.stage = f"while saving the checkpoint at step {self.step}"
        self.save_checkpoint(announce=False)
        self.stage = "while training"

    def evaluate(self, full: bool = False) -> float:
        tc = self.tc
        if not self.dist.is_main:
            return float("nan")     # rank 0 evaluates and draws the grids
        self.stage = f"while evaluating at step {self.step}"
        images = self.test_x if full else self.eval_x
        bpd = evaluate_bpd(self.model, images, batch=EVAL_BATCH)
        key = "test_bpd_full" if full else "test_bpd"
        self.metric_buffer.append((self.step, time.time(), key, bpd))
        self.flush_metrics()
        self.last_test = bpd
        if math.isfinite(bpd) and (self.best is None or bpd < self.best):
            self.best = bpd
            try:
                self.store.set_best_test_bpd(self.run_id, bpd)
            except StoreBusyError:
                pass
        what = f"the full test set ({images.shape[0]:,} images)" if full else f"{images.shape[0]:,} held-out images"
        self.event("eval", f"step {self.step}: test {bpd:.4f} bits/dim on {what}")
        if tc.early_stop_evals and not full:
            self.track_early_stop(bpd)
        if self.last_grid_step != self.step:
            self.stage = f"while saving the sample grid at step {self.step}"
            path = write_sample_grid(self.model, self.eps, tc.sample_temperatures,
                                     self.run_dir / f"samples_step{self.step:07d}.png")
            self.last_grid_step = self.step
            try:
                self.store.add_samples(self.run_id, self.step, path)
            except StoreBusyError:
                pass
        # time spent evaluating does not count against images/s (it is in elapsed_s)
        self.stage = "while training"
        return bpd

    def out_of_memory(self, autocast, detail: str) -> OutOfMemoryAtBatch:
        """After a step ran out of memory: find the batch size that fits, keep every step
        trained so far in a checkpoint, and say both (the weights are those of the last
        completed step: the failed one never reached the optimizer)."""
        batch = self.tc.batch_size
        append_log(self.store.log_path(self.run_id), f"step {self.step + 1}, batch size {batch}: {detail}\n")
        self.stage = f"while finding a batch size that fits, after running out of memory at step {self.step + 1}"
        fits = self.fitting_batch(batch, autocast)
        if fits is not None and self.dist.is_main:
            self.metric_buffer.append((self.step, time.time(), "oom_fitting_batch", float(fits)))
            self.flush_metrics()
        self.stage = f"while saving the checkpoint at step {self.step}"
        self.save_checkpoint(announce=False)
        return OutOfMemoryAtBatch(batch, fits, self.step, self.device.type)

    def fitting_batch(self, failed: int, autocast) -> int | None:
        """The largest of failed/2, failed/4, ... whose training step (forward and backward on
        real images) fits in memory now; None if not even 1 does. Nothing is updated: the
        gradients are dropped and the run's own noise generator is not touched."""
        batch = min(failed // 2, self.train_x.shape[0])
        while batch >= 1:
            self.opt.zero_grad(set_to_none=True)
            _free_cached_memory(self.device)
            try:
                terms = _compute_terms(self.model, self.train_x[:batch], torch.Generator().manual_seed(0),
                                       autocast)
                terms.total.float().mean().backward()
                return batch
            except Exception as exc:   # noqa: BLE001
                if not _is_oom(exc):
                    raise
            finally:
                terms = None
                self.opt.zero_grad(set_to_none=True)
                _free_cached_memory(self.device)
            batch //= 2
        return None

    def track_early_stop(self, bpd: float) -> None:
        """Keep the weights of the best evaluation; after ``early_stop_evals`` evaluations
        without a better one, end the run (``budget_reached``) with those weights."""
        early = self.early
        if math.isfinite(bpd) and (early["best"] is None or bpd < early["best"]):
            early.update(best=bpd, step=self.step, since=0,
                         weights={k: v.detach().clone() for k, v in self.model.state_dict().items()})
        else:
            early["since"] += 1
            self.early_stopped = early["since"] >= self.tc.early_stop_evals

    def finish(self) -> RunResult:
        tc = self.tc
        self.log_window()
        early_note = ""
        if self.early_stopped and self.early["weights"] is not None:
            self.model.load_state_dict(self.early["weights"])
            early_note = (f" Stopped early: {tc.early_stop_evals} evaluation(s) in a row did not beat "
                          f"step {self.early['step']:,} ({self.early['best']:.4f} bits/dim on the "
                          f"evaluation images), so the model keeps that step's weights.")
            self.event("early_stop", early_note.strip())
        full = self.evaluate(full=True)
        self.stage = f"while saving the final checkpoint at step {self.step}"
        self.save_checkpoint()
        self.flush_metrics()
        if getattr(self, "server_cap_hit", False):
            cap = self.store.limits.max_minutes
            of = f" of {tc.max_steps:,}" if tc.max_steps is not None else ""
            budget = (f"at this server's time cap of {cap:g} minutes per run (FLOWLAB_MAX_MINUTES), "
                      f"at step {self.step:,}{of}")
        elif self.early_stopped:
            budget = f"at step {self.step:,} (early stopping)"
        else:
            budget = f"{self.step:,} steps" if tc.max_steps is not None and self.step >= tc.max_steps \
                else f"{tc.max_minutes:g} minutes ({self.step:,} steps)"
        message = (f"Finished {budget}: {full:.4f} bits/dim on the full test set "
                   f"({self.test_x.shape[0]:,} images).{early_note}")
        self.event("finish", message)
        return RunResult("finished", message, self.step)

    def stop(self) -> RunResult:
        self.log_window()
        self.stage = f"while saving the checkpoint at step {self.step}"
        self.save_checkpoint(announce=False)
        self.flush_metrics()
        message = f"Stopped at step {self.step:,}; checkpoint saved. Resume to continue."
        self.event("stop", message)
        return RunResult("stopped", message, self.step)


def train_run(store: RunStore, run_id: int, *, should_stop: Callable[[], bool] | None = None,
              on_log: Callable[[dict], None] | None = None, handle_signals: bool = False,
              dist: Dist = SINGLE) -> RunResult:
    """Train a run the store knows (status ``queued``: claim it first with ``request_start``).

    Sets ``running`` with this process's pid, heartbeats from a background thread, and ends
    with ``stopped`` / ``finished`` / ``failed`` and a message in words. Never raises for a
    training failure (the result and the store say what happened; the traceback goes to the
    run's worker.log); raises KeyError for an unknown run, and StoreUnavailableError when the
    store cannot be used before training begins (a full disk, a damaged database). The
    server's minutes cap (``FLOWLAB_MAX_MINUTES``) ends any run, whatever its own budget.
    ``should_stop`` is polled at most every 0.5 s; ``handle_signals`` turns SIGINT/SIGTERM
    into a clean stop (main thread only). ``dist``: rank 0 of a torchrun group (the other
    ranks run :func:`follow_run`); see flowlib.distributed.
    """
    run = persist(lambda: store.get_run(run_id))
    if run is None:
        raise KeyError(f"no run with id {run_id}")
    found = persist(lambda: store.begin_run(run_id, os.getpid()))
    if found != "queued":
        if found == "stopping":
            message = "Stopped before training began."
            persist(lambda: store.finish_run(run_id, "stopped", message))
            return RunResult("stopped", message, run["step"])
        message = f"run {run_id} is {found}, not queued: claim it with request_start first"
        return RunResult(found, message, run["step"])
    monitor = Monitor(store, run_id)
    monitor.start()
    session = None
    try:
        with stop_signals(monitor.stop_event, handle_signals):
            session = _Training(store, run, monitor, should_stop, on_log, dist)
            session.setup()
            result = session.run()
    except BaseException as exc:  # noqa: BLE001 — every failure becomes a status and a message
        during = session.stage if session is not None else "while starting"
        batch = session.tc.batch_size if session is not None else run["train"].get("batch_size")
        # a checkpoint is "intact" only if its file is still there
        ckpt_step = session.last_ckpt_step if session is not None and session.ckpt_path.is_file() else None
        folder_gone = session is not None and not session.run_dir.is_dir()
        if isinstance(exc, KeyboardInterrupt):
            message = (f"Interrupted {during}, before a checkpoint could be saved"
                       + (f"; the checkpoint at step {ckpt_step} is intact." if ckpt_step is not None else "."))
            status = "stopped"
        elif folder_gone:
            message = (f"The run's folder {session.run_dir} was deleted (noticed {during}), and its "
                       "checkpoint with it, so this run cannot continue; start a new run.")
            status = "failed"
        else:
            message = describe_failure(exc, during, batch, ckpt_step)
            status = "failed"
        # Until setup has loaded the checkpoint (or started afresh) the stored step stands: a
        # resume that fails on a bad checkpoint must not reset the run to step 0.
        step = session.step if session is not None and getattr(session, "set_up", False) else run["step"]
        append_log(store.log_path(run_id), f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] run {run_id} "
                                            f"{status} at step {step}: {message}\n" + traceback.format_exc())
        if session is not None:
            try:
                session.flush_metrics()
            except Exception:  # noqa: BLE001 - e.g. the full disk that ended the run
                pass
        try:
            store.add_event(run_id, "error" if status == "failed" else "stop", message, step)
        except Exception:
            pass
        result = RunResult(status, message, step)
    finally:
        monitor.close()
        if session is not None:
            session.release()
    try:
        persist(lambda: store.finish_run(run_id, result.status, result.message, result.step))
    except StoreUnavailableError as exc:
        # Even the reserve could not record it: say so here; the store will read "lost".
        append_log(store.log_path(run_id), f"could not record the run's end in the store: {exc}\n")
        result = RunResult(result.status, f"{result.message} (Not recorded in the run store: {exc})",
                           result.step)
    return result


def follow_run(run: dict, runs_dir, dist: Dist) -> RunResult:
    """A rank other than 0 under torchrun: train the run rank 0 announced, in lockstep with it.

    It writes nothing (rank 0 records everything); Ctrl-C and SIGTERM reach every rank from
    torchrun, and rank 0's decision to stop reaches this one at the next step.
    """
    from .distributed import FollowerStore

    store = FollowerStore(runs_dir, run)
    monitor = _LocalMonitor()
    with stop_signals(monitor.stop_event, True):   # a signal must not kill a rank mid-collective
        session = _Training(store, run, monitor, None, None, dist)
        try:
            session.setup()
            return session.run()
        finally:
            session.release()


class _LocalMonitor:
    """The Monitor's two fields, without a heartbeat thread (only rank 0 beats)."""

    def __init__(self):
        import threading
        self.step = None
        self.stop_event = threading.Event()


def __getattr__(name):
    # ``flowlib.train.main`` was the CLI's home before it moved up to flowlib.cli; scripts that
    # call it keep working, looked up on use so the loop still does not import the CLI.
    if name == "main":
        import importlib
        return importlib.import_module("flowlib.cli").main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    # `python -m flowlib.train` is the documented command; the CLI lives above the loop in
    # flowlib.cli, so the loop never imports it (that would make the two depend on each other).
    import runpy
    runpy.run_module("flowlib.cli", run_name="__main__", alter_sys=True)
