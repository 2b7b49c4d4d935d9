"""A PostgreSQL worker cut off by a silent network partition (no reset, no close).

The partition is real: the test runs in a network namespace of its own (``unshare -n``,
Linux, root) with the PostgreSQL server inside it, and takes its loopback interface down.
Packets are then dropped without an answer, as between two machines on a broken network.
Where namespaces cannot be made (not root, not Linux, a container without the right),
the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from patchassign.journal import JournalError, PgJournal
from patchassign.journal._postgres import options
from patchassign.sandbox.postgres import postgres_bindir

ROOT = Path(__file__).resolve().parents[2]

# Runs inside the namespace. Prints one line per scenario: "<seconds> <what happened>".
CHILD = textwrap.dedent(
    """
    import asyncio, logging, subprocess, sys, threading, time
    from patchassign import Dispatcher, Limits
    from patchassign.journal import JournalError, PgJournal, SharedLimits
    from patchassign.systems import PerscomAdapter
    from patchassign.sandbox.postgres import PostgresServer

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    def lo(state):
        subprocess.run(["ip", "link", "set", "lo", state], check=True)

    def timed(j):
        t = time.monotonic()
        try:
            j.beat()
            what = "ok"
        except JournalError as e:
            what = f"JournalError: {e}"
        return f"{time.monotonic() - t:.1f} {what}"

    async def limits(url):
        # Two processes' worth of slots would be one too many: a process cut off stops
        # sending before its slots' lease ends, and takes them back when it can.
        adapter = PerscomAdapter("http://127.0.0.1:1", "t")
        async with Dispatcher([adapter], limits={"perscom": Limits(concurrency=8)}) as d:
            lane = d._lane("perscom")
            async with SharedLimits(url, d, lease=4, beat=0.5):
                assert lane.max == 8, lane.max
                lo("down")
                t = time.monotonic()
                while lane.max and time.monotonic() - t < 30:
                    await asyncio.sleep(0.05)
                paused = time.monotonic() - t
                await asyncio.sleep(1.0)
                still = lane.max
                lo("up")
                t = time.monotonic()
                while lane.max != 8 and time.monotonic() - t < 30:
                    await asyncio.sleep(0.05)
                print(f"{paused:.1f} {still} {time.monotonic() - t:.1f} {lane.max}", flush=True)

    lo("up")
    with PostgresServer() as server:
        url = server.new_database()
        PgJournal(url).close()  # the journal's tables, shared limits' among them
        asyncio.run(limits(url))
        # The same with libpq's options off: the statement hangs, the pause still comes.
        asyncio.run(limits(url + "?tcp_user_timeout=0&keepalives=0"))
        # A partition longer than the journal can wait for: a typed error, soon.
        with PgJournal(url, lease=6) as j:
            j.start()
            lo("down")
            print(timed(j), flush=True)
            lo("up")
        # A partition that ends while the worker connects again: it goes on.
        with PgJournal(url, lease=6) as j:
            j.start()
            lo("down")
            threading.Timer(3.0, lo, args=("up",)).start()
            print(timed(j), flush=True)
            j.finish(interrupted=False)
    """
)


def _namespaces() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    try:
        got = subprocess.run(
            ["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return got.returncode == 0


def test_the_url_keeps_its_own_connection_options() -> None:
    url = "postgresql://u:pw@h/db?tcp_user_timeout=0&keepalives_idle=30&connect_timeout=2"
    assert conninfo_to_dict(options(url, 15.0, 10)) == {
        "user": "u",
        "password": "pw",
        "host": "h",
        "dbname": "db",
        "tcp_user_timeout": "0",
        "keepalives_idle": "30",
        "connect_timeout": "2",
        "keepalives": "1",
        "keepalives_interval": "1",
        "keepalives_count": "3",
    }
    got = conninfo_to_dict(options("postgresql://u@h/db", 15.0, 10))
    assert got["tcp_user_timeout"] == "5000"  # ms: a third of the lease
    assert got["keepalives_idle"] == "5"
    assert got["connect_timeout"] == "10"
    got = conninfo_to_dict(options("postgresql://u@h/db", 0.5, 10))
    assert got["tcp_user_timeout"] == "1000"  # at least 1 s


@pytest.mark.skipif(postgres_bindir() is None, reason="PostgreSQL server binaries not found")
@pytest.mark.skipif(not _namespaces(), reason="needs Linux network namespaces (unshare -n)")
def test_a_silent_partition_ends_in_a_typed_error_or_is_ridden_out() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    got = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=120,  # without the options, the first statement waits ~15 minutes
        env=env,
        cwd=ROOT,
    )
    assert got.returncode == 0, got.stderr[-3000:]
    paused, off, cut, ridden = got.stdout.splitlines()
    for line in (paused, off):
        stopped, still, _back, held = line.split()
        # Paused a beat before the lease (4 s) of its last renewal (at most a beat ago).
        assert float(stopped) < 3.9, line
        assert still == "0", line  # and it stays so
        assert held == "8", line  # back at its share once the database answers
    assert float(paused.split()[2]) < 3.0, paused  # the connection failed: a new one
    seconds, what = cut.split(" ", 1)
    # tcp_user_timeout (lease / 3 = 2 s) ends the statement; connecting again is tried
    # for another lease / 3; then the worker is told, in words.
    assert what.startswith("JournalError: ")
    assert "cannot be used" in what or "connect" in what, what
    assert 2.0 <= float(seconds) < 10.0, cut
    assert "connecting again" in got.stderr
    seconds, what = ridden.split(" ", 1)
    assert what == "ok", ridden
    assert 2.0 <= float(seconds) < 10.0, ridden


@pytest.mark.parametrize("lease", [0, -1, float("nan"), float("inf")])
def test_a_lease_that_is_no_time_is_refused_before_connecting(lease: float) -> None:
    with pytest.raises(JournalError, match="lease must be"):
        PgJournal("postgresql://u@127.0.0.1:1/db", lease=lease)


def test_a_url_libpq_cannot_read_is_a_journal_error_without_its_password() -> None:
    with pytest.raises(JournalError, match="cannot connect") as e:
        PgJournal("postgresql://u:s3cret@127.0.0.1:1/db?no_such_option=1")
    assert "s3cret" not in str(e.value)
    assert "no_such_option" in str(e.value)
