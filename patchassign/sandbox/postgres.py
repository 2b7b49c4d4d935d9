"""A throwaway PostgreSQL server for tests, benchmarks and trying out workers: a real
one (the machine's PostgreSQL binaries), in a temporary folder, on 127.0.0.1 only,
removed when stopped::

    with PostgresServer() as pg:
        url = pg.new_database()  # postgresql://patchassign@127.0.0.1:PORT/t_...

``initdb`` refuses to run as root: as root, the server runs as the ``postgres`` system
user. On Debian, the binaries come with ``apt-get install postgresql``.

A watchdog process stops the server and removes its folder when the process that started
it ends, also by ``kill -9`` (a killed test run left servers running, each with its
port, its memory and its folder).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Self

__all__ = ["PostgresServer", "postgres_bindir"]

#: Waits for its standard input to end (its owner closed it, or died), then stops the
#: server and removes its folder: ``WATCHDOG [run-as...] PG_CTL DATA FOLDER``.
_WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.buffer.read()
*run_as, pg_ctl, data, folder = sys.argv[1:]
try:
    subprocess.run([*run_as, pg_ctl, "-D", data, "-m", "immediate", "stop"],
                   capture_output=True, timeout=120, cwd=folder)
finally:
    shutil.rmtree(folder, ignore_errors=True)
"""


def postgres_bindir() -> Path | None:
    """Where the PostgreSQL server's binaries are (``initdb``, ``pg_ctl``), if anywhere."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A PostgreSQL cluster of its own on a free loopback port.

    Args:
        bindir: The server's binaries (default: :func:`postgres_bindir`).
        max_connections: The server's connection limit (workers hold two each).

    Raises:
        RuntimeError: No PostgreSQL binaries, or the server did not start (with its log).
    """

    def __init__(self, bindir: Path | None = None, *, max_connections: int = 300) -> None:
        found = bindir or postgres_bindir()
        if found is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bindir = found
        self.max_connections = max_connections
        self.dir = Path(tempfile.mkdtemp(prefix="patchassign-pg-"))
        self.data = self.dir / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._as: list[str] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            shutil.chown(self.dir, user="postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def __repr__(self) -> str:
        return f"<PostgresServer 127.0.0.1:{self.port}>"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, *args: str) -> None:
        subprocess.run(  # noqa: S603 - our own arguments
            [*self._as, *args], check=True, capture_output=True, cwd=self.dir, timeout=120
        )

    def start(self) -> None:
        """``initdb`` (trust authentication, user ``patchassign``) and start the server."""
        pg_ctl = str(self.bindir / "pg_ctl")
        # Its own session: a Ctrl-C to ours does not end it before the server is stopped.
        self._watchdog = subprocess.Popen(  # noqa: S603 - our own arguments
            [sys.executable, "-c", _WATCHDOG, *self._as, pg_ctl, str(self.data), str(self.dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._run(
                str(self.bindir / "initdb"),
                "-D", str(self.data), "-A", "trust", "-U", "patchassign", "-E", "UTF8",
                "--no-sync",
            )  # fmt: skip
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.dir} -F "
                f"-c max_connections={self.max_connections} -c shared_buffers=64MB"
            )
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start",
            )  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            log = self.dir / "server.log"
            detail = log.read_text(errors="replace") if log.exists() else ""
            stderr = (getattr(e, "stderr", None) or b"").decode(errors="replace")
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {e}\n{stderr}\n{detail}") from None

    def stop(self) -> None:
        """Stop the server and remove its folder (the watchdog does it, told now)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        assert watchdog.stdin is not None
        watchdog.stdin.close()
        try:
            watchdog.wait(timeout=150)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The URL of one of the server's databases."""
        return f"postgresql://patchassign@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
