"""Errors raised by patchassign.

Every error carries what a user needs to act on it as keyword-only attributes, and a
message that names the operation (by index, op and path) when there is one. Every error
the package raises is a :class:`PatchassignError`::

    PatchassignError
    PatchError                  anything wrong with a patch or with applying it
    ├── InvalidPatch            the patch document is malformed (also a ValueError)
    │   └── InvalidPointer      a JSON Pointer is malformed
    ├── PatchConflict           a valid patch does not fit the document: a path is
    │                           missing, a ``test`` failed, a key is ambiguous
    ├── NotRepresentable        a change has no form in the patch format asked for
    │                           (a member set to null in a merge patch, ``move``...)
    └── LimitExceeded           a document nests deeper than supported (a ValueError)

    InvalidChange               an assignment change (a plan line) is malformed or not
                                supported by its system (also a ValueError)
    ConfigError                 a system's configuration is unusable: bad URL, a header
                                value with CR/LF, a missing credential (also a ValueError)
    └── JournalError            a journal cannot be used for this run (another plan, locked)
    InvalidPlan                 a plan has invalid lines and the run was not told to skip
                                them (nothing was sent)
    PlanError                   a plan file cannot be read as a plan at all (CSV given as
                                JSON Lines, a CSV header naming no plan members...)

    TransportError              a request got no answer; ``sent``: it may have reached
                                the server (then the record is read before any resend)
    ├── ConnectError            no connection could be made: nothing was sent (refused,
    │   │                       unreachable, connect timeout: an outage)
    │   └── SetupError          the host name does not resolve, or TLS failed (handshake,
    │                           certificate): a configuration error, not an outage
    ├── ResponseTimeout         the request went out; no answer in time
    └── ConnectionLost          the connection broke after the request went out

Lines without a parent above are direct children of :class:`PatchassignError`.

``InvalidPatch`` is permanent: sending the same patch again cannot succeed.
``PatchConflict`` depends on the document: re-reading the record and re-diffing may
succeed.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

__all__ = [
    "ConfigError",
    "ConflictReason",
    "ConnectError",
    "ConnectionLost",
    "InvalidChange",
    "InvalidPatch",
    "InvalidPointer",
    "LimitExceeded",
    "NotRepresentable",
    "PatchConflict",
    "PatchError",
    "PatchassignError",
    "PlanError",
    "ResponseTimeout",
    "SetupError",
    "TransportError",
]


class _Missing:
    """Sentinel type for "no value" where ``None`` is a valid JSON value (``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

ConflictReason = Literal[
    "missing",  # the path (or a parent of it) does not exist
    "test-failed",  # a test operation compared unequal
    "ambiguous",  # case-insensitive lookup matched two keys
    "not-a-container",  # the path traverses a string, number, boolean or null
    "bad-index",  # an array index that is malformed or out of range
]


def _where(index: int | None, op: str | None, path: str | None) -> str:
    if index is None:
        return ""
    parts = [f"operation {index}"]
    if op is not None:
        parts.append(f"({op} {path})" if path is not None else f"({op})")
    return " ".join(parts) + ": "


class PatchassignError(Exception):
    """The root of every error patchassign raises."""


class PatchError(PatchassignError):
    """Base class of every error about a patch document or its application."""


class InvalidPatch(PatchError, ValueError):
    """The patch document is malformed; it would fail on any document.

    Attributes:
        index: Position of the offending operation in the patch, or ``None`` when the
            document as a whole is malformed (not JSON, not an array).
        op: The operation's ``op`` member, when it could be read.
        field: The member at fault (``"op"``, ``"path"``, ``"from"``, ``"value"``), if any.
        reason: What is wrong, without the location prefix.
    """

    def __init__(
        self,
        reason: str,
        *,
        index: int | None = None,
        op: str | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.index = index
        self.op = op
        self.field = field
        prefix = _where(index, op, None)
        if field is not None and index is not None:
            prefix = prefix[:-2] + f", member {field!r}: "
        super().__init__(f"invalid patch: {prefix}{reason}")


class InvalidPointer(InvalidPatch):
    """A JSON Pointer string is malformed (bad ``~`` escape, missing leading ``/``).

    Attributes:
        pointer: The offending pointer text.
        problem: What is wrong with it.
    """

    def __init__(
        self,
        reason: str,
        *,
        pointer: str,
        index: int | None = None,
        op: str | None = None,
        field: str | None = None,
    ) -> None:
        self.pointer = pointer
        self.problem = reason
        super().__init__(f"{reason}: {pointer!r}", index=index, op=op, field=field)


class PatchConflict(PatchError):
    """A valid patch does not fit the document it is applied to.

    Attributes:
        reason: A machine-readable code: ``"missing"``, ``"test-failed"``,
            ``"ambiguous"``, ``"not-a-container"`` or ``"bad-index"``.
        index: Position of the failing operation in the patch (``None`` outside a patch,
            as in ``Pointer.resolve``).
        op: The failing operation's ``op``.
        path: The pointer that failed (``from`` for the source of ``move``/``copy``).
        expected: For ``test``: the value the patch expected; otherwise ``MISSING``.
        actual: For ``test``: the value found in the document; otherwise ``MISSING``.
        detail: The human-readable explanation, without the location prefix.
    """

    def __init__(
        self,
        detail: str,
        *,
        reason: ConflictReason,
        index: int | None = None,
        op: str | None = None,
        path: str | None = None,
        expected: Any = MISSING,
        actual: Any = MISSING,
    ) -> None:
        self.detail = detail
        self.reason: ConflictReason = reason
        self.index = index
        self.op = op
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"{_where(index, op, path)}{detail}")


class NotRepresentable(PatchError):
    """A change cannot be expressed in the patch format asked for.

    RFC 7396 merge patches cannot set an object member to ``null`` (null means delete),
    address array elements, or say ``move``, ``copy`` or ``test``.

    Attributes:
        path: The location of the change, as pointer text.
        index: For a JSON Patch being converted: the operation's position, else ``None``.
        op: For a JSON Patch being converted: the operation's ``op``, else ``None``.
    """

    def __init__(
        self, detail: str, *, path: str, index: int | None = None, op: str | None = None
    ) -> None:
        self.detail = detail
        self.path = path
        self.index = index
        self.op = op
        where = (
            _where(index, op, path)
            if index is not None
            else f"at {path or 'the document root'!r}: "
        )
        super().__init__(f"{where}{detail}")


class LimitExceeded(PatchError, ValueError):
    """A document is beyond what patchassign handles: nested too deeply.

    JSON nesting is bounded by Python's recursion limit (``sys.getrecursionlimit()``,
    1,000 by default: about 900 levels in practice). Deeper input is refused with this
    error (or :class:`InvalidPatch` / :class:`InvalidChange` while decoding) instead of
    crashing with ``RecursionError``.
    """

    def __init__(self, what: str = "the document") -> None:
        super().__init__(
            f"{what} is nested too deeply (the limit is Python's recursion limit, "
            f"{sys.getrecursionlimit()} frames: about 900 levels of JSON nesting)"
        )


F = TypeVar("F", bound=Callable[..., Any])


def depth_limited(fn: F) -> F:
    """Turn a ``RecursionError`` raised by ``fn`` into :class:`LimitExceeded`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RecursionError:
            raise LimitExceeded() from None

    return wrapper  # type: ignore[return-value]


class InvalidChange(PatchassignError, ValueError):
    """An assignment change is malformed, or its system cannot do it.

    Attributes:
        reason: What is wrong, without the location prefix.
        line: The plan line number (1-based), when the change came from a plan.
        field: The member at fault (``"to"``, ``"record"``, ``"action"``...), if known.
        system: The target system, when it could be read.
        csv: The plan is CSV: the message says row and column (``line`` is the row,
            counting the header as row 1; ``field`` the column).
    """

    def __init__(
        self,
        reason: str,
        *,
        line: int | None = None,
        field: str | None = None,
        system: str | None = None,
        csv: bool = False,
    ) -> None:
        self.reason = reason
        self.line = line
        self.field = field
        self.system = system
        self.csv = csv
        where = []
        if line is not None:
            where.append(f"{'row' if csv else 'line'} {line}")
        if field is not None:
            where.append(f"{'column' if csv else 'field'} {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class PlanError(PatchassignError, ValueError):
    """A plan file cannot be read as a plan at all (the wrong format, a bad CSV header)."""


class ConfigError(PatchassignError, ValueError):
    """A system's configuration cannot be used (the message names the setting)."""


class TransportError(PatchassignError):
    """A request got no answer.

    Transports raise the subclass that says what happened; the dispatcher decides from it
    whether the change may have been applied (then it reads the record before resending).

    Attributes:
        sent: The request may have reached the server (its effect is unknown).
        host: ``host:port`` of the server, for messages.
        detail: What happened, without the host.
    """

    sent: bool = True

    def __init__(self, detail: str, *, host: str = "") -> None:
        self.detail = detail
        self.host = host
        super().__init__(f"{host}: {detail}" if host else detail)


class ConnectError(TransportError):
    """No connection could be made, so nothing was sent: the server is down or unreachable."""

    sent = False


class SetupError(ConnectError):
    """The host name does not resolve, or TLS failed: fix the configuration (not an outage)."""


class ResponseTimeout(TransportError):
    """The request went out and no answer came in time: it may have been applied."""


class ConnectionLost(TransportError):
    """The connection broke after the request went out: it may have been applied."""
