"""The training loop: headless runs the app can watch.

    from flowlib.config import TrainConfig, preset
    from flowlib.store.request import RunRequest
    from flowlib.store.runs import RunStore
    from flowlib.train.loop import train_run
    store = RunStore()
    run_id = store.create_run(RunRequest("mnist-a", preset("mnist-fast"), TrainConfig(dataset="mnist", max_steps=2000)))
    store.request_start(run_id)          # claims a concurrency slot (the worker does this for the app)
    train_run(store, run_id)             # trains in this process; everything lands in the store

Every knob lives in ``TrainConfig`` (the model's in ``FlowConfig``, both declared in
``flowlib.config``); ``train_run`` reads both from the store, so the app, the worker and the CLI
(``python -m flowlib.train``, in ``flowlib.cli``) train identically.

A session is a few parts with one job each, and the loop here that drives them: the start in
``setup`` (device, data, model, optimizer), the step in ``step`` (:func:`train_step`, the same
function the speed estimate and the benchmarks time), the batches in ``batches``, the budget
and learning rate in ``budget``, the curve's windows in ``metrics``, the store writes in
``journal``, evaluations, grids and early stopping in ``evaluation``, the checkpoint in
``checkpoints``, out-of-memory recovery in ``oom``, failures in words in ``failures``, heartbeat,
stop flag and signals in ``heartbeat``, torchrun in ``distributed``. What a session calls out to
(the bits/dim of a batch, the evaluation, the checkpoint writer, the clock) is one argument,
:class:`Collaborators` (in ``collaborators``), so a test hands in a fake instead of patching a module.

What it logs (metric keys in the store, every ``log_every`` steps, means over those steps):

``loss_nats``        discrete negative log-likelihood in nats per image: train_bpd · D · ln 2
``train_bpd``        bits/dim of the training batches (dequantised as the model's config says)
``bpd_prior_L{i}``   the part of train_bpd from level i's latent prior, finest first
``bpd_logdet``       the part from Σ log|det J| (negative when the flow expands volume);
                     train_bpd = Σ bpd_prior_L{i} + bpd_logdet [+ bpd_dequant] + n_bits
``bpd_dequant``      only for learned (variational) dequantisation: the part from log q(u|x)
``grad_norm``        gradient norm before clipping
``lr``               learning rate of the window's last step (warm-up × cosine decay, if asked,
                     × rollback drops)
``images_per_s``     training throughput over the window (eval and checkpoint time excluded)
``elapsed_s``        training wall time of the run so far, across resumes
``epoch``            images seen / epoch size
``test_bpd``         every eval: bits/dim on the held-out images, fixed noise (comparable): the
                     validation images taken from the training split (``validation_images``),
                     or with validation off a fixed subset of the test split; every
                     ``eval_every`` steps and, with a time budget, every 1/8 of it
``test_bpd_full``    once, at the end: bits/dim on the whole test split
``grid_s``           each live sample grid (every ``grid_every_s`` of training): seconds it took
``startup_s``        each session's start: seconds from the process's start to its first step
``first_point_s``    each session's first metrics row: seconds from the process's start to it
``busy_beside``      every row: threads of other programs ready to run (``flowlib.machine.load``)
``oom_fitting_batch`` only after running out of memory: the largest batch size whose forward
                     and backward pass fitted

Events (kind, step, message): start, resume, nan_skip, rollback, lr_drop, eval, checkpoint,
early_stop, warning, error, stop, finish (sample grids are rows of their own, not events).

Non-finite loss or gradient: the step is skipped (no optimizer update) and recorded; after
``nan_patience`` in a row the model, optimizer and sampler roll back to the last checkpoint
(one is written right after ActNorm's init, so there always is one), the learning rate is
multiplied by ``lr_drop``, and both are recorded. After ``MAX_ROLLBACKS`` rollbacks the run
fails with a message saying so: it never trains on NaNs silently and never dies silently.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import torch

from flowlib.config import FlowConfig, TrainConfig
from flowlib.machine.device import describe_device
from flowlib.machine.load import busy_beside, process_age_s
from flowlib.store.dbfile import StoreUnavailableError
from flowlib.store.lease import RunLease
from flowlib.store.liveness import OVERTAKEN_MESSAGE
from flowlib.store.runs import FencedOutError, RunStore, new_token

from .budget import Budget
from .checkpoints import Checkpoints
from .collaborators import Collaborators
from .distributed import SINGLE, Dist, FollowerStore, all_reduce_mean, broadcast_values, is_peer_lost
from .evaluation import Evaluation
from .failures import OutOfMemoryAtBatch, PeerLost, TrainingDiverged, describe_end
from .heartbeat import STOP_POLL_S, Monitor, append_log, persist, stop_signals
from .journal import Journal
from .metrics import MetricWindow
from .oom import is_out_of_memory, largest_batch_that_fits
from .setup import build_learner, choose_machine, load_data, place_data, start_actnorm, wrap_for_ranks
from .step import BitsPerDimLoss, StepResult, train_step

__all__ = ["RunResult", "Collaborators", "TrainingSession", "train_run", "follow_run", "MAX_ROLLBACKS"]

MAX_ROLLBACKS = 8           # lr is then lr_drop**8 of the original (1/256 at 0.5): give up, say so


@dataclass(frozen=True)
class RunResult:
    status: str     # stopped | finished | failed | fenced (another process holds the run; nothing written)
    message: str    # in words, for the app
    step: int


class TrainingSession:
    """One training session of one run: ``setup()``, then ``run()`` until the budget is spent,
    a stop is asked for, or a failure raises. All knobs are in TrainConfig / FlowConfig.

    ``stage`` says what it is doing, in words for a failure message ("while evaluating at step
    40"); ``set_up`` turns True when ``setup()`` is done, the step then being the checkpoint's
    (or 0 for a fresh start).
    """

    def __init__(self, store: RunStore, run: dict, monitor: Monitor, *,
                 should_stop: Callable[[], bool] | None = None, on_log: Callable[[dict], None] | None = None,
                 dist: Dist = SINGLE, collaborators: Collaborators = Collaborators()):
        self.store, self.run_id, self.monitor = store, run["id"], monitor
        self.dist = dist            # under torchrun: this rank; only rank 0 writes anything
        self.should_stop, self.on_log, self.collaborators = should_stop, on_log, collaborators
        self.tc = TrainConfig.from_dict(run["train"])
        if "validation_images" not in run["train"]:   # stored before validation existed: as it trained
            self.tc = self.tc.replace(validation_images=0)
        self.cfg = FlowConfig.from_dict(run["config"])
        self.run_dir = store.run_dir(self.run_id)
        self.stage = "while starting"
        self.set_up = False
        self.journal = Journal(store, self.run_id, dist)
        self.budget = Budget(self.tc, store.limits.max_minutes, collaborators.clock)
        write = collaborators.write_checkpoint
        self.checkpoints = Checkpoints(store.checkpoint_path(self.run_id), self.run_id, self.tc, self.cfg, dist,
                                       lambda path, payload: self.journal.write_file(
                                           path, lambda p: write(p, payload), payload.get("step")),
                                       collaborators.clock)
        # built by setup(): the device, the images, what trains, its evaluations, the curve's window
        self.machine = self.data = self.learner = self.evaluation = self.window = None
        self.loss = self.step_loss = None      # the bits/dim loss; what the step calls (DDP around it)
        self._last_stop_poll = 0.0
        self._first_row_due = True     # the session's first metrics row also records first_point_s

    @property
    def step(self) -> int:
        return self.learner.step if self.learner is not None else 0

    def set_stage(self, stage: str) -> None:
        self.stage = stage

    def event(self, kind: str, message: str, step: int | None = None) -> None:
        self.journal.event(kind, message, self.step if step is None else step)

    # -- the start ------------------------------------------------------------------------
    def setup(self) -> None:
        """Check the run against the server's limits, build every part, resume from the
        checkpoint or start afresh, and draw the step-0 grid of a fresh run."""
        tc, cfg = self.tc, self.cfg
        self.store.limits.check_run(cfg.to_dict(), tc.to_dict())
        self.stage = "while choosing the device"
        self.machine = machine = choose_machine(tc, self.dist)
        torch.manual_seed(tc.seed)
        self.stage = f"while loading the {tc.dataset} dataset"
        train, test = load_data(tc, cfg)
        self.stage = f"while moving the data to {machine.device.type}"
        self.data = data = place_data(train, test, tc, machine.device)
        self.stage = "while building the model"
        self.learner = build_learner(cfg, tc, data.train_x, machine.device, self.dist, data.train_y)
        self.checkpoints.class_names = data.class_names
        self.evaluation = Evaluation(self.learner.model, data.eval_x, data.test_x, tc, self.run_dir, self.journal,
                                     self.dist, self.collaborators.evaluate, self.set_stage, self.budget.elapsed)
        self.window = MetricWindow(cfg, tc, self.journal, data.images_per_epoch, self.on_log, self.dist)
        self.budget.start()
        for stale in (self.run_dir.glob(".*.tmp") if self.dist.is_main else ()):  # left by a kill mid-write
            stale.unlink(missing_ok=True)
        self._resume_or_start()
        if tc.bf16 and not machine.use_bf16:
            self.event("warning", f"bf16 would be slower than float32 on this {machine.device.type}; "
                                  "training in float32")
        # What this process computes with; a resume elsewhere may differ, so at every start.
        self.event("precision", machine.precision)
        if self.step == 0 and self.dist.is_main:
            # A grid before the first step: the page shows what an untrained flow samples
            # (noise) at once, instead of an empty panel until the first evaluation.
            self.evaluation.grid(0, "while saving the first sample grid")
        self.loss = BitsPerDimLoss(self.learner.model, self.collaborators.terms)
        self.step_loss = wrap_for_ranks(self.loss, self.dist, machine.device, tc.batch_size)
        self.set_up = True

    def _resume_or_start(self) -> None:
        """Continue from the run's checkpoint, or start afresh (ActNorm's init) and write one."""
        tc, device = self.tc, self.machine.device
        where = describe_device(device)
        if self.dist.active:
            where += f" × {self.dist.world_size} processes (torchrun; global batch {tc.batch_size})"
        if self.checkpoints.path.is_file():
            self.stage = "while loading the checkpoint"
            ckpt = self.checkpoints.read(device)
            self.checkpoints.restore(ckpt, self.learner, self.evaluation)
            self.budget.load(ckpt)
            self.monitor.step = self.step
            dropped = self.journal.truncate_after(self.step)
            note = f"; {dropped} metric rows after it will be re-trained" if dropped else ""
            if self.budget.schedule_note:   # a new budget: say why the learning rate rises again
                note += f"; {self.budget.schedule_note}"
            self.event("resume", f"resumed from the checkpoint at step {self.step} on {where}{note}")
            return
        self.checkpoints.refuse_lost(self.store)
        self.stage = "while initialising ActNorm"
        model, train_x = self.learner.model, self.data.train_x
        start_actnorm(model, train_x, tc)
        self.event("start", f"training {self.cfg.summary()} on {tc.dataset} ({train_x.shape[0]:,} "
                            f"images) on {where}; {model.num_parameters():,} parameters")
        self.stage = "while saving the first checkpoint"
        self.save_checkpoint(announce=False)

    def release(self) -> None:
        """Drop the DistributedDataParallel wrapper now, while its process group still exists.

        Left to the garbage collector, it can outlive ``destroy_process_group`` and abort the
        process at exit ("terminate called without an active exception", seen under load).
        """
        if self.step_loss is not None and self.step_loss is not self.loss:
            self.step_loss = None
            import gc
            gc.collect()

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Train step after step; every step the budget, stop requests, non-finite steps, and
        when due the metrics row, the evaluation and the periodic checkpoint."""
        tc = self.tc
        self.budget.start()
        self.checkpoints.restart_timer()
        self._last_stop_poll = 0.0
        self.window.reset()
        self._first_row_due = True
        self.pace_row("startup_s")
        bad_streak = 0
        self.stage = "while training"
        while True:
            budget_spent, stop, lr = self.decide()
            if budget_spent:
                return self.finish()
            if stop:
                return self.stop()
            t0 = time.perf_counter()
            result, images = self.train_one_step(lr)
            self.learner.step += 1
            self.monitor.step = self.step
            step_time = time.perf_counter() - t0
            self.window.add(result, images, step_time)
            if self.machine.governor is not None:
                self.machine.governor.step_done(step_time, images)
            if result.applied:
                bad_streak = 0
            else:
                bad_streak += 1
                what = "loss" if not math.isfinite(result.loss) else "gradient norm"
                self.event("nan_skip", f"step {self.step}: non-finite {what} ({result.loss:.4g} bits/dim, "
                                       f"grad norm {result.grad_norm:.4g}); step skipped, no update")
                if bad_streak >= tc.nan_patience:
                    self.rollback(bad_streak)
                    bad_streak = 0
                    self.window.reset()
                    continue
            if self.step % tc.log_every == 0:
                self.log_window()
            if self.evaluation.due(self.step, self.budget.time_budget_s()):
                self.evaluation.run(self.step)
            self.evaluation.live_grid(self.step)
            if bad_streak == 0 and self.checkpoints.due():
                self.stage = f"while saving the checkpoint at step {self.step}"
                self.save_checkpoint()
                self.stage = "while training"

    def train_one_step(self, lr: float) -> tuple[StepResult, int]:
        """The next batch's step at learning rate ``lr``: its result, and the number of images it
        trained on (over all ranks). Out of memory raises OutOfMemoryAtBatch, after the probe."""
        learner = self.learner
        for group in learner.optimizer.param_groups:
            group["lr"] = lr
        clip = learner.clip.threshold()
        oom = None
        try:
            x, uniform, labels = learner.batches.next(self.step)
            with self.monitor.waiting_for_ranks():   # DDP's all-reduce waits for every rank
                result = train_step(self.step_loss, learner.optimizer, learner.params, x, uniform, clip,
                                    bf16=self.machine.use_bf16, reduce=functools.partial(all_reduce_mean, d=self.dist),
                                    labels=labels)
        except Exception as exc:   # noqa: BLE001 - only out-of-memory is handled here
            if not is_out_of_memory(exc) or self.dist.active:
                raise
            oom = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        if oom is not None:
            # outside the except block: its traceback, which holds the failed step's
            # activations, is gone before the smaller batches are tried
            x = uniform = None
            raise self.out_of_memory(oom)
        if result.applied:
            learner.clip.record(result.grad_norm, clip)
        return result, x.shape[0] * self.dist.world_size

    def decide(self) -> tuple[bool, bool, float]:
        """(budget spent, stop wanted, this step's learning rate). Under torchrun rank 0 decides
        (it alone sees the store, the signals and its clock) and every rank gets its answer."""
        if self.monitor.fenced:
            raise FencedOutError(f"run {self.run_id} is now trained by another process; this one stops "
                                 "without writing anything more")
        if self.dist.is_main:
            spent = self.evaluation.early_stopped or self.budget.spent(self.step)
            values = [float(spent), float(self.stop_wanted(self.collaborators.clock())), self.budget.lr_at(self.step)]
        else:
            values = [0.0, 0.0, 0.0]
        with self.monitor.waiting_for_ranks():
            budget, stop, lr = broadcast_values(values, self.dist, self.machine.device)
        return budget > 0.5, stop > 0.5, lr

    def stop_wanted(self, now: float) -> bool:
        """A stop was asked for: the monitor's flag or a signal, or ``should_stop`` (polled at
        most every STOP_POLL_S seconds)."""
        if self.monitor.stop_event.is_set():
            return True
        if self.should_stop is not None and now - self._last_stop_poll >= STOP_POLL_S:
            self._last_stop_poll = now
            if self.should_stop():
                self.monitor.stop_event.set()
                return True
        return False

    def log_window(self) -> None:
        if self.window.images and self.dist.is_main:
            self.journal.metrics(self.step, [("busy_beside", busy_beside(looks=1))])
            if self._first_row_due:
                self.pace_row("first_point_s")
            self._first_row_due = False
        self.window.write(self.step, self.budget.lr_at(self.step - 1), self.budget.elapsed(),
                          self.evaluation.last_test)

    def pace_row(self, key: str) -> None:
        """A ``startup_s`` or ``first_point_s`` row at this step: the process's age now (from
        the Start press, give or take the process launch), what the estimates learn from."""
        age = process_age_s()
        if age is not None and self.dist.is_main:
            self.journal.metrics(self.step, [(key, age)])

    def save_checkpoint(self, announce: bool = True) -> None:
        self.checkpoints.save(self.learner, self.budget, self.evaluation)
        if announce:
            self.event("checkpoint", f"checkpoint saved at step {self.step}")

    # -- when a step goes wrong -----------------------------------------------------------
    def rollback(self, streak: int) -> None:
        """After ``streak`` non-finite steps in a row: back to the last checkpoint, with a lower
        learning rate; TrainingDiverged after MAX_ROLLBACKS of them."""
        tc, budget = self.tc, self.budget
        self.stage = "while rolling back to the last checkpoint"
        bad_step = self.step
        if budget.rollbacks >= MAX_ROLLBACKS:
            raise TrainingDiverged(
                f"Training diverged: non-finite losses kept returning after {budget.rollbacks} rollbacks "
                f"(the peak learning rate is down to {budget.peak_lr():.3g}). Lower lr, raise warmup_steps, "
                "lower affine_clamp, or try additive coupling."
                + (f" The last checkpoint (step {self.checkpoints.last_step}) is intact."
                   if self.checkpoints.path.is_file() else ""))
        self.checkpoints.restore(self.checkpoints.read(self.machine.device), self.learner, self.evaluation)
        budget.lower_lr()
        self.monitor.step = self.step
        self.journal.truncate_after(self.step)
        self.event("rollback", f"{streak} non-finite steps in a row at step {bad_step}: rolled back "
                               f"to the checkpoint at step {self.step}", step=bad_step)
        self.event("lr_drop", f"peak learning rate lowered to {budget.peak_lr():.3g} "
                              f"(×{tc.lr_drop:g} per rollback; rollback {budget.rollbacks})")
        self.stage = f"while saving the checkpoint at step {self.step}"
        self.save_checkpoint(announce=False)
        self.stage = "while training"

    def out_of_memory(self, detail: str) -> OutOfMemoryAtBatch:
        """After a step ran out of memory: find the batch size that fits, keep every step
        trained so far in a checkpoint, and say both (the weights are those of the last
        completed step: the failed one never reached the optimizer)."""
        batch, device = self.tc.batch_size, self.machine.device
        append_log(self.store.log_path(self.run_id), f"step {self.step + 1}, batch size {batch}: {detail}\n")
        self.stage = f"while finding a batch size that fits, after running out of memory at step {self.step + 1}"
        fits = largest_batch_that_fits(self.loss, self.learner.optimizer, self.data.train_x, batch, device,
                                       self.machine.use_bf16)
        if fits is not None and self.dist.is_main:
            self.journal.metrics(self.step, [("oom_fitting_batch", float(fits))])
            self.journal.flush()
        self.stage = f"while saving the checkpoint at step {self.step}"
        self.save_checkpoint(announce=False)
        return OutOfMemoryAtBatch(batch, fits, self.step, device.type)

    # -- the ends -------------------------------------------------------------------------
    def finish(self) -> RunResult:
        """The budget is spent (or early stopping ended the run): the last metrics row, the best
        weights if early stopping kept them, the full test set's score, the final checkpoint."""
        self.log_window()
        early_note = self.evaluation.keep_best_weights(self.step)
        full = self.evaluation.run(self.step, full=True)
        self.stage = f"while saving the final checkpoint at step {self.step}"
        self.save_checkpoint()
        self.journal.flush()
        budget = self.budget.describe(self.step, self.evaluation.early_stopped)
        message = (f"Finished {budget}: {full:.4f} bits/dim on the full test set "
                   f"({self.data.test_x.shape[0]:,} images).{early_note}")
        self.event("finish", message)
        return RunResult("finished", message, self.step)

    def stop(self) -> RunResult:
        """A stop was asked for: the last metrics row and a checkpoint to resume from."""
        self.log_window()
        self.stage = f"while saving the checkpoint at step {self.step}"
        self.save_checkpoint(announce=False)
        self.journal.flush()
        message = f"Stopped at step {self.step:,}; checkpoint saved. Resume to continue."
        if self.monitor.overtaken:
            message = OVERTAKEN_MESSAGE.format(step=self.step)
        self.event("stop", message)
        return RunResult("stopped", message, self.step)


