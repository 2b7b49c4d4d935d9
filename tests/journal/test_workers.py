"""Workers sharing one plan in PostgreSQL: disjoint takes, leases, order per record."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from patchassign.changes import Assign
from patchassign.dispatch import Result
from patchassign.journal import JournalError, PgJournal, _postgres
from patchassign.journal._postgres import split_url

if TYPE_CHECKING:
    from patchassign.sandbox.postgres import PostgresServer


def plan(url: str, records: list[str]) -> None:
    with PgJournal(url) as j:
        j.load(
            [
                (n, Assign(system="s", record=r, to="eve", id=f"c{n}"), None, None, r)
                for n, r in enumerate(records, 1)
            ],
            plan="plan.jsonl",
            digest=hashlib.sha256(),
        )


def done(line: int, **kw: Any) -> Result:
    return Result(index=line, id=None, system="s", record=line, status="applied", **kw)


def test_workers_take_disjoint_items(pg_url: str) -> None:
    plan(pg_url, [str(n) for n in range(2000)])
    taken: dict[int, list[int]] = {}
    workers = [PgJournal(pg_url) for _ in range(4)]
    for w in workers:
        w.start()

    def work(w: PgJournal) -> None:
        mine = taken.setdefault(w.run_id, [])
        while batch := w.take("s", 0, 37):
            mine += [i.line for i in batch]

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [line for lines in taken.values() for line in lines]
    assert sorted(every) == list(range(1, 2001))  # each item once, none twice
    assert sum(1 for lines in taken.values() if lines) >= 2  # the work was shared
    for w in workers:
        w.close()


def test_a_lost_workers_items_come_back_in_doubt_and_its_late_outcomes_are_dropped(
    pg_url: str,
) -> None:
    plan(pg_url, ["a", "b", "c"])
    lost = PgJournal(pg_url, lease=0.3, batch=1000)
    lost.start()
    assert [i.line for i in lost.take("s", 0, 2)] == [1, 2]
    lost.record(1, done(1))
    lost.flush()  # line 1 done; line 2 in flight when it stalls
    other = PgJournal(pg_url, lease=5)
    other.start()
    assert [i.line for i in other.take("s", 0, 10)] == [3]  # 2 is still the stalled one's
    time.sleep(0.5)  # its lease ends
    assert other.reclaim() == 1
    (back,) = other.take("s", 0, 10)
    assert back.line == 2
    assert back.doubt
    assert back.hold is not None
    assert -5 < back.hold < 0
    lost.record(2, done(2, error="late"))  # the stalled worker wakes up: too late
    lost.flush()
    with pytest.raises(JournalError, match="did not renew its lease"):
        lost.beat()
    other.record(2, done(2, error="mine"))
    other.flush()
    assert {r.line: r.error for r in other.rows()}[2] == "mine"
    status = other.status()
    assert [(w.run, w.live) for w in status.workers] == [(lost.run_id, False), (other.run_id, True)]
    lost.close()
    other.close()


def test_changes_to_one_record_keep_their_order_across_workers(pg_url: str) -> None:
    plan(pg_url, ["r1", "r1", "r2", "r1"])
    a, b = PgJournal(pg_url), PgJournal(pg_url)
    a.start()
    b.start()
    assert [i.line for i in a.take("s", 0, 1)] == [1]
    # r1's later changes wait for line 1 (a's); r2 goes
    assert [i.line for i in b.take("s", 0, 10)] == [3]
    a.record(1, done(1))
    a.flush()
    assert [i.line for i in b.take("s", 0, 10)] == [2]  # not 4: 2 is b's own, in order
    assert a.take("s", 0, 10) == []  # 4 waits for 2, which b holds
    b.record(2, done(2))
    b.flush()
    assert [i.line for i in a.take("s", 0, 10)] == [4]
    a.close()
    b.close()


def test_bad_urls_and_unreachable_servers_are_journal_errors() -> None:
    with pytest.raises(JournalError, match="plain name"):
        PgJournal("postgresql://u@127.0.0.1:1/db?schema=a;drop")
    with pytest.raises(JournalError, match="cannot connect") as e:
        PgJournal("postgresql://u:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(e.value)
    assert "postgresql://u@127.0.0.1:1/db" in str(e.value)
    with pytest.raises(JournalError, match="not a PostgreSQL URL") as e:
        PgJournal("postgresql://u:s3cret@[::1:5432/db")  # (a bare ValueError)
    assert "s3cret" not in str(e.value)


def test_a_unix_socket_url_and_parameters_reach_libpq_as_given(
    pg_cluster: PostgresServer, pg_url: str
) -> None:
    """``postgresql:///db?host=/run/postgresql``: the URL of a server on this machine's
    Unix socket, with no host before the path. Taking the schema out of it lost the
    ``//`` (``postgresql:/db?...``), which libpq does not read as a URL; a space in a
    parameter became a ``+``, which libpq keeps."""
    import psycopg

    database = pg_url.rsplit("/", 1)[1]
    url = (
        f"postgresql:///{database}?host={pg_cluster.dir}&port={pg_cluster.port}"
        "&user=patchassign&application_name=night%20run&schema=night_3"
    )
    plan(url, ["a", "b"])
    with PgJournal(url) as j:
        assert j.loaded
        assert j.count() == 2
    with psycopg.connect(pg_url) as conn:
        names = conn.execute("SELECT nspname FROM pg_namespace").fetchall()
    assert ("night_3",) in names
    conninfo, schema, _ = split_url(url)
    assert schema == "night_3"
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("night run",)


def test_a_schema_per_plan(pg_url: str) -> None:
    plan(pg_url + "?schema=night_1", ["a"])
    with PgJournal(pg_url + "?schema=night_2") as j:
        assert not j.loaded
    with PgJournal(pg_url + "?schema=night_1") as j:
        assert j.loaded
        assert j.count() == 1


def test_what_is_left_is_a_tally_kept_by_the_outcomes(pg_url: str) -> None:
    plan(pg_url, ["a", "b", "c", "d"])
    a = PgJournal(pg_url, lease=0.3)
    a.start()
    assert a.left() == {"s": 4}
    assert a.unfinished("s")
    a.take("s", 0, 3)
    a.record(1, done(1))
    a.record(2, Result(index=2, id=None, system="s", record="b", status="cancelled"))
    a.flush()
    assert a.left() == {"s": 2}  # 3 (taken) and 4 (pending)
    time.sleep(0.5)  # a is lost; its late outcome for 3 does not count
    b = PgJournal(pg_url)
    b.start()  # 2 (cancelled) is to do again, 3 comes back
    assert b.left() == {"s": 3}
    a.record(3, done(3))
    a.flush()
    assert b.left() == {"s": 3}
    for item in b.take("s", 0, 10):
        b.record(item.line, done(item.line))
    b.flush()
    assert b.left() == {}
    assert not b.unfinished("s")
    a.close()
    b.close()


def cut(url: str) -> None:
    """The database ends every other connection to it (a restart, a failover)."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )


def test_a_worker_connects_again_when_its_connection_is_cut(pg_url: str) -> None:
    plan(pg_url, ["a", "b", "c"])
    with PgJournal(pg_url, batch=1000) as w:
        w.start()
        cut(pg_url)
        assert [i.line for i in w.take("s", 0, 2)] == [1, 2]
        w.record(1, done(1))
        w.record(2, done(2))
        cut(pg_url)
        w.flush()  # written on a new connection, not lost with the old one
        cut(pg_url)
        w.beat()
        assert w.counts() == {("s", "applied"): 2, ("s", "pending"): 1}


def test_items_a_take_lost_with_its_connection_took_come_first(pg_url: str) -> None:
    """A take that committed as the connection was cut: its items are the worker's, and
    it does not know them. Left taken until the worker ends, an earlier change to a
    record would be written after a later one, which the retried take may hand out."""
    plan(pg_url, ["a", "b", "a"])  # lines 1 and 3 change record a, in that order
    with PgJournal(pg_url, batch=1000) as w:
        w.start()
        with psycopg.connect(pg_url, autocommit=True) as db:
            # What the lost take did: line 1 (and 2) taken by this worker...
            db.execute(
                "UPDATE patchassign.items SET status = 'taken', worker = %s, run = %s "
                "WHERE line IN (1, 2)",
                (w.run_id, w.run_id),
            )
        cut(pg_url)  # ...and the answer lost with the connection
        assert [i.line for i in w.take("s", 0, 10)] == [1, 2]  # not 3 before 1
        w.record(1, done(1))
        w.record(2, done(2))
        assert [i.line for i in w.take("s", 0, 10)] == [3]


def test_a_take_after_a_cut_never_hands_out_again_what_has_an_outcome_not_yet_written(
    pg_url: str,
) -> None:
    plan(pg_url, ["a", "b", "c", "d"])
    with PgJournal(pg_url, batch=1000, interval=1000) as w:
        w.start()
        assert [i.line for i in w.take("s", 0, 3)] == [1, 2, 3]
        w.record(1, done(1))
        w.record(2, done(2))  # buffered: items 1 and 2 are still taken in the journal
        cut(pg_url)
        assert [i.line for i in w.take("s", 0, 10)] == [4]  # before: [1, 2], sent twice
        w.record(3, done(3))
        w.record(4, done(4))
        w.flush()
        assert w.counts() == {("s", "applied"): 4}


