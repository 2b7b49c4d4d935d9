"""The journal: a bulk run's work queue and its record.

A plan is loaded into the journal once (one item per valid line, status ``pending``); each
system's lane takes its own pending items in batches; every outcome goes back into the
item's row, with the touched fields before and after the change. The same row is the
results line (:class:`Outcome`), and what ``report``, ``status``, ``leftovers`` and
``undo`` read.

Statuses an item goes through: ``pending`` (loaded, not taken), ``taken`` (handed to its
lane: a run killed now leaves it so, and the next run reads the record before writing),
then an outcome: ``applied``, ``unchanged``, ``recovered`` (applied by a run that was
killed before it could write the outcome, found in place by the next run), ``conflict``,
``failed``, ``unsent``, ``cancelled``, ``planned`` (dry runs) or ``invalid`` (a plan line
that is not a change).

Two journals, one interface (:class:`JournalLike`), one test suite: the SQLite
:class:`Journal` is the default (one file, no server, one run at a time); the
PostgreSQL :class:`PgJournal` lets any number of workers on any number of machines share
one plan, and :class:`SharedLimits` holds each system's limits for all of them together
(and for a service's replicas). :func:`open_journal` picks one by what ``--journal``
names.
"""

from __future__ import annotations

from pathlib import Path

from ._base import (
    DONE,
    Item,
    JournalError,
    JournalLike,
    Outcome,
    Status,
    SystemStatus,
    WorkerStatus,
)
from ._limits import SharedLimits
from ._postgres import PgJournal, is_url
from ._sqlite import Journal

__all__ = [
    "DONE",
    "Item",
    "Journal",
    "JournalError",
    "JournalLike",
    "Outcome",
    "PgJournal",
    "SharedLimits",
    "Status",
    "SystemStatus",
    "WorkerStatus",
    "is_url",
    "open_journal",
]


def open_journal(
    where: str | Path,
    *,
    read_only: bool = False,
    batch: int = 500,
    interval: float = 1.0,
    lease: float = 15.0,
) -> JournalLike:
    """The journal ``where`` names: a PostgreSQL URL (``postgresql://...``) or a file.

    Args:
        where: ``--journal`` as given.
        read_only: Only look (``status``): a SQLite journal in use by a run can still be
            read. (A PostgreSQL journal is always shared.)
        batch: Outcomes buffered before a write.
        interval: Seconds after which buffered outcomes are written anyway.
        lease: PostgreSQL: seconds a worker's items stay its own without a heartbeat.
    """
    if is_url(str(where)):
        return PgJournal(str(where), batch=batch, interval=interval, lease=lease)
    return Journal(Path(where), read_only=read_only, batch=batch, interval=interval)
