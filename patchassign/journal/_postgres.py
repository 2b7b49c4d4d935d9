"""The PostgreSQL journal: one plan shared by any number of workers on any number of
machines (psycopg 3).

Every worker is a row of ``workers`` with a lease that it renews while it works
(:meth:`PgJournal.beat`). Workers take their system's pending items in batches with
``SELECT ... FOR UPDATE SKIP LOCKED``, so no two take the same item, and mark them
``taken`` by themselves. A worker whose lease ends (killed, its machine lost, cut off
from the database) is marked lost by whoever notices first, and its taken items go back
to ``pending``, in doubt: whoever takes them next reads the record before writing,
exactly as a resume does. A lost worker's late outcomes are discarded (each outcome is
written only while its item is still taken by the worker that writes it).

Changes to one record keep their plan order across workers: an item is not taken while
an earlier item of the same record is pending or taken by another worker.

Times are the database's clock (``clock_timestamp()``), so the workers' clocks never
have to agree. The tables live in their own schema (``patchassign`` by default,
``?schema=NAME`` in the URL for another): one plan per schema.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit

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
    import psycopg

    from ..changes import Change
    from ..flow import Result

__all__ = ["PgJournal", "is_url", "split_url"]

_VERSION = "2"
#: Format 1 lacks the batch columns: upgraded in place when a worker opens it.
_UPGRADES = {
    "1": "ALTER TABLE items ADD COLUMN IF NOT EXISTS batch TEXT, "
    "ADD COLUMN IF NOT EXISTS position INTEGER"
}
log = logging.getLogger("patchassign")
_T = TypeVar("_T")

#: The database's clock, as Unix time.
NOW = "extract(epoch FROM clock_timestamp())"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    line BIGINT PRIMARY KEY,
    id TEXT,
    system TEXT,
    record JSONB,
    key TEXT,
    change BYTEA,
    status TEXT NOT NULL,
    doubt BOOLEAN NOT NULL DEFAULT false,
    hold DOUBLE PRECISION,
    http_status INTEGER,
    version TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    writes INTEGER NOT NULL DEFAULT 0,
    unconfirmed BOOLEAN NOT NULL DEFAULT false,
    started DOUBLE PRECISION,
    elapsed DOUBLE PRECISION,
    before BYTEA,
    after BYTEA,
    current BYTEA,
    planned BYTEA,
    batch TEXT,
    position INTEGER,
    run INTEGER,
    worker INTEGER
);
CREATE INDEX IF NOT EXISTS items_pending ON items (system, (line + 0))
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS items_key ON items (system, key, line);
CREATE INDEX IF NOT EXISTS items_taken ON items (system, (line + 0)) WHERE status = 'taken';
CREATE TABLE IF NOT EXISTS tally (
    system TEXT PRIMARY KEY,
    total BIGINT NOT NULL,
    done BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS workers (
    run SERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    alive DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL,
    finished DOUBLE PRECISION,
    interrupted BOOLEAN NOT NULL DEFAULT false,
    lost BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS limits (
    system TEXT PRIMARY KEY,
    concurrency INTEGER NOT NULL,
    rate DOUBLE PRECISION,
    burst INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS limit_members (
    member TEXT PRIMARY KEY,
    systems TEXT[] NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS limit_slots (
    system TEXT NOT NULL,
    slot INTEGER NOT NULL,
    holder TEXT,
    expires DOUBLE PRECISION,
    PRIMARY KEY (system, slot)
);
"""


_OURS = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


def is_url(where: object) -> bool:
    """Whether ``--journal`` names a PostgreSQL database rather than a file."""
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