def train_run(store: RunStore, run_id: int, *, should_stop: Callable[[], bool] | None = None,
              on_log: Callable[[dict], None] | None = None, handle_signals: bool = False,
              dist: Dist = SINGLE, collaborators: Collaborators = Collaborators()) -> RunResult:
    """Train a run the store knows (status ``queued``: claim it first with ``request_start``).

    Sets ``running`` with this process's pid, heartbeats from a background thread, and ends
    with ``stopped`` / ``finished`` / ``failed`` and a message in words. Never raises for a
    training failure (the result and the store say what happened; the traceback goes to the
    run's worker.log); raises KeyError for an unknown run, and StoreUnavailableError when the
    store cannot be used before training begins (a full disk, a damaged database). The
    server's minutes cap (``FLOWLAB_MAX_MINUTES``) ends any run, whatever its own budget.
    ``should_stop`` is polled at most every 0.5 s; ``on_log`` gets each metrics row as a dict;
    ``handle_signals`` turns SIGINT/SIGTERM into a clean stop (main thread only), up to the
    moment the run's end is recorded. ``dist``:
    rank 0 of a torchrun group (the other ranks run :func:`follow_run`); see
    flowlib.train.distributed. ``collaborators``: what the session calls out to (see
    :class:`Collaborators`; the defaults are the real ones).

    The session writes through a :class:`~flowlib.store.lease.RunLease` with the fencing
    token this process got when the run became ``running``: should another process be given
    the run meanwhile (this one was presumed lost and the run resumed), the session ends at
    once with status ``"fenced"`` and writes nothing more, not even its end. A run folder this
    store did not make for the run is set aside first (:meth:`RunStore.claim_folder`).
    """
    run = persist(lambda: store.get_run(run_id))
    if run is None:
        raise KeyError(f"no run with id {run_id}")
    token = new_token()
    found = persist(lambda: store.begin_run(run_id, os.getpid(), token))
    if found != "queued":
        if found == "stopping":
            message = "Stopped before training began."
            persist(lambda: store.finish_run(run_id, "stopped", message))
            return RunResult("stopped", message, run["step"])
        message = f"run {run_id} is {found}, not queued: claim it with request_start first"
        return RunResult(found, message, run["step"])
    lease = RunLease(store, run_id, token)
    monitor = Monitor(lease, run_id, store.limits.stale_after_s,
                      on_hung=functools.partial(_ranks_hung, lease, run_id, dist) if dist.active else None)
    monitor.start()
    session = None
    try:
        # The handlers stay until the end is recorded: when another rank dies, torchrun sends
        # rank 0 a SIGTERM at once, and under the default handler that killed rank 0 between
        # its error event and its "failed", leaving a run the store later called lost.
        with stop_signals(monitor.stop_event, handle_signals):
            try:
                _claim_folder(lease, store, run_id)
                session = TrainingSession(lease, run, monitor, should_stop=should_stop, on_log=on_log, dist=dist,
                                          collaborators=collaborators)
                session.setup()
                result = session.run()
            except BaseException as exc:  # noqa: BLE001 — every failure becomes a status and a message
                if isinstance(exc, FencedOutError) or monitor.fenced:
                    result = RunResult("fenced", str(exc) if isinstance(exc, FencedOutError) else
                                       f"run {run_id} is now trained by another process", run["step"])
                else:
                    result = _failed(lease, run, session, exc)
            finally:
                monitor.close()
            try:
                if result.status != "fenced":
                    persist(lambda: lease.finish_run(run_id, result.status, result.message, result.step))
            except FencedOutError as exc:
                result = RunResult("fenced", str(exc), result.step)
            except StoreUnavailableError as exc:
                # Even the reserve could not record it: say so here; the store will read "lost".
                append_log(store.log_path(run_id), f"could not record the run's end in the store: {exc}\n")
                result = RunResult(result.status, f"{result.message} (Not recorded in the run store: {exc})",
                                   result.step)
    finally:
        if session is not None:   # after the end is recorded (and the handlers are back: a SIGTERM
            session.release()     # may end a release that a torn process group hangs in)
    if result.status == "fenced":
        print(f"run {run_id}: {result.message}", flush=True)
    return result


