"""What users do to assignments: the typed change model, also the plan-line format.

A change names its target system and record and says what to do::

    {"system": "kintone", "record": "1:7", "action": "assign", "to": "eve", "expect": "ada"}

Actions: ``assign`` (to a user or team; reassigns), ``unassign``, ``delegate`` (with a
reason), ``move`` (a person, by a new assignment record), and general field updates as a ``merge`` patch, a JSON ``patch``, or a desired
``set`` of field values diffed against the current record. Which system supports which
action is checked by its adapter (``patchassign.systems``). Decoding is one msgspec pass:
a bad line fails early with the member at fault.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import msgspec

from .errors import InvalidChange, InvalidPatch, LimitExceeded
from .patch import JsonPatch

__all__ = [
    "Assign",
    "Change",
    "Delegate",
    "Merge",
    "MovePerson",
    "Patch",
    "SetFields",
    "Unassign",
    "convert_change",
    "decode_change",
]

#: A system's name: a built-in system's (``patchassign.systems.SYSTEM_NAMES``), or the
#: name of an adapter of your own (lower case letters, digits, ``-`` and ``_``). Whether a
#: system is configured is checked when a plan is validated against a configuration.
SystemName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
#: Integer record ids are 64-bit, as the docs promise for every number in a plan.
_IntId = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
#: One assignee, or several (Kintone assigns lists of users).
Assignees = _Text | Annotated[list[_Text], msgspec.Meta(max_length=1000)]


class _Change(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="action",
    omit_defaults=True,
):
    system: SystemName
    #: The record: an integer id, a string id, or ``"<app>:<id>"`` for Kintone.
    record: _Id | _IntId
    #: A caller's id for the change; plans default it to ``"line-<n>"``.
    id: _Id | None = None

    @property
    def key(self) -> str:
        """``system/record``: what a change is about, for logs and results."""
        return f"{self.system}/{self.record}"


class Assign(_Change, tag="assign", frozen=True):
    """Assign (or reassign) the record to a user or team.

    ``expect``: who should hold it now; if someone else does, the change is a conflict,
    not forced. If it is already assigned to ``to``, the change is ``unchanged``.
    """

    to: Assignees
    to_type: Literal["user", "team"] = "user"
    expect: Assignees | None = None
    comment: Annotated[str, msgspec.Meta(max_length=65_535)] | None = None
    by: _Text | None = None


class Unassign(_Change, tag="unassign", frozen=True):
    """Remove the record's assignment."""

    expect: Assignees | None = None
    comment: Annotated[str, msgspec.Meta(max_length=65_535)] | None = None
    by: _Text | None = None


class Delegate(_Change, tag="delegate", frozen=True):
    """Hand the assignment on to another person (Findable), with a reason."""

    to: _Text
    reason: Annotated[str, msgspec.Meta(max_length=65_535)] | None = None
    expect: _Text | None = None


class MovePerson(_Change, tag="move", frozen=True):
    """Move a person (the record is their user id) by creating a new assignment record
    (PERSCOM): ``to`` holds its fields (``unit_id``, ``position_id``, ``status_id``,
    ``specialty_id``, and ``text``, ``document_id``, ``author_id``...). Not idempotent:
    sent at most once. ``expect``: the placement the person should hold now.
    """

    to: dict[str, Any]
    expect: dict[str, Any] | None = None


class Merge(_Change, tag="merge", frozen=True):
    """Update fields with an RFC 7396 merge patch. ``guard`` pins old values (SuperOffice)."""

    merge: dict[str, Any]
    guard: bool = False


class Patch(_Change, tag="patch", frozen=True):
    """Update fields with an RFC 6902 JSON Patch (validated when decoded)."""

    patch: list[dict[str, Any]]
    guard: bool = False

    def __post_init__(self) -> None:
        try:
            JsonPatch(self.patch, case_insensitive=True)
        except InvalidPatch as e:
            raise ValueError(str(e)) from None