def split_url(url: str) -> tuple[str, str, str]:
    """``(conninfo, schema, shown)``: the URL for libpq (without ``schema``), the schema,
    and the URL as messages may show it (without its password)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracketed host that is not an IPv6 address
        raise JournalError("not a PostgreSQL URL (postgresql://user@host:port/dbname)") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = "patchassign"
    rest = []
    for k, v in query:
        if k == "schema":
            schema = v
        else:
            rest.append((k, v))
    if not schema.isidentifier() or len(schema) > 63:
        raise JournalError(f"schema must be a plain name (letters, digits, _), got {schema!r}")
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    return _unsplit(parts, parts.netloc, rest), schema, _unsplit(parts, netloc, query)


def _unsplit(parts: SplitResult, netloc: str, query: list[tuple[str, str]]) -> str:
    """The URL again, always with its ``//``: ``urlunsplit`` drops it where the host is
    empty, and libpq reads ``postgresql:/db?host=/run/postgresql`` (a Unix socket's URL,
    ``postgresql:///db?...`` as given) as no URL at all."""
    q = urlencode(query, quote_via=quote)  # %20, not "+": libpq decodes only %XX
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{q}" if q else "")


def _key(schema: str, what: str) -> int:
    """An advisory lock's key for ``what`` in ``schema`` (a stable 63-bit number)."""
    import hashlib

    digest = hashlib.sha256(f"patchassign:{schema}:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def options(conninfo: str, lease: float, connect_timeout: int) -> str:
    """``conninfo`` with libpq's connection options for a journal's connection added,
    where it does not set them itself.

    Besides ``connect_timeout``, TCP keepalives and ``tcp_user_timeout`` at a third of
    the lease: a connection that a network partition cut silently (no reset, no close)
    then fails within about that, and is opened again (:meth:`PgJournal._again`), instead
    of a statement waiting until the kernel gives up on the socket (about 15 minutes on
    Linux) with the event loop's thread blocked and the worker's items going to others.
    A URL's own ``?tcp_user_timeout=0`` (or ``keepalives=0``) turns them off.

    Raises:
        psycopg.ProgrammingError: ``conninfo`` is not a URL libpq reads.
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    third = round(min(lease / 3, 1200)) if lease / 3 >= 1 else 1  # (NaN: 1)
    wanted = {
        "connect_timeout": connect_timeout,
        "keepalives": 1,
        "keepalives_idle": third,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": third * 1000,  # ms
    }
    given = conninfo_to_dict(conninfo)
    return make_conninfo(conninfo, **{k: v for k, v in wanted.items() if k not in given})


def connect(url: str, lease: float = 15.0) -> tuple[psycopg.Connection[Any], str, str]:
    """A connection to the journal's database with its schema created (and checked):
    ``(connection, schema, shown URL)``. ``lease``: the workers' lease (see
    :func:`options`)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the extra is not installed
        raise JournalError(
            "a PostgreSQL journal needs psycopg: pip install 'patchassign[postgres]'"
        ) from None
    conninfo, schema, shown = split_url(url)
    retried = False
    while True:
        try:
            conn = psycopg.connect(options(conninfo, lease, 10), autocommit=True)
        except psycopg.Error as e:
            raise JournalError(f"{shown}: cannot connect ({_reason(e, url)})") from None
        try:
            _set_up(conn, schema, shown)
        except psycopg.Error as e:
            lost = conn.closed
            conn.close()
            if lost and not retried:  # the database ended the connection: once more
                retried = True
                continue
            raise JournalError(f"{shown}: cannot set up the journal ({_reason(e, url)})") from None
        except BaseException:
            conn.close()
            raise
        return conn, schema, shown


def search_path(schema: str) -> psycopg.sql.Composed:
    """``SET search_path`` to the journal's schema (each new connection runs it)."""
    from psycopg import sql

    return sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))


def _set_up(conn: psycopg.Connection[Any], schema: str, shown: str) -> None:
    """Create the journal's schema and tables (or check and upgrade them)."""
    from psycopg import sql

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key(schema, "schema"),))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(search_path(schema))
        exists = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = 'meta'",
            (schema,),
        ).fetchone()
        version = None
        if exists:
            row = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            version = None if row is None else str(row[0])
        if version is None:
            # A journal is only made in a new or empty schema, never added to tables
            # of someone else's (a `?schema=public` of an application's database).
            names = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            ).fetchall()
            foreign = sorted({str(r[0]) for r in names} - _OURS)
            if foreign:
                shown_tables = ", ".join(foreign[:5]) + (
                    f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
                )
                raise JournalError(
                    f"{shown}: schema {schema!r} is not a patchassign journal (it holds the "
                    f"tables {shown_tables}); nothing was written to it: choose another "
                    "?schema="
                )
        if version in _UPGRADES:
            conn.execute(_UPGRADES[version])
            conn.execute("UPDATE meta SET value = %s WHERE key = 'version'", (_VERSION,))
            version = _VERSION
        if version is not None and version != _VERSION:
            raise JournalError(
                f"{shown}: a journal of format {version}; this patchassign reads format "
                f"{_VERSION}: use the version that started it, or another ?schema="
            )
        conn.execute(_SCHEMA)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('version', %s) ON CONFLICT DO NOTHING",
            (_VERSION,),
        )


