"""The SQLite journal (standard library): the default, one file, no server.

The plan's items are loaded in one transaction (all or nothing), WAL mode, and outcomes
are written in batches (a transaction per batch), so the journal costs the run little. A
kill loses at most the last batch of outcomes, and that is safe: their items are still
``taken``, and the next run reads each of those records before writing (the change may
have been applied just before the kill), so nothing is applied twice.

What is never stored: credentials, request headers, whole records. What is: the plan's
identity (path, size, SHA-256), each change as the plan gave it, and per item its status,
HTTP status, version token, error message, attempts, timings, and the values of the
fields it touches before and after (or, for a conflict, as they are now).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

from ._base import (
    _COLUMNS,
    Item,
    JournalError,
    LoadItem,
    Outcome,
    Status,
    SystemStatus,
    WorkerStatus,
    _again,
    _decode_change,
    _encode,
    _outcome,
    _per_system,
    _row,
)

if TYPE_CHECKING:
    from ..changes import Change
    from ..flow import Result

__all__ = ["Journal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    line INTEGER PRIMARY KEY,
    id TEXT,
    system TEXT,
    record ANY,
    change BLOB,
    status TEXT NOT NULL,
    doubt INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    version TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    writes INTEGER NOT NULL DEFAULT 0,
    unconfirmed INTEGER NOT NULL DEFAULT 0,
    started REAL,
    elapsed REAL,
    before BLOB,
    after BLOB,
    current BLOB,
    planned BLOB,
    batch TEXT,
    position INTEGER,
    run INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS items_pending ON items (system, line) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    alive REAL,
    interrupted INTEGER NOT NULL DEFAULT 0
);
"""
_VERSION = "3"
#: Format 2 lacks the batch columns: upgraded in place when a run opens it.
_UPGRADES = {
    "2": "ALTER TABLE items ADD COLUMN batch TEXT; ALTER TABLE items ADD COLUMN position INTEGER;"
}


def _exclusive(path: Path) -> IO[bytes]:
    """Hold the journal file itself exclusively: two runs must never share a journal.

    The lock is on the file, not on a name (a second file named after the path let two
    runs share one journal reached through a symlink). It is the operating system's
    ``flock``, which goes away with the process, even after ``kill -9``, so there is
    never a stale lock to clean up; it is independent of SQLite's own (POSIX) locks.
    This descriptor is opened before SQLite's connection and closed after it, as
    closing a descriptor of the file drops a process's POSIX locks on it.
    """
    handle = open(path, "ab")  # noqa: SIM115 - held until close(); creates an empty db
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise JournalError(
            f"{path} is in use by another run (wait for it, or stop it first)"
        ) from None
    return handle


class _Db:
    """The journal's SQLite connection: any database failure (a full disk, a file size
    limit, a damaged file) is a :class:`JournalError` that names the file, says what is
    kept and how to go on, instead of a raw ``sqlite3`` traceback."""

    __slots__ = ("_conn", "path")

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    def _failed(self, e: sqlite3.Error) -> JournalError:
        text = str(e)
        if "full" in text or "disk" in text or isinstance(e, sqlite3.OperationalError):
            what = f"cannot be written ({text})"
            fix = "free space (or raise the file size limit)"
        else:
            what = f"is damaged ({text})"
            fix = "restore the file from a copy, or start over with a new --journal"
        return JournalError(
            f"{self.path}: the journal {what}; every outcome written before this is kept "
            f"in it: {fix}, then continue with --resume"
        )

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, args)
        except sqlite3.Error as e:
            raise self._failed(e) from None

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        try:
            return self._conn.executemany(sql, rows)
        except sqlite3.Error as e:
            raise self._failed(e) from None

    def executescript(self, sql: str) -> sqlite3.Cursor:
        try:
            return self._conn.executescript(sql)
        except sqlite3.Error as e:
            raise self._failed(e) from None

    def __enter__(self) -> Self:
        self._conn.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._conn.__exit__(*exc)  # commit, or roll back on an error
        except sqlite3.Error as e:
            raise self._failed(e) from None

    def close(self) -> None:
        self._conn.close()


