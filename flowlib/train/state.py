"""A training session's state and bookkeeping, without the step loop.

``_TrainingState`` sets a run up (device, data, model, optimizer, a checkpoint to resume or
ActNorm's start), packs and restores checkpoints, keeps the budget, the learning-rate schedule
and the stop decisions, and buffers the metric windows. ``flowlib.train._Training`` adds the
loop, evaluation, rollbacks and out-of-memory recovery: the parts that call the names tests
patch in ``flowlib.train`` (``_compute_terms``, ``evaluate_bpd``, ``save_checkpoint``), which
must therefore stay looked up in that module.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import torch

from flowlib.config import FlowConfig, TrainConfig
from flowlib.core.checkpoint import CheckpointError, load_checkpoint, model_payload
from flowlib.core.model import FlowModel
from flowlib.data import load_images
from flowlib.machine.device import bf16_is_fast, configure_threads, describe_device, pick_device
from flowlib.machine.memory import tune_for_training
from flowlib.machine.threads import ThreadGovernor
from flowlib.store.runs import RunStore, StoreBusyError

from .distributed import SINGLE, Dist, broadcast_values, shard_slice
from .heartbeat import STOP_POLL_S, Monitor
from .parts import EVAL_SEED, _GradClip, _LossModule, _Sampler
from .samples import write_sample_grid
from .step import make_optimizer

SAMPLE_SEED = 1234          # fixed latents, so successive grids show the same samples improving


class _TrainingState:
    """Everything of one training session but the loop (see the module's docstring); the
    subclass supplies ``save_checkpoint``, which ``setup`` calls to checkpoint a fresh run."""

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
        # threads=None on a CPU of its own: the count follows the load (flowlib.machine.threads). A fixed
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
            idx = torch.randperm(self.train_x.shape[0], generator=gen)[:n_init].to(self.device)
            with torch.no_grad():
                # the same seeded batch on every rank under torchrun, so every rank's ActNorms
                # start from the same statistics with no collective in the model
                self.model.initialize(self.model.preprocess(self.train_x[idx], generator=gen))
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

    # -- budget, learning rate, stop decisions, metric windows ----------------------------
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
