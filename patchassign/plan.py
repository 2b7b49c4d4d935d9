"""Plans: JSON Lines files of changes, one per line, read as a stream.

Each line is decoded with msgspec into a :mod:`~patchassign.changes` change; a line that is
not one yields an :class:`~patchassign.errors.InvalidChange` naming the line number and
the member at fault, and reading goes on (so one pass reports every bad line). Blank lines
are skipped. A change without an ``id`` gets ``line-<n>``. Memory does not grow with the
plan's length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from .changes import Change, decode_change
from .errors import InvalidChange

__all__ = ["MAX_LINE", "PlanItem", "iter_plan", "read_plan"]

#: Longest plan line accepted, in bytes.
MAX_LINE = 1 << 20

PlanItem = tuple[int, Change | InvalidChange]


def iter_plan(lines: Iterable[bytes]) -> Iterator[PlanItem]:
    """``(line number, change or error)`` for each non-blank line."""
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) > MAX_LINE:
            yield number, InvalidChange(f"line is longer than {MAX_LINE} bytes", line=number)
            continue
        try:
            change = decode_change(line, line=number)
        except InvalidChange as e:
            yield number, e
            continue
        if change.id is None:
            change = msgspec.structs.replace(change, id=f"line-{number}")
        yield number, change


def read_plan(source: str | Path | BinaryIO) -> Iterator[PlanItem]:
    """Stream a plan file (a path, or a binary file object).

    Raises:
        OSError: The file cannot be opened or read.
    """
    if isinstance(source, str | Path):
        with open(source, "rb") as f:
            yield from iter_plan(f)
    else:
        yield from iter_plan(source)
