"""The journal: a bulk run's work queue and its record.

A plan is loaded into the journal once (one item per valid line, status ``pending``); each
system's lane takes its own pending items in batches; every outcome goes back into the
item's row, with the touched fields before and after the change. The same row is the
results line (:class:`Outcome`), and what ``report``, ``leftovers`` and ``undo`` read.

Statuses an item goes through: ``pending`` (loaded, not taken), ``taken`` (handed to its
lane: a run killed now leaves it so, and the next run reads the record before writing),
then an outcome: ``applied``, ``unchanged``, ``recovered`` (applied by a run that was
killed before it could write the outcome, found in place by the next run), ``conflict``,
``failed``, ``unsent``, ``cancelled``, ``planned`` (dry runs) or ``invalid`` (a plan line
that is not a change).

The SQLite journal (:class:`Journal`) is the default: one file, no server.
"""

from __future__ import annotations

from ._sqlite import (
    DONE,
    Item,
    Journal,
    JournalError,
    Outcome,
)

__all__ = ["DONE", "Item", "Journal", "JournalError", "Outcome"]
