"""The crash-safe journal of a bulk run (SQLite, standard library).

One row per plan line that has an outcome. Rows are written in batches (a transaction per
batch, WAL mode), so the journal costs the run little; a kill loses at most the last
batch, and that is safe because a resumed run reads every record whose outcome is not in
the journal before writing it (the change may have been applied just before the kill), so
nothing is applied twice.

What is never stored: credentials, request headers, record contents. What is: the plan's
identity (path, size, SHA-256) so a resume refuses a plan that changed, and per line the
change id, system, record, status, HTTP status, version token, error message, attempts and
timings.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

import msgspec

from .errors import ConfigError

if TYPE_CHECKING:
    from .dispatch import Result

__all__ = ["DONE", "Journal", "JournalError"]

#: Outcomes a resume does not redo (``failed`` too, unless asked).
DONE = frozenset({"applied", "unchanged", "conflict", "failed", "invalid"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    line INTEGER PRIMARY KEY,
    id TEXT,
    system TEXT,
    record TEXT,
    status TEXT NOT NULL,
    http_status INTEGER,
    version TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    writes INTEGER NOT NULL DEFAULT 0,
    unconfirmed INTEGER NOT NULL DEFAULT 0,
    started REAL,
    elapsed REAL,
    run INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    interrupted INTEGER NOT NULL DEFAULT 0
);
"""
_VERSION = "1"
_encode = msgspec.json.Encoder().encode


class JournalError(ConfigError):
    """The journal cannot be used for this run (another plan's, in use, or not a journal)."""


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
    """A bulk run's journal. ``with Journal(path) as j:``.

    Args:
        path: The SQLite file (created if missing).
        batch: Outcomes buffered before a write.
        interval: Seconds after which buffered outcomes are written anyway.
    """

    def __init__(self, path: str | Path, *, batch: int = 500, interval: float = 1.0) -> None:
        self.path = Path(path)
        self.batch = batch
        self.interval = interval
        self._buffer: list[tuple[Any, ...]] = []
        self._last = time.monotonic()
        self.run_id = 0
        self._lock = _exclusive(self.path)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._lock.close()
            raise JournalError(f"{self.path}: not a usable journal ({e})") from None
        self._db = _Db(conn, self.path)
        version = self.meta("version")
        if version is None:
            self.set_meta("version", _VERSION)
        elif version != _VERSION:
            raise JournalError(f"{self.path}: journal version {version}, expected {_VERSION}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Write what is buffered and close."""
        try:
            self.flush()
            self._db.close()
        finally:
            self._lock.close()

    # -- plan identity and runs -----------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def bind(self, plan: str, digest: str, *, resume: bool) -> None:
        """Tie the journal to a plan; start a run.

        Raises:
            JournalError: Resuming with another plan (or a changed one), or starting a
                fresh run in a journal that already holds outcomes.
        """
        known = self.meta("plan_sha256")
        if known is not None and known != digest:
            raise JournalError(
                f"{self.path} belongs to another plan ({self.meta('plan')}, changed since or "
                "different): use a new --journal"
            )
        if not resume and self.count() > 0:
            raise JournalError(
                f"{self.path} already holds {self.count():,} outcomes of this plan: "
                "add --resume to continue it, or use a new --journal"
            )
        self.set_meta("plan", plan)
        self.set_meta("plan_sha256", digest)
        cur = self._db.execute("INSERT INTO runs (started) VALUES (?)", (time.time(),))
        self.run_id = int(cur.lastrowid or 0)

    def finish(self, *, interrupted: bool) -> None:
        self.flush()
        self._db.execute(
            "UPDATE runs SET finished = ?, interrupted = ? WHERE run = ?",
            (time.time(), int(interrupted), self.run_id),
        )

    # -- outcomes -----------------------------------------------------------------------

    def record(self, line: int, result: Result) -> None:
        """Buffer one outcome (written by the next :meth:`flush`)."""
        self._buffer.append(
            (
                line,
                result.id,
                result.system,
                _encode(result.record).decode(),
                result.status,
                result.http_status,
                result.version,
                result.error,
                result.attempts,
                result.writes,
                int(result.unconfirmed),
                result.started,
                result.elapsed,
                self.run_id,
            )
        )
        if len(self._buffer) >= self.batch or time.monotonic() - self._last >= self.interval:
            self.flush()

    def record_invalid(self, line: int, error: str, system: str | None) -> None:
        self._buffer.append(
            (
                line,
                None,
                system,
                None,
                "invalid",
                None,
                None,
                error,
                0,
                0,
                0,
                None,
                None,
                self.run_id,
            )
        )

    def flush(self) -> None:
        """Write the buffered outcomes in one transaction."""
        self._last = time.monotonic()
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(line) DO UPDATE SET id=excluded.id, system=excluded.system, "
                "record=excluded.record, status=excluded.status, "
                "http_status=excluded.http_status, version=excluded.version, "
                "error=excluded.error, attempts=items.attempts + excluded.attempts, "
                "writes=items.writes + excluded.writes, unconfirmed=excluded.unconfirmed, "
                "started=excluded.started, elapsed=excluded.elapsed, run=excluded.run",
                rows,
            )

    # -- reading ------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    def count_done(self, *, retry_failed: bool = False) -> int:
        """Valid plan lines with an outcome a resume keeps."""
        done = DONE - {"failed", "invalid"} if retry_failed else DONE - {"invalid"}
        marks = ",".join("?" * len(done))
        row = self._db.execute(
            f"SELECT count(*) FROM items WHERE status IN ({marks})",  # noqa: S608 - placeholders
            tuple(done),
        ).fetchone()
        return int(row[0])

    def done_lines(self, *, retry_failed: bool = False) -> set[int]:
        """Plan lines with an outcome a resume keeps."""
        done = DONE - {"failed"} if retry_failed else DONE
        marks = ",".join("?" * len(done))
        rows = self._db.execute(
            f"SELECT line FROM items WHERE status IN ({marks})",  # noqa: S608 - placeholders
            tuple(done),
        )
        return {int(r[0]) for r in rows}

    def rows(self, *, run: int | None = None) -> Iterator[dict[str, Any]]:
        """Outcomes in plan order (all, or those of one run)."""
        self.flush()
        query = "SELECT * FROM items"
        args: tuple[Any, ...] = ()
        if run is not None:
            query += " WHERE run = ?"
            args = (run,)
        cur = self._db.execute(query + " ORDER BY line", args)
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row, strict=True))

    def counts(self, *, run: int | None = None) -> dict[tuple[str, str], int]:
        """``(system, status)`` -> outcomes."""
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
