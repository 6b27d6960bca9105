"""How a training run fails, in words: the exceptions the loop raises, the paragraph the app
shows for any failure (``describe_failure``) and the status and message a session that ended
with an exception gets (``describe_end``).

The loop (``flowlib.train.loop``) raises and catches these; the app, the worker and the CLI
only read the messages, from the run store.
"""

from __future__ import annotations

import errno
from pathlib import Path

from flowlib import env
from flowlib.core.checkpoint import CheckpointError
from flowlib.data.sources.common import DatasetError
from flowlib.store.dbfile import StoreUnavailableError
from flowlib.store.runs import StoreBusyError

from .oom import is_out_of_memory

__all__ = ["TrainingDiverged", "OutOfMemoryAtBatch", "PeerLost", "describe_failure", "describe_end"]


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


class PeerLost(RuntimeError):
    """Under torchrun, a collective failed because another rank is gone (see
    :func:`flowlib.train.distributed.is_peer_lost`); rank 0 records it in these words."""

    def __init__(self, world_size: int, step: int, cause: BaseException):
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        detail = first_line.split("] ", 1)[-1][:200]   # gloo prefixes its source file and line
        super().__init__(
            f"Another process of this torchrun job ({world_size} processes) ended or lost its connection "
            f"after step {step:,}: rank 0's collective step with it failed ({detail}). The other processes "
            "end too.")


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
            return (f"Writing a file failed{where} (the disk may be full: {env.shown_error(exc).strip()[:200]})."
                    f"{kept} Free some space, then resume.")
    if isinstance(exc, (OutOfMemoryAtBatch, PeerLost)):
        return f"{exc}{kept}"
    if is_out_of_memory(exc):
        smaller = f" (e.g. {max(1, batch_size // 2)} instead of {batch_size})" if batch_size else ""
        return (f"Out of memory{where}. Try a smaller batch size{smaller} or a smaller model "
                f"(fewer levels, steps or hidden channels).{kept}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"The disk is full (no space left on device){where}.{kept} Free some space, then resume."
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Permission denied{where} ({env.shown_path(exc.filename) if exc.filename else exc.strerror}).{kept}"
    if isinstance(exc, TrainingDiverged):
        return str(exc)
    if isinstance(exc, (DatasetError, CheckpointError)):
        return str(exc)
    if isinstance(exc, StoreBusyError):
        return f"The run database stayed locked{where}: {exc}"
    if isinstance(exc, ValueError):
        return f"Invalid setting{where}: {exc}"
    text = env.shown_error(exc).strip().splitlines()
    detail = f": {text[0][:300]}" if text else ""
    return f"Training failed{where} ({type(exc).__name__}{detail}).{kept}"


def describe_end(exc: BaseException, during: str, batch_size: int | None, last_checkpoint_step: int | None,
                 run_dir: Path | None) -> tuple[str, str]:
    """``(status, message)`` for a training session that ended with ``exc`` ``during`` a stage.

    Ctrl-C is ``stopped``; anything else ``failed``. ``run_dir``: the run's folder once a
    session exists (None before): a folder deleted under a running session is said in words
    of its own. ``last_checkpoint_step``: pass it only when that checkpoint file still exists.
    """
    if isinstance(exc, KeyboardInterrupt):
        kept = (f"; the checkpoint at step {last_checkpoint_step} is intact." if last_checkpoint_step is not None
                else ".")
        return "stopped", f"Interrupted {during}, before a checkpoint could be saved{kept}"
    if run_dir is not None and not run_dir.is_dir():
        return "failed", (f"The run's folder {run_dir} was deleted (noticed {during}), and its "
                          "checkpoint with it, so this run cannot continue; start a new run.")
    return "failed", describe_failure(exc, during, batch_size, last_checkpoint_step)
