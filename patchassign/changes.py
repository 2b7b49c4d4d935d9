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
import numbers
import re
import threading
from typing import Annotated, Any, Literal

import msgspec

from ._json import why_not_json
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
_SYSTEM_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
SystemName = Annotated[str, msgspec.Meta(pattern=f"^{_SYSTEM_PATTERN}$")]
_SYSTEM_NAME = re.compile(_SYSTEM_PATTERN)

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

    def __post_init__(self) -> None:
        if not getattr(_trusted, "on", False):
            _check_built(self)

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
        super().__post_init__()
        try:
            JsonPatch(self.patch, case_insensitive=True)
        except InvalidPatch as e:
            raise InvalidChange(str(e), field="patch") from None


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


def _scalar(value: Any) -> Any:
    """A numpy scalar (what a column of a data frame gives) as Python's own value."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def _numbers(value: Any) -> Any:
    """Other libraries' scalars and numbers as JSON's: they become Python's own when the
    change is built."""
    plain = _scalar(value)
    if type(plain) in (bool, int, float, str):
        return plain
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    kind = type(value)
    raise TypeError(f"{kind.__module__}.{kind.__qualname__} is not a JSON type")


_encode = msgspec.json.Encoder(enc_hook=_numbers).encode
#: Set in a thread while it builds changes that need no check of their own: decoded from
#: JSON (which can only hold what decoding checks), or copies of checked ones.
_trusted = threading.local()
#: Per change type, a decoder into a twin of it without ``__post_init__`` (checking a
#: change by decoding it into its own type would check it again, for ever).
_twins: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_PLAIN = (str, int, bool, type(None))


def _twin(kind: type[Any]) -> msgspec.json.Decoder[Any]:
    fields = [
        (f.name, f.type) if f.required else (f.name, f.type, f.default)
        for f in msgspec.structs.fields(kind)
    ]
    config = kind.__struct_config__
    twin = msgspec.defstruct(
        kind.__name__,
        fields,
        kw_only=True,
        forbid_unknown_fields=True,
        tag_field=config.tag_field,
        tag=config.tag,
    )
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(twin)
    _twins[kind] = decoder
    return decoder


def _check_built(change: _Change) -> None:
    """Check a change built in Python as decoding checks a plan line: msgspec does not
    check a struct's fields when it is built, and a change with ``to=None``, a NaN or a
    set in it would otherwise fail deep in an adapter, or reach a server as ``null``.
    Tuples become lists and other libraries' numbers (numpy's) Python's own, as JSON
    carries them; a value JSON cannot carry as it is (NaN, infinity, bytes, a date, a
    set, a non-string key) is refused, naming the member."""
    kind = type(change)
    twin = _twins.get(kind) or _twin(kind)
    try:
        try:
            data = _encode(change)
        except (TypeError, ValueError, OverflowError) as e:
            field = next(
                (f for f in kind.__struct_fields__ if not _encodes(getattr(change, f))), None
            )
            raise InvalidChange(f"not a JSON value: {e}", field=field) from None
        try:
            carried = twin.decode(data)
        except msgspec.ValidationError as e:
            reason, field = _split(str(e))
            raise InvalidChange(reason, field=field) from None
        for name in kind.__struct_fields__:
            mine = getattr(change, name)
            if type(mine) in _PLAIN:
                continue  # the twin took it as it is
            theirs = getattr(carried, name)
            if not _carried(mine, theirs):
                raise InvalidChange(
                    f"{_what(mine)} is not a JSON value (NaN, infinity, bytes, dates, sets "
                    "and non-string keys are not): convert it first",
                    field=name,
                )
            # JSON's own types from here on (a tuple is a list; nothing shared with the
            # caller's containers).
            msgspec.structs.force_setattr(change, name, theirs)
    except (RecursionError, msgspec.DecodeError):
        raise InvalidChange(str(LimitExceeded("the change"))) from None


def _encodes(value: Any) -> bool:
    try:
        _encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return False
    return True


def _carried(mine: Any, theirs: Any) -> bool:
    """Whether JSON carried ``mine`` as it is (``theirs`` is what came back)."""
    mine = _scalar(mine)
    if theirs is None or type(theirs) is bool:
        return mine is theirs
    if type(theirs) is str:
        return isinstance(mine, str) and mine == theirs
    if type(theirs) is int:
        return type(mine) is not bool and isinstance(mine, numbers.Integral) and int(mine) == theirs
    if type(theirs) is float:  # a Fraction(1, 3) has no float that is it: refused
        return isinstance(mine, numbers.Real) and float(mine) == theirs and theirs == mine
    if type(theirs) is list:
        return (
            isinstance(mine, list | tuple)
            and len(mine) == len(theirs)
            and all(_carried(a, b) for a, b in zip(mine, theirs, strict=True))
        )
    if type(theirs) is dict:
        return (
            isinstance(mine, dict)
            and len(mine) == len(theirs)
            and all(
                isinstance(k, str) and k in theirs and _carried(v, theirs[k])
                for k, v in mine.items()
            )
        )
    return False


def _what(value: Any) -> str:
    """What is in ``value`` that JSON cannot carry, for the message."""
    if isinstance(value, dict):
        bad = next((k for k in value if not isinstance(k, str)), None)
        if bad is not None:
            return f"the key {_short(bad)}"
        return next((_what(v) for v in value.values() if not _encodes_as_is(v)), "a member")
    if isinstance(value, list | tuple):
        return next((_what(v) for v in value if not _encodes_as_is(v)), "an item")
    return _short(value)


def _short(value: Any) -> str:
    text = repr(_scalar(value))
    return text if len(text) <= 60 else f"{text[:57]}..."


def _encodes_as_is(value: Any) -> bool:
    try:
        return _carried(value, msgspec.json.decode(_encode(value)))
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.DecodeError):
        return False


def decode_trusted(data: bytes | str) -> Change:
    """A change from JSON text, checked by msgspec's decoding only (JSON cannot hold
    what the check of changes built in Python looks for); raises msgspec's errors."""
    _trusted.on = True
    try:
        return _decoder.decode(data)
    finally:
        _trusted.on = False


