"""What a run row is: its statuses, its owners, the store's refusals, and reading a row back.

    from flowlib.store.rows import STATUSES, ACTIVE_STATUSES, sanitize_name, check_owner
    sanitize_name("../../etc/passwd")        # "etc-passwd": a name is only ever a label
    check_owner(row, "visitor-b", "stop")    # PermissionError unless the caller may

Shared by the parts of :class:`flowlib.store.runs.RunStore` (its runs, its slots and queue,
its liveness) and re-exported from :mod:`flowlib.store.runs`, where callers import them.

Owners: ``owner`` is who started a run: an opaque visitor id the app passes, or
:data:`TERMINAL_OWNER` for a run started from the command line; rows written before owners
were kept, or by Python code that passed none, hold NULL. A caller passing ``owner=None`` is
trusted (the terminal, the teacher, Python code) and may act on every run. A caller passing an
owner may act only on the runs with exactly that owner: never on another visitor's, the
terminal's or an owner-less run.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from flowlib.settings import ConfigError

from .request import RunRequest

__all__ = ["STATUSES", "ACTIVE_STATUSES", "STARTABLE_STATUSES", "WAITING", "TERMINAL_OWNER", "MAX_NAME",
           "MAX_OWNER", "StoreBusyError", "RunLimitError", "RunStateError", "DamagedRunError",
           "FencedOutError", "sanitize_name", "settings_of_row", "damage_of", "decode", "request_of",
           "check_owner", "owner_words"]

STATUSES = ("created", "waiting", "queued", "running", "stopping", "stopped", "finished", "failed", "lost")
ACTIVE_STATUSES = ("queued", "running", "stopping")
WAITING = "waiting"   # in the queue for a free slot; started by the jobs layer, oldest first
STARTABLE_STATUSES = ("created", "waiting", "stopped", "failed", "lost")
TERMINAL_OWNER = "@terminal"   # runs started from the command line; no visitor id can look like it

MAX_NAME = 80
MAX_OWNER = 200


class StoreBusyError(RuntimeError):
    """The database stayed locked by another program for longer than the retry bound."""


class RunLimitError(ValueError):
    """Starting would exceed a limit of the server (its slots, its queue); the message names it."""


class RunStateError(ValueError):
    """The run is in a state that does not allow the request (e.g. deleting a running run)."""


class DamagedRunError(RunStateError):
    """The run's stored settings cannot be read: it cannot be started, resumed or changed."""


class FencedOutError(RuntimeError):
    """A worker wrote with a fencing token that is no longer its run's: another worker process
    was given the run since (this one was presumed lost and the run resumed). Nothing was
    written; the process holding the old token must stop without writing anything more."""


def sanitize_name(name: Any, fallback: str = "run") -> str:
    """A display name made safe: [A-Za-z0-9 _.-] only, runs collapsed, trimmed, ≤ 80 chars.

    ``"../../etc/passwd"`` -> ``"etc-passwd"``; ``"a\\x00b"`` -> ``"a-b"``; ``""`` -> ``"run"``.
    """
    text = "" if name is None else str(name)
    text = re.sub(r"[^A-Za-z0-9 _.\-]+", "-", text)
    text = re.sub(r"\.{2,}", "-", text)          # no "..": never looks like a parent folder
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r"^[\s.\-_]+|[\s.\-_]+$", "", text)[:MAX_NAME]
    text = re.sub(r"[\s.\-_]+$", "", text)
    return text or fallback


def settings_of_row(row: sqlite3.Row | dict) -> tuple[dict | None, dict | None]:
    """A row's config and train decoded; None for one that is not a readable JSON object."""
    out = []
    for key in ("config", "train"):
        try:
            value = json.loads(row[key])
        except (TypeError, ValueError):
            value = None
        out.append(value if isinstance(value, dict) else None)
    return out[0], out[1]


def damage_of(row: sqlite3.Row | dict, config: dict | None, train: dict | None) -> str | None:
    """The sentence naming the run and which of its stored settings cannot be read, or None."""
    bad = [words for value, words in ((config, "model settings (config)"), (train, "training settings (train)"))
           if value is None]
    if not bad:
        return None
    return (f"run {row['id']} '{row['name']}' is damaged: its stored {' and '.join(bad)} "
            f"{'are' if len(bad) > 1 else 'is'} not readable, so it cannot be started, resumed or "
            "changed; delete it and start a new run")


# Columns the store keeps for itself: a worker's fencing token and the page's submission key
# are never handed to a reader (a token read off a page could be used to write as the worker).
_PRIVATE = ("stop_requested", "token", "submit_key")


def decode(row: sqlite3.Row) -> dict:
    """A run as a dict: config and train decoded; ``damaged`` None, or the sentence saying why
    the run's settings are unreadable (then config / train read ``{}``, for display only, and
    ``message`` is that sentence)."""
    run = dict(row)
    config, train = settings_of_row(row)
    run["damaged"] = damage_of(row, config, train)
    run["config"], run["train"] = config or {}, train or {}
    if run["damaged"]:
        run["message"] = run["damaged"][0].upper() + run["damaged"][1:]
    for key in _PRIVATE:
        run.pop(key, None)
    return run


def request_of(row: sqlite3.Row | dict) -> RunRequest:
    """The stored request of a run row, checked again: DamagedRunError when its JSON cannot be
    read, ConfigError (naming the run and the field) when a value is not allowed."""
    config, train = settings_of_row(row)
    damage = damage_of(row, config, train)
    if damage:
        raise DamagedRunError(damage)
    try:
        return RunRequest.from_dicts(row["name"], config, train, row["owner"], row["preset"])
    except ConfigError as exc:
        raise ConfigError(f"run {row['id']} '{row['name']}' has a stored setting that is not allowed: {exc}",
                          exc.field) from None


def owner_words(owner: str | None) -> str:
    """Who started a run, in words for a page: 'the terminal', 'nobody recorded', 'a visitor'."""
    if owner == TERMINAL_OWNER:
        return "the terminal"
    if owner is None:
        return "nobody recorded (an older or scripted run)"
    return "a visitor"


def check_owner(row: sqlite3.Row | dict, owner: str | None, action: str) -> None:
    """PermissionError, naming the run and who may, unless ``owner`` may ``action`` it: a trusted
    caller (``owner=None``) always may; a visitor only on a run it started itself."""
    if owner is None or (row["owner"] is not None and str(owner) == row["owner"]):
        return
    if row["owner"] == TERMINAL_OWNER:
        who = "it was started from the terminal; only the terminal or the teacher can"
    elif row["owner"] is None:
        who = "it has no recorded owner; only the terminal or the teacher can"
    else:
        who = "only its owner or the teacher can"
    raise PermissionError(f"run {row['id']} '{row['name']}' belongs to someone else: {who} {action} it")
