"""A real PostgreSQL server for the tests that spread a study over machines: started from
Debian's binaries in a temporary folder, listening on 127.0.0.1 only, stopped afterwards.

    from tests.postgres_kit import postgres_server
    with postgres_server(tmp_path) as url:      # "postgresql://flowlab@127.0.0.1:PORT/flowlab"
        ...

``available()`` says why it cannot start (no binaries, no driver), so a test can skip with
that reason. As root, the server runs as the ``postgres`` system user (``initdb`` refuses
root), through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["available", "not_installed", "postgres_server"]


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def not_installed() -> str | None:
    """The reason in words when Debian's PostgreSQL server binaries are missing, else None."""
    if _bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)"
    return None


def available() -> str | None:
    """None when a server can be started here, else the reason in words."""
    if not_installed():
        return not_installed()
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser, and initdb refuses root"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "the psycopg2 driver is not installed (requirements.txt has psycopg2-binary)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres_server(folder: Path, timeout: float = 60.0):
    """Start a throw-away server with a ``flowlab`` database and user (trust auth on
    127.0.0.1); yields its URL; stops it and leaves the folder to the caller's tmp_path."""
    reason = available()
    if reason:
        raise RuntimeError(reason)
    bin_dir = _bin_dir()
    data = Path(folder) / "pgdata"
    data.mkdir(parents=True)
    sockets = Path(folder) / "pgsock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
        os.chmod(folder, 0o755)
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "flowlab", "-A", "trust",
                                    "--no-sync", "-E", "UTF8"]), check=True, capture_output=True, timeout=timeout)
    port = _free_port()
    log = Path(folder) / "postgres.log"
    with open(log, "wb") as out:
        if os.geteuid() == 0:
            shutil.chown(log, "postgres", "postgres")
        server = subprocess.Popen(_as_server_user([
            str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"]),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import psycopg2
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="flowlab", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-1500:]}") from None
                time.sleep(0.2)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE flowlab")
        conn.close()
        yield f"postgresql://flowlab@127.0.0.1:{port}/flowlab"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
