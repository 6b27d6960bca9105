"""The training loop: headless runs the app can watch.

Beside it: the settings in ``flowlib.config``, the command line (``python -m flowlib.train``)
in ``flowlib.cli``, heartbeat / stop flag / signals in ``flowlib.train.heartbeat``, the PNG sample
grids in ``flowlib.train.samples``, a session's setup and bookkeeping in ``flowlib.train.state``,
failures in words in ``flowlib.train.failures``.

    from flowlib.store.runs import RunRequest, RunStore
    from flowlib.train import TrainConfig, train_run
    store = RunStore()
    run_id = store.create_run(RunRequest("mnist-a", preset("mnist-fast"), TrainConfig(dataset="mnist", max_steps=2000)))
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
import math
import os
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import torch

from flowlib.config import LR_SCHEDULES, PRESET_LR, FlowConfig, TrainConfig
from flowlib.core.checkpoint import load_checkpoint, save_checkpoint
from flowlib.core.layers import low_precision_networks
from flowlib.core.model import FlowModel
from flowlib.store.dbfile import StoreUnavailableError
from flowlib.store.runs import RunStore, StoreBusyError

from .distributed import SINGLE, Dist, all_reduce_mean, shard_slice
from .failures import OutOfMemoryAtBatch, TrainingDiverged, _free_cached_memory, _is_oom, describe_failure
from .heartbeat import Monitor, append_log, persist, stop_signals
from .parts import EVAL_BATCH, augment_batch, evaluate_bpd
from .samples import write_sample_grid
from .state import _TrainingState
from .step import make_optimizer

__all__ = ["TrainConfig", "RunResult", "train_run", "describe_failure", "write_sample_grid",
           "evaluate_bpd", "make_optimizer", "TrainingDiverged", "MAX_ROLLBACKS",
           "LR_SCHEDULES", "PRESET_LR", "FlowConfig"]

MAX_ROLLBACKS = 8           # lr is then lr_drop**8 of the original (1/256 at 0.5): give up, say so


@dataclass(frozen=True)
class RunResult:
    status: str     # stopped | finished | failed
    message: str    # in words, for the app
    step: int


# ---------------------------------------------------------------------------- pieces
def _compute_terms(model: FlowModel, x_uint8: torch.Tensor, uniform: torch.Tensor, autocast):
    """The model's bits/dim terms for one batch (tests patch this to inject NaN or OOM)."""
    with autocast():
        return model.bits_per_dim_terms(x_uint8, uniform=uniform)


# ---------------------------------------------------------------------------- the run
class _Training(_TrainingState):
    """One training session of one run. Internal: all knobs are in TrainConfig / FlowConfig.

    Setup, checkpoint payload and restore, budget, schedule and metric windows are in
    ``_TrainingState`` (flowlib.train.state); here are the parts that call the names tests
    patch in this module (``_compute_terms``, ``evaluate_bpd``, ``save_checkpoint``).
    """

    def save_checkpoint(self, announce: bool = True) -> None:
        # model_payload holds live tensors; torch.save copies them to the file synchronously.
        if self.dist.is_main:   # under torchrun rank 0 writes; the others keep the same bookkeeping
            save_checkpoint(self.ckpt_path, self.payload())
        self.last_ckpt_step = self.step
        self.last_ckpt_time = time.monotonic()
        if announce:
            self.event("checkpoint", f"checkpoint saved at step {self.step}")

    # -- the loop -----------------------------------------------------------------------
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
                # this process's rows of the batch (all of them, unless under torchrun), with
                # its rows of the batch's dequantisation noise
                rows = shard_slice(idx.shape[0], self.dist)
                uniform = torch.rand((idx.shape[0], *self.train_x.shape[1:]), generator=self.noise_gen)[rows]
                x = augment_batch(self.train_x[idx[rows].to(self.device)], tc.augment, tc.seed,
                                  self.step, rows=rows, global_batch=idx.shape[0])
                if self.ddp is None:
                    terms = _compute_terms(self.model, x, uniform, autocast)
                else:
                    with autocast():
                        terms = self.ddp(x, uniform)
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
                x = self.train_x[:batch]
                uniform = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
                terms = _compute_terms(self.model, x, uniform, autocast)
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
    ranks run :func:`follow_run`); see flowlib.train.distributed.
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
