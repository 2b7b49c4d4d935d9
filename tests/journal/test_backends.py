"""The journal's behaviour, one suite run against both backends: SQLite (a file) and
PostgreSQL (a real server the tests start, see ``tests/pg.py``)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from patchassign.changes import Assign
from patchassign.dispatch import Result
from patchassign.journal import JournalError, JournalLike, open_journal

Opener = Callable[..., JournalLike]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    where = (
        str(tmp_path / "plan.journal")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    opened: list[JournalLike] = []

    def open_(**kw: Any) -> JournalLike:
        j = open_journal(where, **kw)
        opened.append(j)
        return j

    yield open_
    for j in opened:
        j.close()


def result(index: int, status: str = "applied", **kw: Any) -> Result:
    return msgspec.convert(
        {"index": index, "id": f"c{index}", "system": "kintone", "record": f"1:{index}"}
        | {"status": status, **kw},
        Result,
    )


def load(j: JournalLike, n: int, *, system: str = "kintone", invalid: int = 0) -> None:
    items: list[Any] = [
        (i, Assign(system=system, record=f"1:{i}", to="eve", id=f"c{i}"), None, None, f"1:{i}")
        for i in range(1, n + 1)
    ]
    items += [(n + k, None, "field 'to': missing", system, None) for k in range(1, invalid + 1)]
    j.load(items, plan="plan.jsonl", digest=hashlib.sha256(b"abc"))


def test_a_queue_that_keeps_outcomes_and_says_what_to_read_first(opener: Opener) -> None:
    j = opener(batch=3, interval=3600)
    load(j, 5, invalid=1)
    assert j.loaded
    assert j.meta("plan") == "plan.jsonl"
    assert j.meta("plan_sha256") == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(JournalError, match="holds a plan already"):
        load(j, 5)
    assert j.count() == 6
    j.start()
    assert j.pending() == {"kintone": 5}
    taken = j.take("kintone", 0, 4)
    assert [i.line for i in taken] == [1, 2, 3, 4]
    assert taken[1].change == Assign(system="kintone", record="1:2", to="eve", id="c2")
    assert not any(i.doubt for i in taken)
    assert [i.line for i in j.take("kintone", 4, 10)] == [5]
    assert j.take("kintone", 5, 10) == []
    assert j.pending() == {}
    j.record(1, result(0, before={"to": ["ada"]}, after={"to": ["eve"]}, elapsed=0.1))
    j.record(2, result(1, "conflict", error="assigned to zed", current={"to": ["zed"]}))
    j.record(3, result(2, "failed", error="HTTP 404", elapsed=0.5))
    j.record(4, result(3, "cancelled", unconfirmed=True, writes=1))
    j.finish(interrupted=True)
    j.close()

    # Line 5 was taken and never finished: the run stopped with it in flight.
    j = opener()
    assert j.counts() == {
        ("kintone", "applied"): 1,
        ("kintone", "conflict"): 1,
        ("kintone", "failed"): 1,
        ("kintone", "cancelled"): 1,
        ("kintone", "invalid"): 1,
        ("kintone", "taken" if not j.shared else "pending"): 1,
    }
    assert j.todo() == 2
    assert j.todo(retry_failed=True) == 3
    j.start(retry_failed=True)
    assert j.runs() == 2
    assert j.doubtful() == {"kintone": 2}
    again = j.take("kintone", 0, 10)
    # In doubt (read before writing): the one in flight when the run stopped, the one
    # with an unconfirmed write; not the failure, whose write never went out.
    assert [(i.line, i.doubt) for i in again] == [(3, False), (4, True), (5, True)]
    j.record(4, result(3, "applied", attempts=2))
    rows = {r.line: r for r in j.rows()}
    assert rows[4].status == "applied"
    assert rows[4].attempts == 2  # added to the earlier run's attempts
    assert rows[4].writes == 1
    assert rows[4].run == j.run_id
    assert rows[1].record == "1:1"  # as the plan gave it
    assert rows[1].before == {"to": ["ada"]}
    assert rows[2].current == {"to": ["zed"]}
    assert rows[2].change["id"] == "c2"
    assert rows[6].status == "invalid"
    assert rows[6].error == "field 'to': missing"
    assert [line for line, _ in j.changes(["conflict", "taken"])] == [2, 3, 5]
    assert [r.line for r in j.rows(statuses=["applied"], run=j.run_id)] == [4]
    assert j.percentiles((0.0, 1.0)) == [0.0, 0.5]  # line 4's result has no timing
    assert ("kintone", "conflict", "assigned to zed", 1) in j.errors()
    sample = j.sample("kintone")
    assert sample is not None
    assert sample.system == "kintone"
    assert j.sample("nowhere") is None


def test_status_per_system(opener: Opener) -> None:
    j = opener(batch=1)
    load(j, 4)
    j.start()
    j.take("kintone", 0, 2)
    j.record(1, result(0, started=time.time(), elapsed=0.01))
    j.flush()
    status = j.status()
    assert status.plan == "plan.jsonl"
    (s,) = status.systems
    assert (s.system, s.pending, s.taken, s.done) == ("kintone", 2, 1, {"applied": 1})
    assert s.rate == pytest.approx(1.0)  # one outcome, in a run younger than a second
    assert [w.run for w in status.workers] == [j.run_id]


def test_a_plan_is_loaded_whole_or_not_at_all(opener: Opener) -> None:
    j = opener()

    def items() -> Iterator[Any]:
        yield 1, Assign(system="kintone", record=1, to="eve"), None, None, "1"
        raise ValueError("the plan's reader failed")

    with pytest.raises(ValueError, match="reader failed"):
        j.load(items(), plan="p", digest=hashlib.sha256())
    assert not j.loaded
    assert j.count() == 0
    load(j, 2)  # and a good load works after it
    assert j.count() == 2


def test_clear_forgets_a_plan_no_run_started(opener: Opener) -> None:
    j = opener()
    load(j, 3)
    j.clear()
    assert not j.loaded
    assert j.count() == 0
    load(j, 3)
    j.start()
    with pytest.raises(JournalError, match="not cleared"):
        j.clear()


def test_records_of_many_forms_round_trip(opener: Opener) -> None:
    j = opener()
    j.load(
        [
            (1, Assign(system="s", record=7, to="a"), None, None, "7"),
            (2, Assign(system="s", record="x/y é", to=["a", "b"]), None, None, "x/y é"),
        ],
        plan="p",
        digest=hashlib.sha256(),
    )
    j.start()
    assert [i.change.record for i in j.take("s", 0, 10)] == [7, "x/y é"]
    assert [r.record for r in j.rows()] == [7, "x/y é"]


def test_the_batch_a_change_rode_in_is_kept(opener: Opener) -> None:
    j = opener(batch=1)
    load(j, 3)
    j.start()
    j.take("kintone", 0, 10)
    j.record(1, result(0, batch="kintone-w4", position=0))
    j.record(2, result(1, batch="kintone-w4", position=1))
    j.record(3, result(2))
    j.finish(interrupted=False)
    rows = {r.line: r for r in j.rows()}
    assert (rows[1].batch, rows[1].position) == ("kintone-w4", 0)
    assert (rows[2].batch, rows[2].position) == ("kintone-w4", 1)
    assert (rows[3].batch, rows[3].position) == (None, None)
    assert "batch" not in msgspec.json.decode(msgspec.json.encode(rows[3]))  # omitted


def test_a_journal_of_the_previous_format_is_upgraded_in_place(opener: Opener) -> None:
    """A journal written before batches (no batch columns) is upgraded when a run opens
    it: a resume after an upgrade of patchassign goes on."""
    j = opener()
    load(j, 2)
    j.start()
    j.take("kintone", 0, 1)
    j.record(1, result(0))
    j.finish(interrupted=True)
    j.close()
    old = "2" if not j.shared else "1"
    if not j.shared:
        import sqlite3

        with sqlite3.connect(j.where) as db:
            db.execute("ALTER TABLE items DROP COLUMN batch")
            db.execute("ALTER TABLE items DROP COLUMN position")
            db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (old,))
    else:
        import psycopg

        url = str(j.where)
        with psycopg.connect(url.split("?")[0]) as conn:
            conn.execute("SET search_path TO patchassign")
            conn.execute("ALTER TABLE items DROP COLUMN batch, DROP COLUMN position")
            conn.execute("UPDATE meta SET value = %s WHERE key = 'version'", (old,))
    j = opener()
    assert j.meta("version") != old
    j.start()
    j.take("kintone", 0, 10)
    j.record(2, result(1, batch="kintone-w1", position=3))
    j.finish(interrupted=False)
    rows = {r.line: r for r in j.rows()}
    assert rows[1].status == rows[2].status == "applied"
    assert rows[2].position == 3


def test_a_journal_is_never_added_to_someone_elses_database(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointed at a database (or schema) that holds other tables, the journal refuses
    and writes nothing to it; an empty one becomes a journal as before."""
    import sqlite3

    import psycopg

    from patchassign.cli import main

    app = tmp_path / "app.db"
    with sqlite3.connect(app) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()

    def tables() -> list[str]:
        c = sqlite3.connect(app)
        try:
            return sorted(r[0] for r in c.execute("SELECT name FROM sqlite_master"))
        finally:
            c.close()

    for read_only in (False, True):
        with pytest.raises(JournalError, match=r"not a patchassign journal .*customers"):
            open_journal(str(app), read_only=read_only)
    for command in ("undo", "leftovers", "status"):
        assert main([command, str(app)]) == 2
        assert "it holds the tables customers" in capsys.readouterr().err
    assert tables() == ["customers"]

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(JournalError, match="without its tables"):
        open_journal(str(empty), read_only=True)
    open_journal(str(empty)).close()  # an empty database is a new journal

    with psycopg.connect(pg_url, autocommit=True) as pg:
        pg.execute("CREATE TABLE public.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        pg.execute("CREATE TABLE public.orders (id INTEGER PRIMARY KEY)")
        with pytest.raises(JournalError, match=r"schema 'public' is not a patchassign .*orders"):
            open_journal(pg_url + "?schema=public")
        left = pg.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
        assert sorted(r[0] for r in left) == ["meta", "orders"]
        assert pg.execute("SELECT count(*) FROM public.meta").fetchone() == (0,)
        open_journal(pg_url).close()  # its own schema, as before
