"""Plans: files of changes, JSON Lines or CSV, read as a stream.

JSON Lines: one change per line (a UTF-8 byte order mark is accepted). CSV: a header row
names the plan members (``system,record,action,to,expect,...``), one change per row:

* an empty cell leaves its member out;
* ``to`` and ``expect`` hold several assignees separated by ``|`` (:data:`SEPARATOR`);
* ``record`` is an integer when the cell is one (a 64-bit integer), else text;
* ``merge``, ``patch`` and ``state`` hold JSON; ``guard`` is ``true`` or ``false``;
* UTF-8, with or without a byte order mark; quoting as in RFC 4180 (a quoted cell may
  hold commas, quotes doubled, line breaks).

Each line (row) is decoded once into a :mod:`~patchassign.changes` change; one that is not
yields an :class:`~patchassign.errors.InvalidChange` naming the line (the row, counting
the header as row 1, as a spreadsheet does) and the member (column) at fault, and reading
goes on, so one pass reports every bad line. Blank lines are skipped. A change without an
``id`` gets ``line-<n>``. Memory does not grow with the plan's length.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, cast

import msgspec

from ._json import why_not_json
from .changes import Change, _Change, convert_change, decode_change, with_id
from .errors import InvalidChange, PlanError

__all__ = ["MAX_LINE", "SEPARATOR", "PlanItem", "iter_plan", "plan_format", "read_plan"]

#: Longest plan line accepted, in bytes.
MAX_LINE = 1 << 20
#: Separates several assignees in one CSV cell (``to``, ``expect``).
SEPARATOR = "|"
_BOM = b"\xef\xbb\xbf"

PlanItem = tuple[int, Change | InvalidChange]
Format = Literal["jsonl", "csv"]

_MEMBERS = sorted(
    {"action"} | {name for kind in _Change.__subclasses__() for name in kind.__struct_fields__}
)
_LISTS = frozenset({"to", "expect"})
_JSON = frozenset({"merge", "patch", "state"})
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def iter_plan(lines: Iterable[bytes]) -> Iterator[PlanItem]:
    """``(line number, change or error)`` for each non-blank JSON line."""
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if number == 1 and line.startswith(_BOM):
            line = line[3:].strip()
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
            change = with_id(change, f"line-{number}")
        yield number, change


def plan_format(path: str | Path, given: str | None = None) -> Format:
    """The format of a plan: ``given``, else by extension (``.csv``; ``.jsonl``,
    ``.ndjson``, ``.json``), else by its first bytes (``{``: JSON Lines).

    Raises:
        PlanError: ``given`` is neither format.
        OSError: The file cannot be read.
    """
    if given is not None:
        if given not in ("jsonl", "csv"):
            raise PlanError(f"unknown plan format {given!r}: jsonl or csv")
        return given  # type: ignore[return-value]
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    head = _head_text(path)
    return "jsonl" if head.startswith("{") or not head else "csv"


def _head_text(path: str | Path) -> str:
    """The first 4 KiB of a file as text, leading blanks and any byte order mark left
    out: UTF-16 or UTF-32 where a byte order mark says so, else UTF-8 (what does not
    decode replaced)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    wide = _wide(head)
    if wide is not None:
        return head.decode(wide, "ignore").lstrip()  # ("ignore": the 4 KiB cut a character)
    return head.removeprefix(_BOM).decode("utf-8", "replace").lstrip()


def _refuse_csv(path: str | Path, first: bytes) -> None:
    """A JSON Lines plan whose first line is a CSV header: one clear error, not one per
    line."""
    text = first.removeprefix(_BOM).strip()
    if text.startswith(b"{"):
        return
    header = text.decode("utf-8", "replace")
    sep = next((d for d in (",", ";", "\t") if d in header), None)
    if sep is None:
        return
    names = {c.strip().strip('"').lower() for c in header.split(sep)}
    if {"system", "record"} <= names or len(names & set(_MEMBERS)) >= 2:
        fix = (
            "leave out --format jsonl (a .csv file is read as CSV)"
            if str(path).lower().endswith(".csv")
            else "name it .csv or pass --format csv"
        )
        raise PlanError(
            f"{path} looks like CSV (its first line is a header: "
            f"{text[:80].decode('utf-8', 'replace')}), not JSON Lines: {fix}"
        )


class _Hashing(io.RawIOBase):
    """A binary reader that feeds what it reads to a ``hashlib`` object."""

    def __init__(self, raw: BinaryIO, digest: Any) -> None:
        self._raw = raw
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self._digest.update(data)
        return n


def read_plan(
    source: str | Path | BinaryIO, *, format: str | None = None, digest: Any = None
) -> Iterator[PlanItem]:
    """Stream a plan (a path, or a binary file object).

    Args:
        source: The plan.
        format: ``"jsonl"`` or ``"csv"``; by default from the file (see :func:`plan_format`;
            a file object is JSON Lines unless told).
        digest: A ``hashlib`` object to feed with the file's bytes as they are read.

    Raises:
        PlanError: The file is not in the format given (CSV read as JSON Lines), or a
            CSV header names no plan member.
        OSError: The file cannot be opened or read.
    """
    if isinstance(source, str | Path):
        kind = plan_format(source, format)
        with open(source, "rb") as f:
            yield from _read(f, kind, str(source), digest)
    else:
        yield from _read(source, format or "jsonl", "the plan", digest)


_WIDE = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


def _wide(head: bytes) -> str | None:
    """The encoding a byte order mark says, when it is UTF-16 or UTF-32."""
    for bom, encoding in _WIDE.items():
        if head.startswith(bom):
            return encoding
    return None


def _refuse_wide(name: str, head: bytes) -> None:
    """A JSON Lines plan saved as UTF-16 or UTF-32 (JSON is UTF-8), or any plan with
    zero bytes and no byte order mark: one clear error instead of every line refused
    for its zero bytes."""
    encoding = _wide(head)
    if encoding is not None:
        raise PlanError(f"{name} is {encoding} text: a JSON Lines plan is UTF-8; save it as UTF-8")
    if b"\x00" in head[:64]:
        raise PlanError(
            f"{name} has zero bytes in its first line: a plan is UTF-8 text (is it UTF-16, "
            "or not text at all?)"
        )


def _read(raw: BinaryIO, kind: str, name: str, digest: Any) -> Iterator[PlanItem]:
    stream: IO[bytes] = raw
    if digest is not None:
        stream = io.BufferedReader(_Hashing(raw, digest), 1 << 16)
    if kind == "csv":
        # To peek at its first bytes (an io.BytesIO cannot), in a buffer let go of at the
        # end: the caller closes its file.
        own = not isinstance(stream, io.BufferedReader)
        buffered = io.BufferedReader(cast("io.RawIOBase", stream)) if own else stream
        try:
            head = buffered.peek(64)[:64]  # type: ignore[attr-defined]
            encoding = _wide(head)
            if encoding is None:
                _refuse_wide(name, head)
            yield from _read_csv(buffered, name, encoding)
        finally:
            if own:
                buffered.detach()  # type: ignore[attr-defined]
        return
    first = stream.readline()
    _refuse_wide(name, first)
    _refuse_csv(name, first)

    def lines() -> Iterator[bytes]:
        yield first
        yield from stream

    yield from iter_plan(lines())


def _read_csv(raw: IO[bytes], name: str, wide: str | None = None) -> Iterator[PlanItem]:
    """Rows of a CSV plan: UTF-8, or UTF-16/UTF-32 with a byte order mark (Excel's
    "Unicode text", tab-separated), which is decoded strictly."""
    if wide is None:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
    else:
        text = io.TextIOWrapper(raw, encoding=wide, newline="")
    try:
        header = text.readline()
        first = 1
        said = _SEP_LINE.fullmatch(header.rstrip("\r\n"))
        if said is not None:
            # Excel's "sep=;" line: the delimiter, said in the file; the header follows.
            delimiter = said[1]
            header = text.readline()
            first = 2
        else:
            delimiter = _delimiter(header)
        reader = csv.reader(itertools.chain([header], text), delimiter=delimiter, strict=True)
        yield from _rows(reader, name, first)
    except UnicodeDecodeError as e:  # (UTF-8 is read with surrogateescape: only wide text)
        raise PlanError(f"{name} is not valid {wide} text: {e.reason}") from None
    finally:
        text.detach()  # the caller closes the file


#: The first line Excel writes (and reads) to name a CSV file's delimiter.
_SEP_LINE = re.compile(r"(?i)sep=([^\r\n\"])")


def _delimiter(header: str) -> str:
    """``,`` unless the header is one cell that ``;`` or a tab splits into plan members
    only (and empty cells: trailing delimiters): a spreadsheet saved with its locale's
    list separator (``;`` where the decimal mark is a comma), or tab-separated text."""
    if "," not in header:
        for d in (";", "\t"):
            cells = [c.strip().strip('"').strip().lower() for c in header.split(d)]
            named = [c for c in cells if c]
            if len(named) > 1 and all(c in _MEMBERS for c in named):
                return d
    return ","


def _rows(reader: Any, name: str, first: int = 1) -> Iterator[PlanItem]:
    """The changes of a CSV plan whose header is row ``first`` of the file."""
    where = f"{name}: row {first} (the header)"
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise PlanError(f"{where}: not CSV: {e}") from None
    if header is None:
        return
    columns = [c.strip().lower() for c in header]
    # A column without a name (a trailing delimiter: spreadsheets write them) is allowed
    # as long as it stays empty (see _row).
    unknown = [c for c in columns if c and c not in _MEMBERS]
    if unknown or not any(columns):
        raise PlanError(
            f"{where}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"a plan's columns are its members: {', '.join(_MEMBERS)}"
        )
    seen: set[str] = set()
    for c in columns:
        if c in seen and c:
            raise PlanError(f"{where}: column {c!r} appears twice")
        seen.add(c)
    missing = [c for c in ("system", "record", "action") if c not in seen]
    if missing:
        raise PlanError(
            f"{where}: no {' or '.join(map(repr, missing))} column; "
            "every change needs its system, record and action"
        )
    row_number = first
    while True:
        row_number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield row_number, InvalidChange(f"not CSV: {e}", line=row_number, csv=True)
            return  # the reader cannot find the next row after a broken quote
        if not any(cell.strip() for cell in row):
            continue
        yield row_number, _row(columns, row, row_number)


def _row(columns: list[str], row: list[str], number: int) -> Change | InvalidChange:
    if len(row) > len(columns):
        return InvalidChange(
            f"{len(row)} cells, but the header names {len(columns)} columns",
            line=number,
            csv=True,
        )
    obj: dict[str, Any] = {}
    for i, (column, cell) in enumerate(zip(columns, row, strict=False)):
        value = cell.strip()
        if not value:
            continue
        if not column:
            return InvalidChange(
                f"a value ({value[:40]!r}) in column {i + 1}, which the header leaves "
                "without a name",
                line=number,
                csv=True,
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return InvalidChange("not valid UTF-8", line=number, field=column, csv=True)
        if column in _LISTS and SEPARATOR in value:
            obj[column] = [part.strip() for part in value.split(SEPARATOR)]
        elif column in _JSON:
            try:
                obj[column] = msgspec.json.decode(value)
            except msgspec.DecodeError as e:
                return InvalidChange(
                    f"not JSON: {why_not_json(value, e)}", line=number, field=column, csv=True
                )
        elif column == "guard":
            flag = _BOOLS.get(value.lower())
            if flag is None:
                return InvalidChange(
                    f"expected true or false, got {value!r}", line=number, field=column
                )
            obj[column] = flag
        elif column == "record" and _is_int(value):
            obj[column] = int(value)
        else:
            obj[column] = value
    try:
        change = convert_change(obj, line=number)
    except InvalidChange as e:
        return InvalidChange(e.reason, line=number, field=e.field, system=e.system, csv=True)
    if change.id is None:
        change = with_id(change, f"line-{number}")
    return change


def _is_int(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return digits.isascii() and digits.isdigit() and -(2**63) <= int(text) < 2**63
