"""What both journals share: the item and outcome types, the statuses, the interface."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, Self

import msgspec

from ..changes import Change, decode_trusted
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..flow import Result

__all__ = ["DONE", "OK", "Item", "JournalError", "JournalLike", "Outcome"]

#: Outcomes a resume keeps (``failed`` too, unless asked to retry them).
DONE = frozenset({"applied", "unchanged", "recovered", "conflict", "failed", "invalid"})
#: Outcomes with nothing left to do.
OK = frozenset({"applied", "unchanged", "recovered"})

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_decode_change = decode_trusted


class JournalError(ConfigError):
    """The journal cannot be used for this run (another plan's, in use, not a journal,
    or unreachable)."""


class Item(msgspec.Struct, frozen=True):
    """A pending item taken from the journal: its plan line and change. ``doubt``: an
    earlier run (or a worker that died) may have written it: the record is read before
    anything is sent. ``hold``: in a shared journal, for an item a lost worker had
    taken, seconds from the take until that worker's lease ended (negative: it ended
    that long ago): a write it had in flight may land until then plus the request
    timeout."""

    line: int
    change: Change
    doubt: bool = False
    hold: float | None = None


class Outcome(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One item's row in the journal, and its line in ``--results`` (runs and dry runs
    alike): the plan line, the change as the plan gave it, and what became of it.

    ``before`` / ``after``: the fields the change touches, as they were before the write
    and as it left them (where the record was read); ``current``: for a conflict, as the
    record holds them now. ``planned``: in a dry run, the write that would be sent.
    ``batch`` / ``position``: the request the change's write rode in with others, and its
    place there (see :attr:`Result.batch`).
    """

    line: int
    id: str | None = None
    system: str | None = None
    record: str | int | None = None
    status: str
    change: Any = None
    http_status: int | None = None
    version: str | None = None
    error: str | None = None
    attempts: int = 0
    writes: int = 0
    unconfirmed: bool = False
    started: float | None = None
    elapsed: float | None = None
    before: Any = None
    after: Any = None
    current: Any = None
    planned: Any = None
    batch: str | None = None
    position: int | None = None
    run: int | None = None


#: ``(line, change, error, system, key)``: a plan line as the loader gives it: a change
#: (and its record's canonical key), or ``None`` and why the line is invalid.
LoadItem = tuple[int, Change | None, str | None, str | None, str | None]


def _value(value: bytes | None) -> Any:
    return None if value is None else _decode(value)


def _json(value: Any) -> bytes | None:
    return None if value is None else _encode(value)


def _outcome(result: Result, status: str | None) -> tuple[Any, ...]:
    """The outcome columns of a result, in the order both journals write them."""
    return (
        status or result.status,
        result.http_status,
        result.version,
        result.error,
        result.attempts,
        result.writes,
        int(result.unconfirmed),
        result.started,
        result.elapsed,
        _json(result.before),
        _json(result.after),
        _json(result.current),
        _json(result.planned),
        result.batch,
        result.position,
    )


def _row(row: Any) -> Outcome:
    """An :class:`Outcome` from a row of the columns both journals select (``_COLUMNS``)."""
    (
        line, id_, system, record, change, status, http_status, version, error,
        attempts, writes, unconfirmed, started, elapsed, before, after, current,
        planned, batch, position, run,
    ) = row  # fmt: skip
    return Outcome(
        line=line,
        id=id_,
        system=system,
        record=record,
        status=status,
        change=_value(change),
        http_status=http_status,
        version=version,
        error=error,
        attempts=attempts,
        writes=writes,
        unconfirmed=bool(unconfirmed),
        started=started,
        elapsed=None if elapsed is None else round(elapsed, 6),
        before=_value(before),
        after=_value(after),
        current=_value(current),
        planned=_value(planned),
        batch=batch,
        position=position,
        run=run,
    )


#: The columns of an outcome row, in the order :func:`_row` reads them.
_COLUMNS = (
    "line, id, system, record, change, status, http_status, version, error, attempts, "
    "writes, unconfirmed, started, elapsed, before, after, current, planned, batch, "
    "position, run"
)