def _claim_folder(lease: RunLease, store: RunStore, run_id: int) -> None:
    """Set a folder aside that this store did not make for the run (a missing folder is the
    session's to report: it was deleted)."""
    if store.run_dir(run_id).is_dir():
        note = store.claim_folder(run_id)
        if note:
            lease.add_event(run_id, "warning", note, 0)


def _ranks_hung(lease: RunLease, run_id: int, dist: Dist, waited: float) -> None:
    """Rank 0 has waited ``waited`` seconds in a collective for the other ranks: record the run
    as failed, in words, and end this process (its main thread is blocked in the collective;
    torchrun then ends the other ranks)."""
    others = dist.world_size - 1
    run = lease.get_run(run_id) or {}
    stopping = run.get("status") == "stopping"
    message = (("Stop was asked, but training could not reach a step to stop at: " if stopping else "")
               + f"{'another process' if others == 1 else 'one of the other processes'} of this torchrun job "
               f"({dist.world_size} processes) stopped answering: rank 0 waited {waited:.0f} s in a collective "
               "step for it (a process that was stopped, stuck, or lost its connection). The last checkpoint "
               "is kept: resume to continue from it.")
    message = message[0].upper() + message[1:]
    try:
        lease.add_event(run_id, "error", message, run.get("step"))
        lease.finish_run(run_id, "failed", message, run.get("step"))
    except Exception as exc:  # noqa: BLE001 - fenced, or the store is gone: the process ends anyway
        print(f"run {run_id}: could not record that a rank stopped answering: {exc}", flush=True)
    print(f"run {run_id} failed: {message}", flush=True)
    os._exit(1)