def test_once_connecting_again_failed_the_other_calls_fail_at_once(pg_url: str) -> None:
    plan(pg_url, ["a", "b"])
    db = pg_url.rsplit("/", 1)[1]
    with PgJournal(pg_url, lease=3) as w:
        w.start()
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
            try:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (db,),
                )
                t = time.monotonic()
                with pytest.raises(JournalError, match="cannot be used"):
                    w.take("s", 0, 10)
                tried = time.monotonic() - t
                t = time.monotonic()
                with pytest.raises(JournalError, match="cannot be used"):
                    w.beat()
                again = time.monotonic() - t
            finally:
                admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
        w._closed = True  # (its connection is gone: nothing to write on close)
    assert tried >= 0.5  # a third of the lease, trying
    assert again < 0.5  # not a second third


def test_takes_and_writes_from_threads_while_outcomes_are_kept_lose_nothing(pg_url: str) -> None:
    """As a bulk run uses it: takes and writes in threads (off the event loop), outcomes
    kept by another thread meanwhile, a connection cut among them. Every item ends with
    one outcome, and the tallies agree."""
    import queue

    with PgJournal(pg_url) as j:
        j.load(
            [
                (
                    n,
                    Assign(system=f"s{n % 3}", record=str(n), to="eve", id=f"c{n}"),
                    None,
                    None,
                    str(n),
                )
                for n in range(1, 3001)
            ],
            plan="plan.jsonl",
            digest=hashlib.sha256(),
        )
    got: queue.Queue[int | None] = queue.Queue()
    with PgJournal(pg_url, batch=50, interval=0.01) as w:
        w.start()

        def taker(system: str) -> None:
            while batch := w.take(system, 0, 7):
                for item in batch:
                    got.put(item.line)
            got.put(None)

        def writer() -> None:
            while not stop.is_set():
                w.flush()

        stop = threading.Event()
        threads = [threading.Thread(target=taker, args=(f"s{k}",)) for k in range(3)]
        threads.append(threading.Thread(target=writer))
        for t in threads:
            t.start()
        ended = kept = 0
        while ended < 3:
            line = got.get(timeout=60)
            if line is None:
                ended += 1
                continue
            if w.keep(line, done(line)):
                pass  # the writer thread writes
            kept += 1
            if kept == 1500:
                cut(pg_url)
        stop.set()
        for t in threads:
            t.join()
        w.flush()
        assert kept == 3000
        assert w.counts() == {(f"s{k}", "applied"): 1000 for k in range(3)}
        assert w.left() == {}
    with psycopg.connect(pg_url) as db:  # the tallies: each outcome counted once
        tally = db.execute("SELECT system, total, done FROM patchassign.tally ORDER BY 1")
        assert tally.fetchall() == [(f"s{k}", 1000, 1000) for k in range(3)]


def test_a_servers_message_with_a_nul_character_is_kept_not_fatal(pg_url: str) -> None:
    # PostgreSQL's text holds no NUL: the batch of outcomes was refused, and the worker
    # stopped with "the journal cannot be used".
    plan(pg_url, ["a", "b"])
    with PgJournal(pg_url) as w:
        w.start()
        w.take("s", 0, 2)
        w.record(1, done(1, error="HTTP 400: bad\x00id", version="v\x001"), "failed")
        w.record(2, done(2))
        w.flush()
        rows = {r.line: r for r in w.rows()}
    assert rows[1].error == "HTTP 400: bad\ufffdid"
    assert rows[1].version == "v\ufffd1"
    assert rows[2].status == "applied"


def test_a_cut_while_loading_a_plan_is_not_retried(pg_url: str) -> None:
    # The lock that keeps a second loader waiting went with the connection: loading on
    # a new one could load the plan twice.
    with PgJournal(pg_url) as j, j.exclusive("load"):
        cut(pg_url)
        with pytest.raises(JournalError, match="cannot be used"):
            j.meta("plan")


def test_a_cut_while_the_journal_is_set_up_is_tried_once_more(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_up = _postgres._set_up
    calls = []

    def cut_first(conn: psycopg.Connection[Any], schema: str, shown: str) -> None:
        calls.append(schema)
        if len(calls) == 1:  # the server ends this connection as it starts (a restart)
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        set_up(conn, schema, shown)

    monkeypatch.setattr(_postgres, "_set_up", cut_first)
    with PgJournal(pg_url) as j:
        assert j.count() == 0
    assert len(calls) == 2


def test_a_throwaway_server_goes_when_its_owner_is_killed(pg_cluster: PostgresServer) -> None:
    # (pg_cluster only for its skip where there are no PostgreSQL binaries)
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from patchassign.sandbox.postgres import PostgresServer\n"
            "pg = PostgresServer().__enter__()\n"
            "print(pg.dir, pg.port, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    folder, port = owner.stdout.readline().split()
    with psycopg.connect(f"postgresql://patchassign@127.0.0.1:{port}/postgres") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    owner.kill()  # kill -9: nothing of its own runs
    owner.wait()
    owner.stdout.close()
    deadline = time.monotonic() + 60
    while Path(folder).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(folder).exists()  # stopped (its data was in it) and removed
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://patchassign@127.0.0.1:{port}/postgres", connect_timeout=2)
