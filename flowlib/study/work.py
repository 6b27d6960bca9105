"""A study worker: take trials until the study is done, each trained as a Flow Lab run here.

    python -m flowlib.study work --storage postgresql://flowlab@db-host/flowlab [--gpus all]

    from flowlib.study.work import work
    work(storage_url, runs_dir=None, study_names=None)    # exit code: 0 when every study it served is done

One trial = one run. The worker takes the oldest queued trial (Optuna's atomic claim, so no
two workers train the same one), waits for a free training slot of this machine's run store
(``FLOWLAB_MAX_CONCURRENT``, shared with the app's own runs), stores the run (its name
``<study>-<arm>-s<seed>``, linked to this machine's record of the study, so the app here shows
it live) and trains it in this process (``flowlib.train.loop.train_run``; the data, model and
torch state are the run's own, every RNG seeded from the run's configs).

While it trains, a reporter thread, every second: beats the trial's heartbeat (Optuna's for
SQLite/PostgreSQL; a trial attribute on a journal), reports each new evaluation on the
validation images (``trial.report``, and the curve with its times in the trial's ``curve``
attribute, which the app of any machine draws), asks the search's pruner, and reads the
study's stop flag. Then the trial is told: COMPLETE with its final validation bits/dim as
the value (the test bits/dim, read once at the end, is the ``test_bpd`` attribute, with what
the run did: steps, rollbacks, learning-rate cuts, environment), PRUNED, or FAIL (a failed
run: diverged, out of memory; or interrupted: ``interrupted``).

A worker killed mid-trial (``kill -9``, a lost machine): its heartbeat stops, the next worker
that looks (any machine) marks the trial failed after ``FLOWLAB_STUDY_GRACE_S`` and Optuna's
``RetryHeartbeatStaleTrialCallback`` queues a copy, which one worker trains from the start. The
answer reads the copy; the failed trial and its run (``lost`` in the run store here) are
named ``retried``, never counted. A worker asked to leave (SIGTERM, Ctrl-C) stops its run,
marks the trial interrupted and queues it again at once. A study stopped (``--stop``) keeps
its interrupted trials until ``--resume`` queues them again.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import threading
import time
from typing import Callable

from flowlib import env
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunLimitError, RunStore, StoreBusyError
from flowlib.store.studies import StudyStore

from . import engine
from .records import run_summary
from .storage import grace_s, heartbeat_interval_s, open_storage, redact, storage_key

__all__ = ["work", "run_trial", "reap_stale", "environment", "machine_name"]

REPORT_S = 1.0


def machine_name() -> str:
    return socket.gethostname()


def worker_name() -> str:
    """This worker process: ``host:pid`` (two workers on one machine tell apart)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def environment(train) -> dict:
    """Where a trial trained: torch, the device, the threads, the processor."""
    import torch

    from flowlib.machine.device import pick_device

    device = pick_device(train.device)
    return {"machine": machine_name(), "torch": torch.__version__, "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                            or platform.machine()),
            "threads": train.threads, "deterministic": torch.are_deterministic_algorithms_enabled(),
            "python": platform.python_version(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def reap_stale(study, storage) -> int:
    """Mark trials whose worker stopped beating as failed and queue their retry; how many.

    SQLite / PostgreSQL: Optuna's ``fail_stale_trials`` (its heartbeat table and the storage's
    RetryHeartbeatStaleTrialCallback). A journal has no heartbeat: the trial's ``flowlab_beat``
    attribute is read instead, with the same grace and the same callback.
    """
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    if not is_journal_storage(storage):
        before = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        optuna.storages.fail_stale_trials(study)
        return len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) - before
    now, failed = time.time(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.system_attrs.get("flowlab_beat") or (t.datetime_start.timestamp() if t.datetime_start else now)
        if now - beat <= grace_s():
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed += 1
                RetryHeartbeatStaleTrialCallback(max_retry=3)(study, storage.get_trial(t._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    return failed


def is_journal_storage(storage) -> bool:
    from optuna.storages import JournalStorage

    return isinstance(storage, JournalStorage)


class _Reporter(threading.Thread):
    """Heartbeat, evaluations to the study, pruning and the stop flag, beside the training."""

    def __init__(self, study, trial, store: RunStore, journal: bool):
        super().__init__(daemon=True, name=f"flowlab-trial-{trial.number}")
        self.study, self.trial, self.store, self.journal = study, trial, store, journal
        self.run_id: int | None = None
        self.stop = threading.Event()          # the run should stop (pruned, study stopped, leaving)
        self.pruned_at: int | None = None
        self.study_stopped = False
        self._done = threading.Event()
        self._reported: set[int] = set()
        self._last_beat = 0.0

    def beat(self) -> None:
        storage = self.study._storage
        if self.journal:
            storage.set_trial_system_attr(self.trial._trial_id, "flowlab_beat", time.time())
        else:
            storage.record_heartbeat(self.trial._trial_id)
        self._last_beat = time.monotonic()

    def run(self) -> None:
        while not self._done.wait(REPORT_S):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a locked database costs one tick, not the trial
                continue

    def tick(self) -> None:
        if time.monotonic() - self._last_beat >= min(heartbeat_interval_s(), 5):
            self.beat()
        if self.run_id is None:
            return
        if engine.stop_requested(self.study):
            self.study_stopped = True
            self.stop.set()
        self.report_new()

    def report_new(self) -> None:
        summary = run_summary(self.store, self.run_id)
        curve = summary["curve"]
        new = [(s, v) for s, v in zip(curve["step"], curve["value"]) if s not in self._reported]
        if not new:
            return
        for step, value in new:
            self.trial.report(value, step)
            self._reported.add(step)
        self.trial.set_user_attr("curve", curve)
        if self.pruned_at is None and not self.stop.is_set() and engine.prune_now(self.study, self.trial._trial_id):
            self.pruned_at = new[-1][0]
            self.stop.set()

    def close(self) -> None:
        self._done.set()
        self.join(timeout=10)


def _create_run(store: RunStore, request: RunRequest, reporter: _Reporter, leaving: threading.Event) -> int | None:
    """Store the run holding a training slot, waiting (and beating) while every slot is taken."""
    while not leaving.is_set():
        try:
            return store.create_run(request, status="queued")
        except (RunLimitError, StoreBusyError):
            reporter.beat()
            time.sleep(1.0)
    return None


def run_trial(study, trial, store: RunStore, storage, leaving: threading.Event,
              log: Callable[[str], None] = print) -> str:
    """Train one claimed trial as a run of ``store`` and tell the study how it ended; the state."""
    from optuna.trial import TrialState

    from flowlib.train.loop import train_run

    journal = is_journal_storage(storage)
    reporter = _Reporter(study, trial, store, journal)
    reporter.beat()
    reporter.start()
    run_id = None
    try:
        if trial.user_attrs.get("role") == "lead" and "config" not in trial.user_attrs:
            trial.set_user_attr("config", f"c{trial.number}")
        arm, settings, cfg, tc = engine.trial_configs(study, trial)
        seed = int(trial.user_attrs["seed"])
        described = engine.stored_plan(study)
        owner = study.user_attrs.get("flowlab_owner")
        trial.set_user_attr("arm", arm)
        trial.set_user_attr("machine", machine_name())
        trial.set_user_attr("worker", worker_name())
        trial.set_user_attr("run_store", str(store.root))
        trial.set_user_attr("budget_steps", tc.max_steps)
        request = RunRequest(f"{study.study_name}-{arm}-s{seed}"[:80], cfg, tc, owner=owner,
                             preset=described.get("spec", {}).get("model_preset"))
        run_id = _create_run(store, request, reporter, leaving)
        if run_id is None:
            return _interrupted(study, trial, requeue=True, log=log)
        _mark_gpu(store, run_id)
        studies = StudyStore(store)
        local = studies.record(storage_key(_url_of(storage, study)), study.study_name)
        studies.link(local, run_id, arm, seed)
        trial.set_user_attr("run_id", run_id)
        reporter.run_id = run_id
        log(f"trial {trial.number} ({arm}, seed {seed}) -> run {run_id} in {store.root}")
        result = train_run(store, run_id, should_stop=lambda: reporter.stop.is_set() or leaving.is_set())
        reporter.close()
        reporter.report_new()
        summary = run_summary(store, run_id)
        attrs = {k: summary[k] for k in ("test_bpd", "valid_bpd", "steps_trained", "rollbacks", "lr_cuts",
                                         "images_per_s", "train_seconds", "run_status", "message")}
        for key, value in {**attrs, "curve": summary["curve"], "environment": environment(tc)}.items():
            trial.set_user_attr(key, value)
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at", reporter.pruned_at)
            store.add_event(run_id, "stop", f"pruned by study {study.study_name} at step {reporter.pruned_at}: its "
                                            "validation bits/dim was worse than the median of the other "
                                            "configurations' first-seed runs there", reporter.pruned_at)
            study.tell(trial, state=TrialState.PRUNED)
            return "pruned"
        if result.status == "stopped":
            return _interrupted(study, trial, requeue=not reporter.study_stopped, log=log)
        if result.status == "finished" and summary["valid_bpd"] is not None and summary["test_bpd"] is not None:
            if trial.user_attrs.get("role") == "lead":
                engine.enqueue_seeds(study, study._storage.get_trial(trial._trial_id))
            study.tell(trial, summary["valid_bpd"])
            return "finished"
        trial.set_user_attr("run_status", "failed")
        study.tell(trial, state=TrialState.FAIL)
        return "failed"
    except BaseException:
        reporter.close()
        try:
            if run_id is None or (store.get_run(run_id) or {}).get("status") != "finished":
                _interrupted(study, trial, requeue=True, log=log)
        except Exception:  # noqa: BLE001 - the heartbeat will catch it instead
            pass
        raise
    finally:
        reporter.close()


def _mark_gpu(store: RunStore, run_id: int) -> None:
    """A worker pinned to one GPU (``--gpus``): the run holds it (flowlib.jobs.placement)."""
    from flowlib.jobs.placement import GPU_FILE

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible.isdigit():
        (store.run_dir(run_id) / GPU_FILE).write_text(visible)


def _url_of(storage, study) -> str:
    url = getattr(storage, "url", None)
    if url:
        return url
    backend = getattr(storage, "_backend", None)
    return "journal:" + str(getattr(backend, "_file_path", "journal"))


def _interrupted(study, trial, requeue: bool, log) -> str:
    """A trial that did not end on its own: FAIL ``interrupted``; queued again at once unless
    the study itself was stopped (then ``--resume`` queues it)."""
    from optuna.trial import TrialState

    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if requeue:
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        RetryHeartbeatStaleTrialCallback(max_retry=None)(study, study._storage.get_trial(trial._trial_id))
        log(f"trial {trial.number} interrupted; queued again")
    return "interrupted"


def _free_slot(store: RunStore) -> bool:
    try:
        return len(store.active_runs()) < store.limits.max_concurrent
    except StoreBusyError:
        return False


def work(storage_url: str | None, runs_dir=None, study_names: list[str] | None = None,
         log: Callable[[str], None] = print, poll_s: float = 2.0, max_trials: int | None = None) -> int:
    """Take trials until every study served is done (or stopped); 0 when all finished.

    ``storage_url``: None is ``$FLOWLAB_STUDY_STORAGE``, else the embedded default of ``runs_dir``
    (the variable is how ``--gpus all`` hands the URL to its per-GPU workers, never on a command
    line). ``study_names``: only these studies (default: every Flow Lab study in the storage that has
    trials left). ``max_trials``: leave after training this many (tests, benchmarks).
    """
    store = RunStore(runs_dir)
    storage_url = storage_url or env.read("FLOWLAB_STUDY_STORAGE") or None
    storage = open_storage(storage_url, store.root)
    log(f"worker {worker_name()} on {redact(_url_of(storage, None))}, run store {store.root}")
    leaving = threading.Event()
    previous = {}

    def leave(signum, frame):
        if leaving.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        leaving.set()
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.getsignal(s)
            signal.signal(s, leave)
    trained = 0
    try:
        while not leaving.is_set():
            names = study_names or [s.study_name for s in engine.list_studies(storage)]
            busy = took = False
            for name in names:
                if leaving.is_set():
                    break
                study = engine.load(storage, name)
                reap_stale(study, storage)
                if engine.stop_requested(study):
                    continue
                left = engine.state(study) in ("waiting", "running")
                busy = busy or left
                if not left:
                    _close_local(store, storage, study)
                    continue
                if not _free_slot(store):
                    continue
                trial = engine.take_trial(study)
                if trial is None:
                    continue
                took = True
                state = run_trial(study, trial, store, storage, leaving, log)
                log(f"trial {trial.number} of {name}: {state}")
                trained += 1
                if max_trials is not None and trained >= max_trials:
                    return 0
                break        # look at every study again: a stop, a new trial
            if not took:
                if not busy:
                    break
                leaving.wait(poll_s)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if leaving.is_set():
        return 3
    names = study_names or [s.study_name for s in engine.list_studies(storage)]
    return 0 if all(engine.state(engine.load(storage, n)) == "finished" for n in names) else 1


def _close_local(store: RunStore, storage, study) -> None:
    local = StudyStore(store).local_of(storage_key(_url_of(storage, study)), study.study_name)
    if local is not None and not local["spec"].get("closed"):
        StudyStore(store).close(local["id"])