def _per_system(systems: dict[str, SystemStatus], rows: Any, now: float) -> None:
    """Fill ``systems`` from ``(system, status, count, recent, earliest)`` rows: counts
    by status, and outcomes per second over the last minute (or since the first of
    them, for a run younger than that)."""
    recent: dict[str, int] = {}
    since: dict[str, float] = {}
    for system, status, n, new, first in rows:
        s = systems.setdefault(system, SystemStatus(system=system))
        if status == "pending":
            s.pending = n
        elif status == "taken":
            s.taken = n
        else:
            s.done[status] = n
        if new:
            recent[system] = recent.get(system, 0) + int(new)
            since[system] = min(since.get(system, now), float(first))
    for system, n in recent.items():
        systems[system].rate = n / min(60.0, max(1.0, now - since[system]))


def _again(retry_failed: bool) -> str:
    """The finished statuses a new run does again (SQL list)."""
    return "'cancelled', 'unsent'" + (", 'failed'" if retry_failed else "")


class JournalLike(Protocol):
    """What a bulk run, ``status``, ``leftovers`` and ``undo`` use of a journal; the
    SQLite :class:`~patchassign.journal.Journal` and the PostgreSQL
    :class:`~patchassign.journal.PgJournal` both provide it."""

    #: Where the journal is, for messages (a path, or a URL without its password).
    where: str
    #: Seconds after which buffered outcomes are written anyway.
    interval: float
    #: This run's (or worker's) number; items record the run that last took them.
    run_id: int
    #: Whether many processes share the journal (workers, leases, shared limits).
    shared: bool

    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...
    def meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    @property
    def loaded(self) -> bool: ...
    def load(self, items: Iterable[LoadItem], *, plan: str, digest: Any) -> None: ...
    def start(self, *, retry_failed: bool = False) -> None: ...
    def finish(self, *, interrupted: bool) -> None: ...
    def last_alive(self) -> float | None: ...
    def doubtful(self) -> dict[str, int]: ...
    def runs(self) -> int: ...
    def todo(self, *, retry_failed: bool = False) -> int: ...
    def clear(self) -> None: ...
    def pending(self) -> dict[str, int]: ...
    def sample(self, system: str) -> Change | None: ...
    def take(self, system: str, after: int, limit: int) -> list[Item]: ...
    def record(self, line: int, result: Result, status: str | None = None) -> None: ...
    def flush(self) -> None: ...
    def count(self) -> int: ...
    def rows(
        self, *, statuses: Iterable[str] | None = None, run: int | None = None
    ) -> Iterator[Outcome]: ...
    def changes(self, statuses: Iterable[str]) -> Iterator[tuple[int, bytes]]: ...
    def counts(self, *, run: int | None = None) -> dict[tuple[str, str], int]: ...
    def percentiles(self, qs: tuple[float, ...], *, run: int | None = None) -> list[float]: ...
    def errors(
        self, *, run: int | None = None, limit: int = 10
    ) -> list[tuple[str, str, str, int]]: ...
    def status(self) -> Status: ...


class SystemStatus(msgspec.Struct, kw_only=True):
    """One system of a journal's plan, now: what ``patchassign status`` shows."""

    system: str
    pending: int = 0
    taken: int = 0
    done: dict[str, int] = msgspec.field(default_factory=dict)
    workers: int = 0
    rate: float = 0.0  # outcomes per second over the last minute


class WorkerStatus(msgspec.Struct, kw_only=True):
    """One run (SQLite) or worker (PostgreSQL) of a journal."""

    run: int
    name: str
    started: float
    alive: float | None
    finished: float | None
    live: bool
    taken: int = 0


class Status(msgspec.Struct, kw_only=True):
    """A journal's state now (``patchassign status``)."""

    where: str
    plan: str | None
    systems: list[SystemStatus]
    workers: list[WorkerStatus]
