"""Every ``FLOWLAB_*`` environment variable, declared once and parsed one way.

    from flowlib import env
    env.read("FLOWLAB_MAX_STEPS")                    # int, or the variable's default (None here)
    env.read("FLOWLAB_MAX_STEPS", classroom=True)    # the classroom default (5000) when unset
    env.flag("FLOWLAB_CLASSROOM")                    # "1" / "true" / "yes" / "on" -> True
    env.runs_root()                                  # $FLOWLAB_RUNS_DIR or <repo>/checkpoints/runs
    env.snapshot(env.LIMIT_VARIABLES)                # the raw values, e.g. as a cache key

A value that does not parse raises ``ValueError`` naming the variable and what it must be,
wherever it is read: a typo in a server's environment is said, never silently replaced by a
default. The README's settings table lists the same variables (a test keeps them equal).

No torch and no other flowlib import: the ground floor, readable by every module above it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Variable", "VARIABLES", "LIMIT_VARIABLES", "REPO_ROOT", "HEARTBEAT_S", "MIN_BEATS_PER_WINDOW",
           "read", "flag", "snapshot", "runs_root", "cache_root", "is_set", "shown_path", "shown_error"]

# The checkout this package lives in: the default home of the run store and the data cache,
# and the working directory of the processes the server launches.
REPO_ROOT = Path(__file__).resolve().parent.parent

_TRUE_WORDS = ("1", "true", "yes", "on")

# A training worker's heartbeat period, and the fewest heartbeats a liveness window may span:
# a window shorter than a few beats would mark a healthy run lost after one late beat.
HEARTBEAT_S = 1.0
MIN_BEATS_PER_WINDOW = 3


@dataclass(frozen=True)
class Variable:
    """One environment variable: how it parses, its default, and what it does."""

    name: str
    kind: str                    # flag | int | float | path | text
    help: str                    # one line: the README's settings table says the same
    default: Any = None          # when unset (None: the caller decides, e.g. from the GPU)
    classroom_default: Any = None   # when unset in classroom mode (None: same as default)
    low: float = 1               # int: smallest allowed; float: must be > 0 (low is unused)
    minimum: float | None = None  # float: smallest allowed, when more than "> 0"
    secret: bool = False         # never shown on a page


VARIABLES: dict[str, Variable] = {v.name: v for v in (
    Variable("FLOWLAB_RUNS_DIR", "path", "where the run store (runs.sqlite) and the run folders live "
             "(default <repo>/checkpoints/runs)"),
    Variable("FLOWLAB_CACHE_DIR", "path", "preprocessed folders, CelebA / CIFAR-10 caches and uploads "
             "(default <repo>/.cache/datasets)"),
    Variable("FLOWLAB_CLASSROOM", "flag", "classroom mode: caps below get their classroom defaults, "
             "students manage only their own runs, no server paths can be typed"),
    Variable("FLOWLAB_MAX_CONCURRENT", "int", "runs that may train at once on this server (default 1 "
             "on a CPU; on a GPU one per 16 GiB of its memory, at most 4)"),
    Variable("FLOWLAB_MAX_STEPS", "int", "most training steps a run may ask for", classroom_default=5000),
    Variable("FLOWLAB_MAX_BATCH", "int", "largest batch size a run may ask for", classroom_default=256),
    Variable("FLOWLAB_MAX_MINUTES", "float", "longest time budget a run may ask for; the trainer also "
             "ends any run at this much training time", classroom_default=60.0),
    Variable("FLOWLAB_MAX_PARAMS", "int", "most parameters a run's model may have (counted without "
             "building it)", classroom_default=3_000_000),
    Variable("FLOWLAB_MAX_ACTIVATION_MB", "int", "most estimated activation memory one training batch "
             "may need", classroom_default=2048),
    Variable("FLOWLAB_MAX_WAITING_PER_VISITOR", "int", "runs one visitor may have waiting or training "
             "at once (a study counts each run)", classroom_default=12),
    Variable("FLOWLAB_MAX_WAITING", "int", "runs waiting in the server's queue, all visitors together",
             classroom_default=60),
    Variable("FLOWLAB_MAX_UPLOAD_MB", "int", "largest picture zip a page accepts, in MB", default=50,
             classroom_default=20),
    Variable("FLOWLAB_UPLOAD_QUOTA_MB", "float", "total size of kept uploads and the pixels decoded "
             "from them, in MB; the oldest that no waiting or running run reads are evicted first", default=300.0),
    Variable("FLOWLAB_DECODE_BUDGET_MPX", "float", "megapixels one folder or zip may cost to decode "
             "(default: 64, or 10 pixels per stored byte if more)"),
    Variable("FLOWLAB_DECODE_BUDGET_SECONDS", "float", "seconds one folder or zip may spend decoding "
             "(default: 60, or 1 s per stored MB if more)"),
    Variable("FLOWLAB_TEACHER_KEY", "text", "the key that lets a browser tab stop, resume, rename and "
             "delete every run, not only its own", secret=True),
    Variable("FLOWLAB_HEARTBEAT_STALE_S", "float", "seconds without a new heartbeat before a running run "
             "is marked lost (at least 3: three heartbeats)", default=30.0,
             minimum=MIN_BEATS_PER_WINDOW * HEARTBEAT_S),
    Variable("FLOWLAB_START_TIMEOUT_S", "float", "seconds a queued run may wait for its process to "
             "come up (at least 3)", default=120.0, minimum=MIN_BEATS_PER_WINDOW * HEARTBEAT_S),
    Variable("FLOWLAB_DB_TIMEOUT_S", "float", "SQLite busy timeout and the write-retry bound, seconds",
             default=5.0),
    Variable("FLOWLAB_ESTIMATE_TIMEOUT_S", "float", "seconds the Train page's speed measurement may take",
             default=60.0),
    Variable("FLOWLAB_ESTIMATE_MEMORY_MB", "int", "memory the speed-measuring process may use, in MB",
             default=3072),
    Variable("FLOWLAB_VIEW_THREADS", "int", "torch threads the exploration pages compute with", default=1),
    Variable("FLOWLAB_STUDY_STORAGE", "text", "the study database the Runs page lists and starts studies in: "
             "sqlite:///PATH, postgresql://USER@HOST/DB or a journal file (default: studies.sqlite in the "
             "runs folder)", secret=True),
    Variable("FLOWLAB_STUDY_GRACE_S", "float", "seconds without a heartbeat before a study trial is marked "
             "failed and queued again for another worker", default=60.0),
)}

# The variables that decide a RunStore's limits (a page caches one store per combination).
LIMIT_VARIABLES = ("FLOWLAB_CLASSROOM", "FLOWLAB_MAX_CONCURRENT", "FLOWLAB_MAX_STEPS",
                   "FLOWLAB_MAX_BATCH", "FLOWLAB_MAX_MINUTES", "FLOWLAB_MAX_PARAMS",
                   "FLOWLAB_MAX_ACTIVATION_MB", "FLOWLAB_MAX_WAITING_PER_VISITOR", "FLOWLAB_MAX_WAITING",
                   "FLOWLAB_HEARTBEAT_STALE_S", "FLOWLAB_START_TIMEOUT_S", "FLOWLAB_DB_TIMEOUT_S")


def _raw(name: str) -> str:
    if name not in VARIABLES:
        raise KeyError(f"{name} is not a Flow Lab variable (flowlib.env.VARIABLES lists them)")
    return os.environ.get(name, "").strip()


def _parse(var: Variable, raw: str):
    if var.kind == "flag":
        return raw.lower() in _TRUE_WORDS
    if var.kind == "int":
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < var.low:
            raise ValueError(f"environment variable {var.name} must be an integer ≥ {var.low:g}, got {raw!r}")
        return value
    if var.kind == "float":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"environment variable {var.name} must be a positive number, got {raw!r}")
        if var.minimum is not None and value < var.minimum:
            raise ValueError(f"environment variable {var.name} must be at least {var.minimum:g}, got {raw!r}")
        return value
    if var.kind == "path":
        return Path(raw).expanduser()
    return raw


def read(name: str, classroom: bool | None = None):
    """The variable's value, parsed by its kind; its default when unset or empty.

    ``classroom``: pick the classroom default when unset (None: read FLOWLAB_CLASSROOM).
    ValueError, naming the variable, for a value that does not parse.
    """
    var, raw = VARIABLES.get(name), _raw(name)
    if raw:
        return _parse(var, raw)
    if var.kind == "flag":
        return False
    if var.classroom_default is not None:
        if classroom is None:
            classroom = flag("FLOWLAB_CLASSROOM")
        if classroom:
            return var.classroom_default
    return var.default


def is_set(name: str) -> bool:
    """True when the variable holds a non-blank value."""
    return bool(_raw(name))


def flag(name: str) -> bool:
    """True when a flag variable is 1 / true / yes / on (any case); anything else is False."""
    return _raw(name).lower() in _TRUE_WORDS


def snapshot(names=None) -> tuple[str, ...]:
    """The raw values of ``names`` (default: every variable), e.g. to key a cache on them."""
    return tuple(_raw(n) for n in (names if names is not None else VARIABLES))


def runs_root() -> Path:
    """Where the run store lives: $FLOWLAB_RUNS_DIR, else <repo>/checkpoints/runs."""
    return read("FLOWLAB_RUNS_DIR") or REPO_ROOT / "checkpoints" / "runs"


def cache_root() -> Path:
    """Where dataset caches and uploads live: $FLOWLAB_CACHE_DIR, else <repo>/.cache/datasets."""
    return read("FLOWLAB_CACHE_DIR") or REPO_ROOT / ".cache" / "datasets"


def shown_path(path: str | os.PathLike, *roots: str | os.PathLike) -> str:
    """How a server file is named in a message a browser may show: never its absolute path.

    Relative to the first of ``roots`` that holds it, else to the runs folder, the data cache
    or the checkout (``run-00001/checkpoint.pt``, ``checkpoints/mnist_demo.pt``), else only its
    name. Pass a store's own root first when it is not the default one. Server logs (stderr)
    may still print the whole path; what a page shows goes through here.
    """
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    bases: list[Path] = [Path(r) for r in roots]
    for default in (runs_root, cache_root):
        try:
            bases.append(default())
        except ValueError:    # a malformed variable is reported where it is read, not here
            pass
    bases.append(REPO_ROOT)
    for base in bases:
        for a, b in ((p, base), (p, _resolved(base)), (_resolved(p), _resolved(base))):
            try:
                rel = a.relative_to(b)
            except ValueError:
                continue
            return rel.as_posix() if rel.parts else (p.name or "the folder")
    return p.name or "the folder"


def shown_error(exc: BaseException, *roots: str | os.PathLike) -> str:
    """``str(exc)``, except that an OSError names its files by :func:`shown_path` (Python's
    own text for one is ``[Errno 13] Permission denied: '/srv/…/run-00001/worker.log'``)."""
    if isinstance(exc, OSError) and (exc.filename or exc.filename2):
        names = [shown_path(os.fsdecode(f), *roots) for f in (exc.filename, exc.filename2)
                 if isinstance(f, (str, bytes, os.PathLike)) and f]
        return f"{exc.strerror or type(exc).__name__}: {' -> '.join(names)}"
    return str(exc)


def _resolved(p: Path) -> Path:
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return p