def with_id(change: Change, id: str) -> Change:
    """``change`` (checked) with the id ``id`` (a plan's ``line-<n>``), not checked again."""
    _trusted.on = True
    try:
        return msgspec.structs.replace(change, id=id)
    finally:
        _trusted.on = False


def decode_change(data: bytes | str, *, line: int | None = None) -> Change:
    """One change from JSON text (a plan line).

    Raises:
        InvalidChange: Not JSON, an unknown action or system, a missing or mistyped
            member; the error names the line and the member.
    """
    try:
        change: Change = decode_trusted(data)
    except msgspec.ValidationError as e:
        if isinstance(e.__cause__, InvalidChange):  # from a change type's own check
            raise InvalidChange(e.__cause__.reason, line=line, field=e.__cause__.field) from None
        reason, field = _split(str(e))
        if reason == "Expected `object`, got `array`":
            reason += (
                " (a plan is JSON Lines: one change object per line, not a JSON array; "
                "jq -c '.[]' turns an array into lines)"
            )
        elif field in ("action", "system") or reason.startswith(_MISSING):
            try:
                loose = msgspec.json.decode(data)
            except (msgspec.DecodeError, RecursionError):
                loose = None
            reason = _hint(reason, field, loose)
        raise InvalidChange(reason, line=line, field=field) from None
    except msgspec.DecodeError as e:
        raise InvalidChange(f"not valid JSON: {why_not_json(data, e)}", line=line) from None
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
        if isinstance(e.__cause__, InvalidChange):  # from a change type's own check
            raise InvalidChange(e.__cause__.reason, line=line, field=e.__cause__.field) from None
        reason, field = _split(str(e))
        raise InvalidChange(_hint(reason, field, obj), line=line, field=field) from None
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


#: The actions a change may name (its ``action`` member).
_ACTIONS = ("assign", "unassign", "delegate", "move", "merge", "patch", "set")


_MISSING = "Object missing required field"


def _hint(reason: str, field: str | None, obj: Any) -> str:
    """msgspec's reason for a bad ``action`` or ``system``, with what would be right: a
    spreadsheet's ``Assign`` or ``PERSCOM`` is the lowercase name."""
    given = obj.get(field) if isinstance(obj, dict) and field is not None else None
    if reason.startswith(_MISSING) and field is not None:
        action = obj.get("action") if isinstance(obj, dict) else None
        said = f"missing required member {field!r}"
        if field == "action":
            return f"{said} (actions: {', '.join(_ACTIONS)})"
        if field == "to" and action == "assign":
            return f"{said}: whom the record goes to ('unassign' takes an assignment away)"
        if field not in ("system", "record") and isinstance(action, str) and action in _ACTIONS:
            return f"{said}: the action {action!r} needs it"
        return said
    if field == "action" and reason.startswith("Invalid value"):
        if isinstance(given, str) and given.strip().lower() in _ACTIONS:
            return f"{reason} (actions are lowercase: {given.strip().lower()!r})"
        return f"{reason} (actions: {', '.join(_ACTIONS)})"
    if field == "system" and "matching regex" in reason:
        said = "a system name is lowercase letters, digits, '-' and '_', from a letter"
        if isinstance(given, str) and _SYSTEM_NAME.fullmatch(given.strip().lower()):
            return f"{reason} ({said}: {given.strip().lower()!r}, not {given!r})"
        return f"{reason} ({said}; got {given!r})" if isinstance(given, str) else reason
    return reason


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