def _reason(e: BaseException, url: str) -> str:
    """A database error's message, one line, with the URL's password masked."""
    text = " ".join(str(e).split()) or type(e).__name__
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return text


class PgJournal:
    """A bulk run's journal in PostgreSQL, shared by workers. ``with PgJournal(url) as j:``.

    Args:
        url: ``postgresql://user@host:port/dbname`` (libpq's URL; ``?schema=NAME`` picks
            the schema, ``patchassign`` by default).
        batch: Outcomes buffered before a write.
        interval: Seconds after which buffered outcomes are written anyway.
        lease: Seconds a worker's items stay its own without a heartbeat; a worker
            renews its lease every ``lease / 3`` seconds (:meth:`beat`). Its
            connection's TCP keepalives and ``tcp_user_timeout`` are a third of it
            (:func:`options`): a silently cut connection fails within about that.
        name: This worker's name in ``status`` (default: host and process id).
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        batch: int = 500,
        interval: float = 1.0,
        lease: float = 15.0,
        name: str | None = None,
    ) -> None:
        if not 0 < lease <= 86_400:  # NaN too
            raise JournalError(f"lease must be over 0 and at most a day (seconds), got {lease!r}")
        self.url = url
        # (says if psycopg is missing)
        self._conn, self.schema, self.where = connect(url, lease)
        import psycopg

        self._psycopg = psycopg
        self.batch = batch
        self.interval = interval
        self.lease = lease
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.run_id = 0
        self._buffer: list[tuple[Any, ...]] = []
        self._last = time.monotonic()
        self._closed = False
        self._locks = 0  # advisory locks held (they go with the connection)
        self._handed: set[int] = set()  # items taken and handed out, without an outcome
        # A bulk run calls the journal from threads (off its event loop): one user of the
        # connection at a time (``_db``, around every statement and transaction), and
        # the buffer and ``_handed`` changed under ``_mem`` (held for no I/O).
        self._db = threading.RLock()
        self._broken: str | None = None  # why connecting again failed, if it did
        self._mem = threading.Lock()
        #: Set when this worker's lease was found lost (it must stop).
        self.lost: JournalError | None = None
        #: Seconds the last take's statement took (the database's round trip and work,
        #: not the wait for the connection): how far the database is.
        self.took = 0.0

    def __repr__(self) -> str:
        return f"<PgJournal {self.where}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write what is buffered and close."""
        with self._db:
            if self._closed:
                return
            try:
                self.flush()
            finally:
                self._closed = True
                self._conn.close()

    # -- database access -------------------------------------------------------------------

    def _failed(self, e: Exception) -> JournalError:
        return JournalError(
            f"{self.where}: the journal cannot be used ({_reason(e, self.url)}); every outcome "
            "written before this is kept in it: fix the database, then run again with --join"
        )

    def _execute(self, query: str, args: Any = None) -> psycopg.Cursor[Any]:
        return self._again(lambda: self._conn.execute(query, args))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """A transaction never run again on a new connection (a plan's load: its items
        are read once); see :meth:`_atomic` for the others."""
        try:
            with self._db, self._conn.transaction():
                yield
        except self._psycopg.Error as e:
            raise self._failed(e) from None

    def _atomic(self, body: Callable[[], _T]) -> _T:
        """``body`` in one transaction (run again on a new connection if the one it ran
        on was lost: see :meth:`_again`)."""

        def transaction() -> _T:
            with self._conn.transaction():
                return body()

        return self._again(transaction)

    def _again(self, run: Callable[[], _T], instead: Callable[[], _T] | None = None) -> _T:
        """``run()``; if the connection was lost (the server restarted, a failover or a
        proxy cut it), connect again and run it once more, except while a lock that went
        with it was held (loading a plan). What a lost transaction did was rolled back,
        and every statement can run twice: an outcome is written only over an item
        still taken by this worker; items taken by a transaction that committed as the
        connection was lost go back to the pool when the worker finishes, or its lease
        ends; a worker registered so has no items and its lease ends. ``instead``, if
        given, is what runs on the new connection."""
        with self._db:
            if self._broken is not None and self._conn.closed:
                # Connecting again failed already: the journal's other calls (a bulk
                # run's other lanes, its heartbeat, its finish) fail at once, not each
                # after a third of the lease.
                raise JournalError(self._broken)
            try:
                return run()
            except self._psycopg.Error as e:
                if self._closed or self._locks or not self._conn.closed:
                    raise self._failed(e) from None
                self._reconnect(e)
            try:
                return (instead or run)()
            except self._psycopg.Error as e:
                raise self._failed(e) from None

    def _reconnect(self, lost: Exception) -> None:
        """A new connection, tried for up to a third of the lease (the lease holds
        meanwhile; past it other workers take this one's items back, as from a stalled
        worker, and :meth:`beat` says so)."""
        psycopg = self._psycopg
        log.warning(
            "journal: the connection to %s was lost (%s): connecting again",
            self.where,
            _reason(lost, self.url),
        )
        conninfo, schema, _ = split_url(self.url)
        give_up = time.monotonic() + self.lease / 3
        wait = 0.1
        while True:
            conn = None
            try:
                conn = psycopg.connect(options(conninfo, self.lease, 5), autocommit=True)
                conn.execute(search_path(schema))
            except psycopg.Error as e:
                if conn is not None:
                    conn.close()
                if time.monotonic() + wait > give_up:
                    failed = self._failed(e)
                    self._broken = str(failed)
                    raise failed from None
                time.sleep(wait)
                wait = min(2 * wait, 1.0)
                continue
            self._conn = conn
            self._broken = None
            return

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Hold a lock named ``what`` (in this journal's schema) for the block: a second
        loader of the plan waits here until the first one's load is committed."""
        key = _key(self.schema, what)
        self._execute("SELECT pg_advisory_lock(%s)", (key,))
        self._locks += 1  # (a new connection would not hold it: none is made meanwhile)
        try:
            yield
        finally:
            self._locks -= 1
            with contextlib.suppress(JournalError):
                self._execute("SELECT pg_advisory_unlock(%s)", (key,))

    # -- plan identity, loading, runs ----------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._execute(
            "INSERT INTO meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @property
    def loaded(self) -> bool:
        """Whether a plan is loaded."""
        return self.meta("plan_sha256") is not None

    def load(self, items: Iterable[LoadItem], *, plan: str, digest: Any) -> None:
        """Load a plan's items in one transaction (``COPY``): all of them, or none if
        anything raises. See :meth:`patchassign.journal.Journal.load`.

        Raises:
            JournalError: A plan is loaded already.
        """
        from psycopg.types.json import Jsonb

        encode = _encode
        with self._transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key(self.schema, "load"),))
            if self.loaded:
                raise JournalError(f"{self.where} holds a plan already: use another ?schema=")
            with self._conn.cursor().copy(
                "COPY items (line, id, system, record, key, change, status, error) FROM STDIN"
            ) as copy:
                for line, change, error, system, key in items:
                    if change is None:
                        copy.write_row((line, None, system, None, None, None, "invalid", error))
                    else:
                        copy.write_row(
                            (
                                line,
                                change.id,
                                change.system,
                                Jsonb(change.record),
                                key if key is not None else str(change.record),
                                encode(change),
                                "pending",
                                None,
                            )
                        )
            self._conn.execute(
                "INSERT INTO tally (system, total) SELECT system, count(*) FROM items "
                "WHERE status = 'pending' GROUP BY system"
            )
            self.set_meta("plan", plan)
            self.set_meta("plan_sha256", digest.hexdigest())
        self._execute("ANALYZE items")

    def start(self, *, retry_failed: bool = False) -> None:
        """Join the plan as a worker: register with a lease, take back the items of
        workers whose lease ended, and make pending again what earlier workers left
        ``cancelled`` or ``unsent`` (and ``failed`` with ``retry_failed``)."""

        def body() -> None:
            row = self._conn.execute(
                f"INSERT INTO workers (name, started, alive, lease_until) "  # noqa: S608 - constants
                f"VALUES (%s, {NOW}, {NOW}, {NOW} + %s) RETURNING run",
                (self.name, self.lease),
            ).fetchone()
            assert row is not None
            self.run_id = int(row[0])
            self._conn.execute(
                "WITH again AS (UPDATE items SET status = 'pending', "  # noqa: S608
                "doubt = doubt OR unconfirmed, "
                "hold = CASE WHEN unconfirmed THEN started + elapsed ELSE hold END "
                f"WHERE status IN ({_again(retry_failed)}) RETURNING system) "
                "UPDATE tally SET done = tally.done - n FROM "
                "(SELECT system, count(*) AS n FROM again GROUP BY system) c "
                "WHERE tally.system = c.system"
            )

        self._atomic(body)
        self.reclaim()

    def reclaim(self) -> int:
        """Mark workers whose lease ended as lost and put their taken items back, in
        doubt; returns how many items came back."""

        # The usual case, nobody lost, in one round trip rather than a transaction's
        # three (a database a network away); a worker lost meanwhile is found next time.
        if not self._execute(
            "SELECT 1 FROM workers WHERE finished IS NULL AND NOT lost "  # noqa: S608
            f"AND lease_until < {NOW} LIMIT 1"
        ).fetchone():
            return 0

        def body() -> int:
            lost = self._conn.execute(
                "UPDATE workers SET lost = true "  # noqa: S608 - constants
                f"WHERE finished IS NULL AND NOT lost AND lease_until < {NOW} "
                "RETURNING run, lease_until"
            ).fetchall()
            if not lost:  # the usual case: nothing to scan
                return 0
            cur = self._conn.execute(
                "UPDATE items SET status = 'pending', doubt = true, worker = NULL, "
                "hold = lost.lease_until FROM unnest(%s::int[], %s::float8[]) "
                "AS lost(run, lease_until) "
                "WHERE items.worker = lost.run AND items.status = 'taken'",
                [[r for r, _ in lost], [t for _, t in lost]],
            )
            return cur.rowcount

        return self._atomic(body)

    def beat(self) -> None:
        """Renew this worker's lease, write buffered outcomes, and take back the items of
        lost workers.

        Raises:
            JournalError: This worker's lease ended and others took its items back: it
                must stop (whatever it writes now would be discarded).
        """
        row = self._execute(
            f"UPDATE workers SET alive = {NOW}, lease_until = {NOW} + %s "  # noqa: S608
            "WHERE run = %s AND NOT lost RETURNING run",
            (self.lease, self.run_id),
        ).fetchone()
        if row is None:
            raise JournalError(
                f"{self.where}: this worker ({self.name}) did not renew its lease in time "
                f"({self.lease:g} s) and its items went to other workers: it stops"
            )
        self.flush()
        self.reclaim()

    def finish(self, *, interrupted: bool) -> None:
        """Leave the plan: write buffered outcomes and give back the items taken and
        without an outcome, in doubt (as a killed run's, they are read before writing)."""
        self.flush()

        def body() -> None:
            self._conn.execute(
                f"UPDATE items SET status = 'pending', worker = NULL, doubt = true, hold = {NOW} "  # noqa: S608
                "WHERE worker = %s AND status = 'taken'",
                (self.run_id,),
            )
            self._conn.execute(
                f"UPDATE workers SET finished = {NOW}, alive = {NOW}, interrupted = %s "  # noqa: S608
                "WHERE run = %s",
                (interrupted, self.run_id),
            )

        self._atomic(body)

    def last_alive(self) -> float | None:
        """Unused with a shared journal: a lost worker's items carry their own hold."""
        return None

    def doubtful(self) -> dict[str, int]:
        """Pending items per system that an earlier worker may have written."""
        cur = self._execute(
            "SELECT system, count(*) FROM items WHERE status = 'pending' AND doubt GROUP BY system"
        )
        return {str(s): int(n) for s, n in cur}

    def runs(self) -> int:
        """Workers that joined this plan."""
        return int(self._execute("SELECT count(*) FROM workers").fetchone()[0])  # type: ignore[index]

    # -- the queue -------------------------------------------------------------------------

    def todo(self, *, retry_failed: bool = False) -> int:
        """Items a worker could do now or later (pending, taken, or to be done again)."""
        row = self._execute(
            "SELECT count(*) FROM items "  # noqa: S608 - constants
            f"WHERE status IN ('pending', 'taken', {_again(retry_failed)})"
        ).fetchone()
        return int(row[0]) if row else 0

    def unfinished(self, system: str) -> bool:
        """Whether any item of ``system`` is still pending or taken (by any worker)."""
        row = self._execute(
            "SELECT EXISTS (SELECT 1 FROM items WHERE system = %(s)s AND status = 'pending') "
            "OR EXISTS (SELECT 1 FROM items WHERE system = %(s)s AND status = 'taken')",
            {"s": system},
        ).fetchone()
        return bool(row and row[0])

    def ready(self, system: str) -> bool:
        """Whether any item of ``system`` is pending (for a take, now or once an earlier
        item of its record is done)."""
        row = self._execute(
            "SELECT EXISTS (SELECT 1 FROM items WHERE system = %s AND status = 'pending')",
            (system,),
        ).fetchone()
        return bool(row and row[0])

    def left(self) -> dict[str, int]:
        """Items per system without an outcome yet (pending, or taken by any worker):
        what the plan's workers, this one among them, have left to do. Kept as a tally
        by each batch of outcomes, so asking costs nothing at any plan size."""
        cur = self._execute("SELECT system, total - done FROM tally WHERE total > done")
        return {str(s): int(n) for s, n in cur}

    def clear(self) -> None:
        """Forget the loaded plan (only for a journal no worker has joined)."""
        if self.runs():
            raise JournalError(f"{self.where}: workers have joined this plan; not cleared")
        with self._transaction():
            self._conn.execute("DELETE FROM items")
            self._conn.execute("DELETE FROM tally")
            self._conn.execute("DELETE FROM meta WHERE key IN ('plan', 'plan_sha256')")

    def pending(self) -> dict[str, int]:
        """Pending items per system."""
        cur = self._execute(
            "SELECT system, count(*) FROM items WHERE status = 'pending' GROUP BY system"
        )
        return {str(s): int(n) for s, n in cur}

    def sample(self, system: str) -> Change | None:
        """A change of ``system`` (for a preflight read)."""
        row = self._execute(
            "SELECT change FROM items WHERE system = %s AND change IS NOT NULL LIMIT 1",
            (system,),
        ).fetchone()
        return None if row is None else _decode_change(row[0])

    def take(self, system: str, after: int, limit: int) -> list[Item]:
        """Up to ``limit`` pending items of ``system``, in plan order, marked taken by this
        worker (``SKIP LOCKED``: items another worker is taking are passed over).

        An item waits while an earlier item of the same record is pending or taken by
        another worker, so changes to one record keep their order. ``after`` is
        ignored: items can come back to the pool behind any position."""
        take = (
            "WITH c AS (SELECT line FROM items i WHERE system = %(s)s AND status = 'pending' "  # noqa: S608
            "AND NOT EXISTS (SELECT 1 FROM items e WHERE e.system = i.system "
            "AND e.key = i.key AND e.line < i.line AND (e.status = 'pending' "
            "OR (e.status = 'taken' AND e.worker <> %(w)s))) "
            # line + 0: only the partial index of pending items gives this order, so
            # the scan never walks the items already done, whatever the statistics say
            # (with stale ones the planner took the primary key: a scan of every item).
            "ORDER BY line + 0 LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
            "UPDATE items SET status = 'taken', worker = %(w)s, run = %(w)s FROM c "
            "WHERE items.line = c.line "
            f"RETURNING items.line, items.change, items.doubt, items.hold - {NOW}"
        )
        args = {"s": system, "w": self.run_id, "n": limit}

        def taken_unknown() -> psycopg.Cursor[Any]:
            # The take lost with the connection may have committed: the items it took
            # are this worker's and it does not know them. They come first (left
            # taken, an earlier change to a record would be written after a later one).
            # Known are those handed out, with an outcome or not: an outcome buffered
            # and not yet written leaves its item taken (handed out again, it would be
            # sent twice).
            with self._mem:
                known = [*self._handed, *(row[-2] for row in self._buffer)]
            cur = self._conn.execute(
                f"SELECT line, change, doubt, hold - {NOW} FROM items "  # noqa: S608
                "WHERE system = %s AND worker = %s AND status = 'taken' "
                "AND NOT line = ANY(%s::bigint[])",
                (system, self.run_id, known),
            )
            return cur if cur.rowcount else self._conn.execute(take, args)

        def run() -> psycopg.Cursor[Any]:
            started = time.perf_counter()
            cur = self._conn.execute(take, args)
            self.took = time.perf_counter() - started
            return cur

        cur = self._again(run, taken_unknown)
        decode = _decode_change
        rows = sorted(cur.fetchall())
        with self._mem:
            self._handed.update(row[0] for row in rows)
        return [
            Item(line, decode(change), bool(doubt), None if hold is None else float(hold))
            for line, change, doubt, hold in rows
        ]

    # -- outcomes -----------------------------------------------------------------------

    def record(self, line: int, result: Result, status: str | None = None) -> None:
        """Buffer one outcome; :meth:`flush` when ``batch`` are buffered or ``interval``
        has passed since the last."""
        if self.keep(line, result, status):
            self.flush()

    def keep(self, line: int, result: Result, status: str | None = None) -> bool:
        """Buffer one outcome, never waiting on the database (an event loop calls it);
        ``True`` when a :meth:`flush` is due (``batch`` buffered, or ``interval``
        passed since the last)."""
        outcome = _outcome(result, status)
        version, error = outcome[2], outcome[3]
        if (version and "\x00" in version) or (error and "\x00" in error):
            # A server's message (or version) with a NUL character: PostgreSQL's text
            # cannot hold it, and the whole batch of outcomes would be refused.
            version, error = (v and v.replace("\x00", "\ufffd") for v in (version, error))
            outcome = (*outcome[:2], version, error, *outcome[4:])
        row = (*outcome, self.run_id, line, self.run_id)
        with self._mem:
            self._handed.discard(line)
            self._buffer.append(row)
            n = len(self._buffer)
        return n >= self.batch or time.monotonic() - self._last >= self.interval

    def flush(self) -> None:
        """Write the buffered outcomes in one statement; an outcome of an item no longer
        taken by this worker (its lease ended meanwhile) is discarded."""
        with self._db:
            self._flush()

    def _flush(self) -> None:
        with self._mem:
            self._last = time.monotonic()
            if not self._buffer:
                return
            rows, self._buffer = self._buffer, []
        columns = [list(c) for c in zip(*rows, strict=True)]
        columns[6] = [bool(u) for u in columns[6]]  # unconfirmed

        def write() -> None:
            # One statement for the whole batch (a row per outcome would be a round trip
            # each: a millisecond per outcome), atomic by itself: one round trip, where
            # a transaction of two would be four (a database a network away).
            self._conn.execute(
                "WITH u AS (UPDATE items SET status = v.status, http_status = v.http_status, "  # noqa: S608
                "version = v.version, error = v.error, attempts = items.attempts + v.attempts, "
                "writes = items.writes + v.writes, unconfirmed = v.unconfirmed, "
                "started = v.started, elapsed = v.elapsed, "
                "before = coalesce(v.before, items.before), after = v.after, "
                "current = v.current, planned = v.planned, batch = v.batch, "
                "position = v.position, run = v.run, doubt = false, "
                "hold = NULL FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], "
                "%s::int[], %s::int[], %s::bool[], %s::float8[], %s::float8[], %s::bytea[], "
                "%s::bytea[], %s::bytea[], %s::bytea[], %s::text[], %s::int[], %s::int[], "
                "%s::bigint[], %s::int[]) "
                "AS v(status, http_status, version, error, attempts, writes, unconfirmed, "
                "started, elapsed, before, after, current, planned, batch, position, run, "
                "line, worker) "
                "WHERE items.line = ANY(%s::bigint[]) AND items.line = v.line "
                "AND items.worker = v.worker AND items.status = 'taken' "
                "RETURNING items.system), "
                f"alive AS (UPDATE workers SET alive = {NOW} WHERE run = %s) "
                "UPDATE tally SET done = tally.done + n FROM "
                "(SELECT system, count(*) AS n FROM u GROUP BY system) c "
                "WHERE tally.system = c.system",
                # The lines again: the planner then looks them up by the primary key
                # (statistics from the load say no item is taken: a nested loop over
                # every item, seconds per batch, was its choice without them); never a
                # prepared (generic) plan, which cannot see the arrays' sizes.
                [*columns, columns[16], self.run_id],
                prepare=False,
            )

        try:
            self._again(write)
        except JournalError:
            with self._mem:
                self._buffer = rows + self._buffer  # not written: kept for another try
            raise

    # -- reading ------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._execute("SELECT count(*) FROM items").fetchone()[0])  # type: ignore[index]

    def rows(
        self, *, statuses: Iterable[str] | None = None, run: int | None = None
    ) -> Iterator[Outcome]:
        """Items in plan order (all, or those with one of ``statuses``, or of one run),
        read in pages so that memory stays flat."""
        self.flush()
        where, args = _where(statuses, run)
        select = f"SELECT {_COLUMNS} FROM items {where}"  # noqa: S608 - placeholders
        for row in self._pages(select, args):
            yield _row(row)

    def changes(self, statuses: Iterable[str]) -> Iterator[tuple[int, bytes]]:
        """``(line, change as JSON)`` of the items with one of ``statuses``, in plan order."""
        self.flush()
        where, args = _where(statuses, None)
        select = f"SELECT line, change FROM items {where} AND change IS NOT NULL"  # noqa: S608
        for line, change in self._pages(select, args):
            yield int(line), bytes(change)

    def _pages(self, select: str, args: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        """The rows of ``select`` (whose ``WHERE`` it continues, and whose first column
        is ``line``) in plan order, 5,000 at a time."""
        after = 0
        while True:
            page = self._execute(
                f"{select} AND line > %s ORDER BY line LIMIT 5000",
                (*args, after),
            ).fetchall()
            yield from page
            if len(page) < 5000:
                return
            after = page[-1][0]

    def counts(self, *, run: int | None = None) -> dict[tuple[str, str], int]:
        """``(system, status)`` -> items."""
        self.flush()
        where, args = ("WHERE run = %s", (run,)) if run is not None else ("", ())
        cur = self._execute(
            f"SELECT coalesce(system, '?'), status, count(*) FROM items {where} "  # noqa: S608
            "GROUP BY 1, 2",
            args,
        )
        return {(str(s), str(st)): int(n) for s, st, n in cur}

    def percentiles(self, qs: tuple[float, ...], *, run: int | None = None) -> list[float]:
        """Latency percentiles (seconds) of the outcomes with a timing."""
        self.flush()
        where = "WHERE elapsed IS NOT NULL" + (" AND run = %s" if run is not None else "")
        args: tuple[Any, ...] = (run,) if run is not None else ()
        n = int(self._execute(f"SELECT count(*) FROM items {where}", args).fetchone()[0])  # type: ignore[index]  # noqa: S608
        if n == 0:
            return []
        out = []
        for q in qs:
            k = min(n - 1, max(0, round(q * (n - 1))))
            row = self._execute(
                f"SELECT elapsed FROM items {where} ORDER BY elapsed LIMIT 1 OFFSET %s",  # noqa: S608
                (*args, k),
            ).fetchone()
            assert row is not None
            out.append(float(row[0]))
        return out

    def errors(self, *, run: int | None = None, limit: int = 10) -> list[tuple[str, str, str, int]]:
        """The commonest errors: ``(system, status, error, count)``."""
        self.flush()
        where = "WHERE error IS NOT NULL" + (" AND run = %s" if run is not None else "")
        args: tuple[Any, ...] = (run,) if run is not None else ()
        cur = self._execute(
            f"SELECT coalesce(system, '?'), status, error, count(*) FROM items {where} "  # noqa: S608
            "GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT %s",
            (*args, limit),
        )
        return [(str(a), str(b), str(c), int(d)) for a, b, c, d in cur]

    def status(self) -> Status:
        """Per system: pending, taken, done by status, live workers holding its items,
        outcomes per second over the last minute; and every worker."""
        self.flush()
        systems: dict[str, SystemStatus] = {}
        now = float(self._execute(f"SELECT {NOW}").fetchone()[0])  # type: ignore[index]
        cur = self._execute(
            "SELECT coalesce(system, '?'), status, count(*), "
            "count(*) FILTER (WHERE started + elapsed > %(t)s), "
            "min(started) FILTER (WHERE started + elapsed > %(t)s) FROM items GROUP BY 1, 2",
            {"t": now - 60.0},
        )
        _per_system(systems, cur, now)
        for system, n in self._execute(
            "SELECT system, count(DISTINCT worker) FROM items i JOIN workers w "  # noqa: S608
            "ON w.run = i.worker WHERE i.status = 'taken' AND NOT w.lost "
            f"AND w.lease_until >= {NOW} GROUP BY system"
        ):
            if system in systems:
                systems[system].workers = int(n)
        workers = []
        for run, name, started, alive, finished, live, taken in self._execute(
            f"SELECT w.run, w.name, w.started, w.alive, w.finished, "  # noqa: S608
            f"w.finished IS NULL AND NOT w.lost AND w.lease_until >= {NOW}, "
            "(SELECT count(*) FROM items i WHERE i.worker = w.run AND i.status = 'taken') "
            "FROM workers w ORDER BY w.run"
        ):
            workers.append(
                WorkerStatus(
                    run=run,
                    name=name,
                    started=started,
                    alive=alive,
                    finished=finished,
                    live=bool(live),
                    taken=int(taken),
                )
            )
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
        parts.append("status = ANY(%s)")
        args.append(sorted(set(statuses)))
    if run is not None:
        parts.append("run = %s")
        args.append(run)
    return ("WHERE " + " AND ".join(parts) if parts else "WHERE true"), tuple(args)