class Journal:
    """A bulk run's journal (SQLite). ``with Journal(path) as j:``.

    Args:
        path: The SQLite file (created if missing).
        batch: Outcomes buffered before a write.
        interval: Seconds after which buffered outcomes are written anyway.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        batch: int = 500,
        interval: float = 1.0,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.shared = False
        self.batch = batch
        self.interval = interval
        self._buffer: list[tuple[Any, ...]] = []
        self._last = time.monotonic()
        self.run_id = 0
        self._lock: IO[bytes] | None = None
        if read_only:
            self._open_read_only()
            return
        lock = _exclusive(self.path)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = _peek_version(conn)
            foreign = _foreign_tables(conn) if version is None else []
            if foreign:
                conn.close()
                lock.close()
                raise JournalError(_not_ours(self.path, foreign))
            if version in _UPGRADES:
                conn.executescript(f"BEGIN; {_UPGRADES[version]} COMMIT;")
                conn.execute("UPDATE meta SET value = ? WHERE key = 'version'", (_VERSION,))
                version = _VERSION
            if version is not None and version != _VERSION:
                conn.close()
                lock.close()
                raise JournalError(
                    f"{self.path}: a journal of format {version} (an earlier patchassign); "
                    f"this one reads format {_VERSION}: finish that run with the version that "
                    "started it, or start over with a new --journal"
                )
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            lock.close()
            raise JournalError(f"{self.path}: not a usable journal ({e})") from None
        self._lock = lock
        self._db = _Db(conn, self.path)
        if self.meta("version") is None:
            self.set_meta("version", _VERSION)

    def _open_read_only(self) -> None:
        """Open for reading only, beside a run that may be writing (``status``): no
        lock taken, nothing created."""
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            version = _peek_version(conn)
        except sqlite3.Error as e:
            raise JournalError(f"{self.path}: not a usable journal ({e})") from None
        if version != _VERSION:
            foreign = _foreign_tables(conn) if version is None else []
            conn.close()
            if version is None:
                raise JournalError(
                    _not_ours(self.path, foreign)
                    if foreign
                    else f"{self.path}: not a patchassign journal (an SQLite database without "
                    "its tables)"
                )
            raise JournalError(f"{self.path}: not a journal of this patchassign (format {version})")
        self._db = _Db(conn, self.path)

    def in_use(self) -> bool:
        """Whether a run holds the journal now."""
        try:
            _exclusive(self.path).close()
        except JournalError:
            return True
        return False

    def __repr__(self) -> str:
        return f"<Journal {self.path}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write what is buffered and close."""
        try:
            if self._lock is not None:
                self.flush()
            self._db.close()
        finally:
            if self._lock is not None:
                self._lock.close()

    # -- plan identity, loading, runs ----------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @property
    def loaded(self) -> bool:
        """Whether a plan is loaded."""
        return self.meta("plan_sha256") is not None

    def load(
        self,
        items: Iterable[LoadItem],
        *,
        plan: str,
        digest: Any,
    ) -> None:
        """Load a plan's items in one transaction: all of them, or none if anything
        raises (the plan's reader refusing it, an interruption).

        Args:
            items: ``(line, change, error, system, key)``: a change, or ``None`` and why
                the line is invalid (and its system, when known).
            plan: The plan's path, for messages.
            digest: A ``hashlib`` object fed while ``items`` is read: its hex digest,
                taken at the end, identifies the plan.

        Raises:
            JournalError: A plan is loaded already.
        """
        if self.loaded:
            raise JournalError(f"{self.path} holds a plan already: use a new --journal")
        sql = (
            "INSERT INTO items (line, id, system, record, change, status, error) "
            "VALUES (?,?,?,?,?,?,?)"
        )
        encode = _encode
        rows: list[tuple[Any, ...]] = []
        with self._db:
            self._db.execute("BEGIN")
            for line, change, error, system, _ in items:
                if change is None:
                    rows.append((line, None, system, None, None, "invalid", error))
                else:
                    rows.append(
                        (
                            line,
                            change.id,
                            change.system,
                            change.record,
                            encode(change),
                            "pending",
                            None,
                        )
                    )
                if len(rows) >= 5000:
                    self._db.executemany(sql, rows)
                    rows.clear()
            if rows:
                self._db.executemany(sql, rows)
            self.set_meta("plan", plan)
            self.set_meta("plan_sha256", digest.hexdigest())

    def start(self, *, retry_failed: bool = False) -> None:
        """Begin a run: whatever an earlier run left unfinished is pending again.

        Items a killed run had ``taken``, and those that ended ``cancelled`` or ``unsent``
        (and ``failed`` ones with ``retry_failed``), go back to ``pending``; those that
        may have been written (taken by a killed run, or with an unconfirmed write) are
        marked so that their records are read before anything is sent.
        """
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE items SET status = 'pending', doubt = 1 WHERE status = 'taken'"
            )
            self._db.execute(
                "UPDATE items SET status = 'pending', doubt = max(doubt, unconfirmed) "  # noqa: S608 - constants
                f"WHERE status IN ({_again(retry_failed)})"
            )
            cur = self._db.execute("INSERT INTO runs (started) VALUES (?)", (time.time(),))
            self.run_id = int(cur.lastrowid or 0)

    def finish(self, *, interrupted: bool) -> None:
        self.flush()
        self._db.execute(
            "UPDATE runs SET finished = ?, interrupted = ? WHERE run = ?",
            (time.time(), int(interrupted), self.run_id),
        )

    def last_alive(self) -> float | None:
        """When an earlier run last wrote to the journal (Unix time), if any did."""
        row = self._db.execute(
            "SELECT max(coalesce(finished, alive, started)) FROM runs WHERE run < ?",
            (self.run_id,),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def doubtful(self) -> dict[str, int]:
        """Pending items per system that an earlier run may have written."""
        cur = self._db.execute(
            "SELECT system, count(*) FROM items WHERE status = 'pending' AND doubt = 1 "
            "GROUP BY system"
        )
        return {str(s): int(n) for s, n in cur}

    def runs(self) -> int:
        """Runs started on this journal."""
        return int(self._db.execute("SELECT count(*) FROM runs").fetchone()[0])

    # -- the queue -------------------------------------------------------------------------

    def todo(self, *, retry_failed: bool = False) -> int:
        """Items a run would do now (see :meth:`start`)."""
        row = self._db.execute(
            "SELECT count(*) FROM items "  # noqa: S608 - constants
            f"WHERE status IN ('pending', 'taken', {_again(retry_failed)})"
        ).fetchone()
        return int(row[0])

    def clear(self) -> None:
        """Forget the loaded plan (only for a journal no run has started on)."""
        if self.runs():
            raise JournalError(f"{self.path}: runs have started on this plan; not cleared")
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM items")
            self._db.execute("DELETE FROM meta WHERE key IN ('plan', 'plan_sha256')")

    def pending(self) -> dict[str, int]:
        """Pending items per system."""
        cur = self._db.execute(
            "SELECT system, count(*) FROM items WHERE status = 'pending' GROUP BY system"
        )
        return {str(s): int(n) for s, n in cur}

    def sample(self, system: str) -> Change | None:
        """A change of ``system`` (for a preflight read)."""
        row = self._db.execute(
            "SELECT change FROM items WHERE system = ? AND change IS NOT NULL LIMIT 1",
            (system,),
        ).fetchone()
        return None if row is None else _decode_change(row[0])

    def take(self, system: str, after: int, limit: int) -> list[Item]:
        """Up to ``limit`` pending items of ``system`` after plan line ``after``, in plan
        order, marked ``taken`` (committed before they are handed out)."""
        rows = self._db.execute(
            "SELECT line, change, doubt FROM items WHERE system = ? AND status = 'pending' "
            "AND line > ? ORDER BY line LIMIT ?",
            (system, after, limit),
        ).fetchall()
        if not rows:
            return []
        first, last = rows[0][0], rows[-1][0]
        self._db.execute(
            "UPDATE items SET status = 'taken', run = ? WHERE system = ? "
            "AND status = 'pending' AND line BETWEEN ? AND ?",
            (self.run_id, system, first, last),
        )
        decode = _decode_change
        return [Item(line, decode(change), bool(doubt)) for line, change, doubt in rows]

    # -- outcomes -----------------------------------------------------------------------

    def record(self, line: int, result: Result, status: str | None = None) -> None:
        """Buffer one outcome (written by the next :meth:`flush`). ``status`` overrides
        the result's (``recovered``)."""
        self._buffer.append((*_outcome(result, status), self.run_id, line))
        if len(self._buffer) >= self.batch or time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Write the buffered outcomes in one transaction."""
        self._last = time.monotonic()
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE runs SET alive = ? WHERE run = ?", (time.time(), self.run_id))
            self._db.executemany(
                "UPDATE items SET status = ?, http_status = ?, version = ?, error = ?, "
                "attempts = attempts + ?, writes = writes + ?, unconfirmed = ?, started = ?, "
                "elapsed = ?, before = coalesce(?, before), after = ?, current = ?, "
                "planned = ?, batch = ?, position = ?, run = ?, doubt = 0 WHERE line = ?",
                rows,
            )

    # -- reading ------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    def rows(
        self, *, statuses: Iterable[str] | None = None, run: int | None = None
    ) -> Iterator[Outcome]:
        """Items in plan order (all, or those with one of ``statuses``, or of one run)."""
        self.flush()
        where, args = _where(statuses, run)
        cur = self._db.execute(
            f"SELECT {_COLUMNS} FROM items {where} ORDER BY line",  # noqa: S608 - placeholders
            args,
        )
        for row in cur:
            yield _row(row)

    def changes(self, statuses: Iterable[str]) -> Iterator[tuple[int, bytes]]:
        """``(line, change as JSON)`` of the items with one of ``statuses``, in plan order."""
        self.flush()
        where, args = _where(statuses, None)
        cur = self._db.execute(
            f"SELECT line, change FROM items {where} AND change IS NOT NULL ORDER BY line",  # noqa: S608
            args,
        )
        for line, change in cur:
            yield int(line), bytes(change)

    def counts(self, *, run: int | None = None) -> dict[tuple[str, str], int]:
        """``(system, status)`` -> items."""
        self.flush()
        where, args = ("WHERE run = ?", (run,)) if run is not None else ("", ())
        cur = self._db.execute(
            f"SELECT coalesce(system, '?'), status, count(*) FROM items {where} "  # noqa: S608
            "GROUP BY 1, 2",
            args,
        )
        return {(str(s), str(st)): int(n) for s, st, n in cur}

    def percentiles(self, qs: tuple[float, ...], *, run: int | None = None) -> list[float]:
        """Latency percentiles (seconds) of the outcomes with a timing."""
        self.flush()
        where = "WHERE elapsed IS NOT NULL" + (" AND run = ?" if run is not None else "")
        args: tuple[Any, ...] = (run,) if run is not None else ()
        n = int(self._db.execute(f"SELECT count(*) FROM items {where}", args).fetchone()[0])  # noqa: S608
        if n == 0:
            return []
        out = []
        for q in qs:
            k = min(n - 1, max(0, round(q * (n - 1))))
            row = self._db.execute(
                f"SELECT elapsed FROM items {where} ORDER BY elapsed LIMIT 1 OFFSET ?",  # noqa: S608
                (*args, k),
            ).fetchone()
            out.append(float(row[0]))
        return out

    def errors(self, *, run: int | None = None, limit: int = 10) -> list[tuple[str, str, str, int]]:
        """The commonest errors: ``(system, status, error, count)``."""
        self.flush()
        where = "WHERE error IS NOT NULL" + (" AND run = ?" if run is not None else "")
        args: tuple[Any, ...] = (run,) if run is not None else ()
        cur = self._db.execute(
            f"SELECT coalesce(system, '?'), status, error, count(*) FROM items {where} "  # noqa: S608
            "GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT ?",
            (*args, limit),
        )
        return [(str(a), str(b), str(c), int(d)) for a, b, c, d in cur]

    def status(self) -> Status:
        """Per system: pending, taken, done by status, outcomes per second over the
        last minute; and the runs."""
        self.flush()
        now = time.time()
        systems: dict[str, SystemStatus] = {}
        cur = self._db.execute(
            "SELECT coalesce(system, '?'), status, count(*), sum(started + elapsed > ?1), "
            "min(CASE WHEN started + elapsed > ?1 THEN started END) FROM items GROUP BY 1, 2",
            (now - 60.0,),
        )
        _per_system(systems, cur, now)
        busy = self._lock is None and self.in_use()
        workers = [
            WorkerStatus(
                run=run,
                name=f"run {run}",
                started=started,
                alive=alive,
                finished=finished,
                live=busy and finished is None and run == last,
            )
            for run, started, alive, finished, last in self._db.execute(
                "SELECT run, started, alive, finished, max(run) OVER () FROM runs ORDER BY run"
            )
        ]
        for s in systems.values():
            s.workers = int(any(w.live for w in workers) and (s.pending + s.taken) > 0)
        return Status(
            where=self.where,
            plan=self.meta("plan"),
            systems=[systems[k] for k in sorted(systems)],
            workers=workers,
        )


def _where(statuses: Iterable[str] | None, run: int | None) -> tuple[str, tuple[Any, ...]]:
    parts: list[str] = []
    args: list[Any] = []
    if statuses is not None:
        wanted = sorted(set(statuses))
        parts.append(f"status IN ({','.join('?' * len(wanted))})")
        args += wanted
    if run is not None:
        parts.append("run = ?")
        args.append(run)
    return ("WHERE " + " AND ".join(parts) if parts else "WHERE 1"), tuple(args)


_OURS = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


def _foreign_tables(conn: sqlite3.Connection) -> list[str]:
    """Tables of an SQLite database that a journal does not make (a journal is only ever
    made in a new file or an empty database, never added to someone else's)."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return sorted({str(r[0]) for r in rows} - _OURS)


def _not_ours(path: Path, foreign: list[str]) -> str:
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return (
        f"{path}: an SQLite database that is not a patchassign journal (it holds the tables "
        f"{shown}); nothing was written to it: give --journal a new file"
    )


def _peek_version(conn: sqlite3.Connection) -> str | None:
    """The format of an existing journal (``None``: a new file)."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
    return None if row is None else str(row[0])
