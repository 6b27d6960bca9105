"""Training processes: submit, start, stop, resume, the queue, and ``python -m flowlib.jobs.worker RUN_ID``.

    from flowlib.jobs import worker
    from flowlib.store.request import RunRequest
    run_id = worker.submit(store, RunRequest("mnist-a", cfg, tc, owner=visitor))
    run_id = worker.submit(store, request, queue=True)      # waits for a slot if none is free
    run_id = worker.submit(store, request, submit_key=key)  # the same key while that run lives: that run
    pid = worker.start_run(store, run_id, owner=visitor)   # RunLimitError if a slot is taken
    worker.stop_run(store, run_id, owner=visitor)          # True if this call asked; harmless twice
    pid = worker.resume_run(store, run_id, owner=visitor)  # stopped / lost / failed -> training again
    worker.keep_queue_moving(store, poll_s=5.0)            # the server: freed slots go to the queue

A run trains in its own OS process, ``python -m flowlib.jobs.worker RUN_ID --runs-dir DIR``, started
with ``subprocess.Popen(..., start_new_session=True)``: a browser refresh, a second tab or a
Streamlit restart cannot take it down, and Ctrl-C in the server's terminal does not reach it.
Not ``multiprocessing``: spawn re-runs the page script, fork after torch's threads hangs.

The worker's stdout and stderr go to ``worker.log`` in the run folder (a file, never a pipe
that could fill and block it). Each Popen handle is waited on by a tiny daemon thread, so
no zombie is left in a long-lived server; if the process dies without saying how (``kill -9``,
a segfault), that thread marks the run ``lost`` at once. If the server itself restarted, the
heartbeat does the same (``RunStore`` reaps on read what has not beaten for
``FLOWLAB_HEARTBEAT_STALE_S``).

A run request is checked when it is admitted (its FlowConfig and TrainConfig checked their
values when they were made; :meth:`RunStore.create_run` refuses what is over the server's
caps before storing it), and again from the store each time it is to train: by
:func:`start_run` / :func:`resume_run` before any process exists, and in the worker process,
which reads it back with :meth:`RunStore.stored_request` and checks the caps before loading
torch or data: the caps the server recorded in the store (:meth:`RunStore.server_limits`),
not the ones of the environment it inherited from whichever process launched it. A row
changed or damaged behind the app's back is refused in a sentence naming the run (the worker
ends it ``failed``), never trained with default settings.

Stop is a flag in the store. The worker notices within ~0.5 s, finishes the step, saves a
checkpoint and marks the run ``stopped``. SIGTERM to the worker does the same.

The queue: ``submit(..., queue=True)`` stores the run as ``waiting``. :func:`start_waiting`
hands free slots to the oldest waiting runs, and it is called wherever a slot may have freed:
by the worker process of a run that ends, by the reaper thread of the process that launched a
worker that died without a word, and by every store that reaps a lost run (a ``kill -9`` of a
worker no reaper thread watches, a SIGSTOP past the window): :func:`keep_queue_moving`
registers it with the store, and the server also polls (``poll_s``), so the queue moves with
no page open and however a slot's holder died. The slot claim is one ``BEGIN IMMEDIATE``
transaction, so any number of these racing never exceed the limit.

One live worker per run: a worker process trains through a fenced lease of the run
(:class:`flowlib.store.lease.RunLease`); if it is presumed lost and the run is resumed in a
new process, the old one, should it wake, ends without writing (``flowlib.train.loop``).
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
import threading
import time
import traceback

from flowlib import env
from flowlib.store.dbfile import StoreUnavailableError
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunLimitError, RunStateError, RunStore

from .launch import start_module
from .placement import place_run

__all__ = ["submit", "start_run", "start_waiting", "keep_queue_moving", "stop_run", "resume_run", "wait_for_run",
           "running_processes", "main", "RunLimitError", "RunStateError"]


_PROCS: dict[int, subprocess.Popen] = {}   # pid -> handle of workers this process started
_LOCK = threading.Lock()


def _reap(store: RunStore, run_id: int, proc: subprocess.Popen) -> None:
    """Wait for a worker to exit (no zombie); if it left its run looking active, mark it lost;
    then give its slot to the next waiting run (a worker killed by a signal could not)."""
    code = proc.wait()
    with _LOCK:
        _PROCS.pop(proc.pid, None)
    try:
        store.mark_exited(run_id, proc.pid, code)
    except Exception:  # the heartbeat window will catch it instead
        pass
    try:
        start_waiting(store)
    except Exception as exc:  # noqa: BLE001 - a daemon thread has nobody to raise to
        print(f"flowlab: could not start the next waiting run: {exc}", file=sys.stderr)


def running_processes() -> dict[int, int]:
    """{pid: run_id} of worker processes this server started that have not exited yet."""
    with _LOCK:
        return {pid: getattr(p, "_flowlab_run_id", -1) for pid, p in _PROCS.items() if p.poll() is None}


def _launch(store: RunStore, run_id: int) -> subprocess.Popen:
    run_dir = store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(store.log_path(run_id), "ab") as log:   # the child keeps its own copy of the fd
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting run {run_id}\n".encode())
        log.flush()
        # one GPU per run, by free memory (flowlib.jobs.placement); {} on a machine without one
        return start_module("flowlib.jobs.worker", [str(int(run_id)), "--runs-dir", str(store.root)], log,
                            FLOWLAB_RUNS_DIR=str(store.root), **place_run(store, run_id))


def _launch_claimed(store: RunStore, run_id: int, watch: bool = True) -> int:
    """Launch the worker process of a run that already holds a slot (``queued``); its pid.

    ``watch``: a daemon thread waits on the process (no zombie, ``lost`` at once if it dies
    silently, then the queue moves on). A worker process starting the next run of the queue
    just before it exits passes False: the orphan is reaped by init, and a silent death is
    caught by the heartbeat window instead.
    """
    try:
        proc = _launch(store, run_id)
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = ("the disk is full (no space left on device for "
                      f"{env.shown_path(store.log_path(run_id), store.root)})")
        else:
            reason = env.shown_error(exc, store.root)
        store.finish_run(run_id, "failed", f"Could not start the training process: {reason}.")
        raise
    proc._flowlab_run_id = int(run_id)  # type: ignore[attr-defined]
    try:
        store.set_pid(run_id, proc.pid)
    except Exception:
        pass  # the worker records its own pid too
    if watch:
        with _LOCK:
            _PROCS[proc.pid] = proc
        threading.Thread(target=_reap, args=(store, int(run_id), proc), daemon=True,
                         name=f"flowlab-reaper-{proc.pid}").start()
    return proc.pid


def start_run(store: RunStore, run_id: int, owner: str | None = None) -> int:
    """Claim a concurrency slot for the run, then launch its worker process; returns the pid.

    Raises RunLimitError ("Another run is training (run 3 'mnist-a'); stop it first or raise
    FLOWLAB_MAX_CONCURRENT"), RunStateError (already active / finished; DamagedRunError:
    its stored settings are unreadable), PermissionError (not the owner), KeyError (no such
    run), ValueError (a stored value not allowed, or over a classroom cap: a ConfigError
    naming the field) — all before any process exists.
    """
    store.stored_request(run_id)   # KeyError, DamagedRunError, ConfigError: before any process exists
    store.request_start(run_id, owner)
    return _launch_claimed(store, run_id)


def submit(store: RunStore, request: RunRequest, *, queue: bool = False, submit_key: str | None = None) -> int:
    """Store a run request and start it (or queue it); returns the run id.

    ``queue=False`` (the Train page's Start, the CLI): the run is created already holding a
    slot, in one transaction, so when every slot is taken RunLimitError is raised and nothing
    is left behind — no ``created`` run for anyone to start later. If the process cannot be
    launched, the run is deleted again and the error raised.

    ``queue=True`` (studies): the run is stored as ``waiting`` and starts as soon as a slot is
    free — now, or when a running run ends, whether or not any page is open.

    Admission: the request's settings were checked when its configs were made; the store
    refuses it over a server cap (steps, batch, minutes, and in classroom mode the model's
    parameters and activation memory: a ConfigError, a ValueError naming the field) before
    anything is stored; with ``queue=True``, RunLimitError when the owner already has as many
    runs waiting or training as ``FLOWLAB_MAX_WAITING_PER_VISITOR`` allows, or the queue holds
    ``FLOWLAB_MAX_WAITING``.

    ``submit_key`` (the page's, one per form and settings): while a run submitted with the
    same key by the same owner is waiting or active, its id is returned and nothing new is
    stored or launched, so Start pressed twice starts one run.
    """
    if queue:
        run_id = store.create_run(request, status="waiting", submit_key=submit_key)
        start_waiting(store)
        return run_id
    run_id, new = store.submit_run(request, status="queued", submit_key=submit_key)
    if not new:
        return run_id   # the same submission again: that run is already under way
    try:
        _launch_claimed(store, run_id)
    except Exception:
        store.delete_run(run_id)   # marked failed by _launch_claimed, so deletable
        raise
    return run_id


def start_waiting(store: RunStore, watch: bool = True) -> list[int]:
    """Start the oldest ``waiting`` runs while slots are free; returns the ids started.

    Safe to call from any number of processes at once: each slot is handed out by
    :meth:`RunStore.claim_next_waiting` in one transaction. A run whose process cannot be
    launched is marked failed (by the launch) and the next one is tried.
    """
    started = []
    while True:
        run_id = store.claim_next_waiting()
        if run_id is None:
            return started
        try:
            _launch_claimed(store, run_id, watch=watch)
        except Exception:  # noqa: BLE001 - recorded on the run; the queue must keep moving
            continue
        started.append(run_id)


def keep_queue_moving(store: RunStore, poll_s: float | None = None) -> None:
    """Have ``store`` hand the slots it frees by reaping lost runs to :func:`start_waiting`
    (the store cannot launch processes itself). ``poll_s``: also reap and start every so many
    seconds from a daemon thread of this process (the server: no page need be open). Once per
    store object; later calls change nothing."""
    if getattr(store, "_flowlab_keeps_queue", False):
        return
    store._flowlab_keeps_queue = True   # type: ignore[attr-defined]
    store.add_slot_listener(lambda: start_waiting(store, watch=True))
    if poll_s:
        threading.Thread(target=_poll_queue, args=(store, float(poll_s)), daemon=True,
                         name="flowlab-queue-keeper").start()


def _poll_queue(store: RunStore, poll_s: float) -> None:
    while True:
        time.sleep(poll_s)
        if not store.db_path.exists():
            return   # the runs folder went away (a test's temporary store): nothing to keep
        try:
            store.reap_lost()
            start_waiting(store)
        except Exception as exc:  # noqa: BLE001 - a daemon thread has nobody to raise to
            print(f"flowlab: could not move the queue: {exc}", file=sys.stderr)


def stop_run(store: RunStore, run_id: int, owner: str | None = None, by: str | None = None) -> bool:
    """Ask a run to stop (checkpoint, then ``stopped``). True if this call requested it; a
    second press, or a run that is not active, returns False and changes nothing. ``by``:
    who asks, in words, when it is not the run's owner ("the teacher"); the run says so."""
    return store.request_stop(run_id, owner, by=by)


def resume_run(store: RunStore, run_id: int, owner: str | None = None,
               max_steps: int | None = None, max_minutes: float | None = None,
               batch_size: int | None = None) -> int:
    """Continue a stopped / lost / failed (or finished, with a larger budget) run from its
    checkpoint: same step count, optimizer state, LR schedule and curves. Returns the pid.
    ``batch_size``: continue with another batch size (after running out of memory)."""
    if max_steps is not None or max_minutes is not None or batch_size is not None:
        train = store.stored_request(run_id).train
        changes = {k: v for k, v in (("max_steps", max_steps), ("max_minutes", max_minutes),
                                     ("batch_size", batch_size)) if v is not None}
        store.update_train(run_id, train.replace(**changes), owner)
    return start_run(store, run_id, owner)


def wait_for_run(store: RunStore, run_id: int, statuses=("stopped", "finished", "failed", "lost"),
                 timeout: float = 60.0, poll: float = 0.1) -> dict:
    """Poll the store until the run reaches one of ``statuses``; returns the run (TimeoutError if not)."""
    deadline = time.monotonic() + timeout
    while True:
        run = store.get_run(run_id)
        if run is not None and run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            status = None if run is None else run["status"]
            raise TimeoutError(f"run {run_id} is still {status} after {timeout:g} s")
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowlib.jobs.worker",
                                     description="Train one run of the store (started by the app).")
    parser.add_argument("run_id", type=int, help="id of a queued run in the store")
    parser.add_argument("--runs-dir", default=None, help="run store folder (default $FLOWLAB_RUNS_DIR)")
    args = parser.parse_args(argv)
    try:
        store = RunStore(args.runs_dir)
        store.limits = store.server_limits()   # the server's caps now, not those it was launched with
    except StoreUnavailableError as exc:   # nowhere to record it: the log and the exit code say it
        print(f"run {args.run_id}: {exc}", flush=True)
        return 1
    store.add_slot_listener(lambda: start_waiting(store, watch=False))
    print(f"worker pid {os.getpid()} for run {args.run_id} (store {store.root})", flush=True)
    try:
        return _train_one(store, args.run_id)
    finally:
        # This run has ended, whatever way: its slot goes to the next waiting run, so a queue
        # keeps moving with no page open.
        try:
            for started in start_waiting(store, watch=False):
                print(f"started waiting run {started}", flush=True)
        except Exception as exc:  # noqa: BLE001 - never change how this run ended
            print(f"could not start the next waiting run: {exc}", flush=True)


def _refusal(store: RunStore, run_id: int) -> str | None:
    """Why the stored run must not be trained, in words, or None: its request is read back
    and checked again (values, readable JSON, the server's caps), so a row changed or damaged
    since it was admitted is refused here, before torch, data or a model are loaded."""
    try:
        request = store.stored_request(run_id)
        store.limits.check_run(request.config.to_dict(), request.train.to_dict())
    except KeyError:
        return f"Not started: run {run_id} is no longer in the store."
    except ValueError as exc:
        return f"Not started: {exc}."
    return None


def _train_one(store: RunStore, run_id: int) -> int:
    """Train the run to its end; the process exit code (0: finished or stopped)."""
    try:
        status, stop = store.poll_stop(run_id)
        if status == "stopping" and stop and store.begin_run(run_id, os.getpid()) == "stopping":
            # Stop pressed before we were up: say so without loading torch, data or a model.
            store.finish_run(run_id, "stopped", "Stopped before training began.")
            print(f"run {run_id} stopped before training began", flush=True)
            return 0
        refusal = _refusal(store, run_id)
        if refusal is not None:
            print(refusal, flush=True)
            if store.finish_run(run_id, "failed", refusal):
                store.add_event(run_id, "error", refusal)
            return 1
        from flowlib.train.loop import train_run
        result = train_run(store, run_id, handle_signals=True)
    except BaseException as exc:  # noqa: BLE001 — even an import error must reach the app in words
        traceback.print_exc()
        if isinstance(exc, StoreUnavailableError):
            message = str(exc)   # one sentence already: a full disk, a damaged database ...
        else:
            message = f"The training process failed to start ({type(exc).__name__}: {env.shown_error(exc, store.root)[:300]})."
        try:
            store.finish_run(run_id, "failed", message)
        except Exception:
            pass
        return 1
    print(f"run {run_id} {result.status}: {result.message}", flush=True)
    return 0 if result.status in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
