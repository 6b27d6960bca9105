"""Starting a flowlib process from a long-lived one (the Streamlit server, a worker handing
on its slot): ``python -m MODULE ARGS`` in a session of its own, never a pipe.

    proc = start_module("flowlib.jobs.worker", [str(run_id), "--runs-dir", root], log_file,
                        FLOWLAB_RUNS_DIR=root)

Why a process of its own session (``start_new_session``): Ctrl-C in the server's terminal and
a Streamlit restart must not reach it. Why not ``multiprocessing``: spawn re-runs the page
script, and fork after torch has started its threads hangs. Output goes to a file or nowhere
(a pipe nobody reads fills and blocks the child).
"""

from __future__ import annotations

import os
import subprocess
import sys

from flowlib import env

__all__ = ["start_module"]


def start_module(module: str, args: list[str], output=subprocess.DEVNULL, **extra_env: str) -> subprocess.Popen:
    """Popen of ``python -m module *args`` from the checkout this flowlib lives in.

    ``output``: a file object (stdout and stderr both go there) or DEVNULL. ``extra_env``: set
    in the child's environment on top of this process's; PYTHONPATH gets the checkout first.
    """
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(env.REPO_ROOT), child_env.get("PYTHONPATH", "")) if p)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.update(extra_env)
    return subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.DEVNULL,
                            stdout=output, stderr=subprocess.STDOUT, cwd=str(env.REPO_ROOT),
                            env=child_env, start_new_session=True, close_fds=True)