def _failed(store: RunStore, run: dict, session: TrainingSession | None, exc: BaseException) -> RunResult:
    """The result of a session that raised ``exc``, recorded in the run's worker.log (with the
    traceback), its metrics (what was buffered) and an event."""
    run_id = run["id"]
    if session is not None and session.dist.active and is_peer_lost(exc):
        exc = PeerLost(session.dist.world_size, session.step, exc)   # not this rank's own failure
    if session is None:
        status, message = describe_end(exc, "while starting", run["train"].get("batch_size"), None, None)
    else:
        # a checkpoint is "intact" only if its file is still there
        ckpt_step = session.checkpoints.last_step if session.checkpoints.path.is_file() else None
        status, message = describe_end(exc, session.stage, session.tc.batch_size, ckpt_step, session.run_dir)
    # Until setup has loaded the checkpoint (or started afresh) the stored step stands: a
    # resume that fails on a bad checkpoint must not reset the run to step 0.
    step = session.step if session is not None and session.set_up else run["step"]
    append_log(store.log_path(run_id), f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] run {run_id} "
                                        f"{status} at step {step}: {message}\n" + traceback.format_exc())
    if session is not None:
        try:
            session.journal.flush()
        except Exception:  # noqa: BLE001 - e.g. the full disk that ended the run
            pass
    try:
        store.add_event(run_id, "error" if status == "failed" else "stop", message, step)
    except Exception:
        pass
    return RunResult(status, message, step)


def follow_run(run: dict, runs_dir, dist: Dist) -> RunResult:
    """A rank other than 0 under torchrun: train the run rank 0 announced, in lockstep with it.

    It writes nothing (rank 0 records everything); Ctrl-C and SIGTERM reach every rank from
    torchrun, and rank 0's decision to stop reaches this one at the next step.
    """
    store = FollowerStore(runs_dir, run)
    monitor = _LocalMonitor()
    with stop_signals(monitor.stop_event, True):   # a signal must not kill a rank mid-collective
        session = TrainingSession(store, run, monitor, dist=dist)
        try:
            session.setup()
            return session.run()
        finally:
            session.release()


class _LocalMonitor:
    """What the session reads of a Monitor, without a heartbeat thread (only rank 0 beats)."""

    fenced = overtaken = False

    def __init__(self):
        self.step = None
        self.stop_event = threading.Event()

    @contextlib.contextmanager
    def waiting_for_ranks(self):
        yield