class SetFields(_Change, tag="set", frozen=True):
    """Make the named fields equal these values (diffed against the current record)."""

    state: dict[str, Any]
    guard: bool = False


Change = Assign | Unassign | Delegate | MovePerson | Merge | Patch | SetFields

_decoder = msgspec.json.Decoder(Change)
_MEMBERS = tuple(
    f'"{name}"'.encode()
    for name in sorted(
        {"action"}
        | {
            f
            for kind in (Assign, Unassign, Delegate, MovePerson, Merge, Patch, SetFields)
            for f in kind.__struct_fields__
        }
    )
)


def decode_change(data: bytes | str, *, line: int | None = None) -> Change:
    """One change from JSON text (a plan line).

    Raises:
        InvalidChange: Not JSON, an unknown action or system, a missing or mistyped
            member; the error names the line and the member.
    """
    try:
        change: Change = _decoder.decode(data)
    except msgspec.ValidationError as e:
        reason, field = _split(str(e))
        if reason == "Expected `object`, got `array`":
            reason += (
                " (a plan is JSON Lines: one change object per line, not a JSON array; "
                "jq -c '.[]' turns an array into lines)"
            )
        raise InvalidChange(reason, line=line, field=field) from None
    except msgspec.DecodeError as e:
        raise InvalidChange(f"not valid JSON: {e}", line=line) from None
    except UnicodeDecodeError:
        raise InvalidChange("not valid JSON: the line is not valid UTF-8", line=line) from None
    except RecursionError:
        raise InvalidChange(str(LimitExceeded("the line")), line=line) from None
    duplicate = _duplicate_member(data if isinstance(data, bytes) else data.encode())
    if duplicate is not None:
        raise InvalidChange(
            f"member {duplicate!r} appears twice in one object (ambiguous: refused)",
            line=line,
            field=duplicate,
        )
    _no_nul(change, line)
    return change


def convert_change(obj: Any, *, line: int | None = None) -> Change:
    """One change from a Python mapping (same rules as :func:`decode_change`)."""
    try:
        change: Change = msgspec.convert(obj, Change)
    except msgspec.ValidationError as e:
        reason, field = _split(str(e))
        raise InvalidChange(reason, line=line, field=field) from None
    except RecursionError:
        raise InvalidChange(str(LimitExceeded("the change")), line=line) from None
    _no_nul(change, line)
    return change


def _no_nul(change: Change, line: int | None) -> None:
    """A record id or change id with a NUL character (``\\u0000``) is refused: no
    system's ids hold one, and a PostgreSQL journal cannot store it."""
    for field in ("record", "id"):
        value = getattr(change, field)
        if isinstance(value, str) and "\x00" in value:
            raise InvalidChange(
                "holds a NUL character (\\u0000): no system's ids do", line=line, field=field
            )


class _Duplicate(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return out


def _duplicate_member(data: bytes) -> str | None:
    """The first member name that appears twice in one object of ``data``, if any.

    msgspec (like JavaScript and Python's ``json``) keeps the last of duplicate members;
    a plan line that says ``"system"`` twice is ambiguous to its reviewer, so it is
    refused. Lines without nested objects whose member names each appear once (nearly
    all) are cleared by a byte count; others are checked exactly.
    """
    if data.count(b"{") <= 1 and all(data.count(name) <= 1 for name in _MEMBERS):
        return None
    try:
        json.loads(data, object_pairs_hook=_pairs)
    except _Duplicate as e:
        return str(e.args[0])
    except (ValueError, RecursionError):
        return None  # msgspec read it; the stdlib's stricter corners do not matter here
    return None


def _split(message: str) -> tuple[str, str | None]:
    """msgspec says "Expected `int`, got `str` - at `$.record`": reason and member."""
    reason, sep, where = message.rpartition(" - at `$")
    if sep:
        field = where.rstrip("`").lstrip(".")
        return reason, field or None
    if message.startswith("invalid patch"):
        return message, "patch"
    named = re.search(r"field `([^`]+)`", message)
    return message, named.group(1) if named else None
