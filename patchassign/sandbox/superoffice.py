"""Fake SuperOffice ProjectMember API (``/api/v1/ProjectMember/{id}``).

``PATCH`` takes a JSON Patch array (``add``, ``replace``, ``remove``, ``test`` only) or a
JSON Merge Patch object, which is converted to JSON Patch against the stored record, as the
server says it does. Paths are case-insensitive with the leading slash optional. A failed
``test`` is 409 (documented); ``If-Unmodified-Since`` older than the record's ``Updated``
is 412 (documented), compared at ``precision``: ``"full"`` (the default: ``Updated`` has
seven fractional digits and an HTTP-date none, so a record updated at 10:00:00.5 has
changed since ``10:00:00``) or ``"second"`` (``Updated`` floored to whole seconds); the
vendor does not say which. ``remove`` resets a property to its default (0, "", null): the
entity has a fixed set of properties (our assumption; the vendor documents ``remove``
without saying). The patch is applied with
patchassign's own core. ``Updated`` has seven fractional digits and the server's UTC offset,
like the real one. Errors are ``{"Error": true, "ErrorType", "ErrorMessage",
"ErrorSource"}``. Auth: ``Bearer <token>``, ``Basic base64(user:<token>)`` or ``SOTicket
<token>`` with an ``SO-AppToken`` header.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from aiohttp import web

from ..changes import Assign, Change, Merge
from ..errors import ConfigError, InvalidPatch, PatchConflict, PatchError
from ..merge import merge_to_json_patch
from ..patch import JsonPatch, apply_patch
from ..systems import SuperOfficeAdapter
from ..systems.superoffice import parse_updated
from ._demo import TEAM_A, person, target
from ._server import BadBody, FakeServer

__all__ = ["SuperOfficeServer", "parse_updated"]

_ALLOWED = frozenset({"add", "replace", "remove", "test"})
_INT32 = (-(2**31), 2**31 - 1)
_INT_FIELDS = frozenset(
    ["ContactId", "ProjectId", "EmailId", "CountryId", "PersonId", "ProjectMemberTypeId", "PhoneId"]
)
_STR_FIELDS = frozenset(
    [
        "ContactName",
        "ContactDepartment",
        "ProjectName",
        "EmailAddress",
        "Firstname",
        "MiddleName",
        "Lastname",
        "Mrmrs",
        "ProjectMemberTypeName",
        "Phone",
        "EmailAddressName",
        "Comment",
        "FullName",
    ]
)
_READ_ONLY = frozenset({"ProjectmemberId", "Registered", "Updated", "_Links"})
_OTHER = frozenset({"TableRight", "FieldProperties"})
_FIELDS = _INT_FIELDS | _STR_FIELDS | _READ_ONLY | _OTHER
_ERROR_TYPES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def format_updated(t: datetime, offset: timedelta) -> str:
    """``2005-05-26T02:30:53.0692723+02:00``: seven fractional digits and an offset."""
    local = t.astimezone(timezone(offset))
    return (
        local.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{local.microsecond:06d}0"
        + local.strftime("%z")[:3]
        + ":"
        + local.strftime("%z")[3:]
    )


class SuperOfficeServer(FakeServer):
    """SuperOffice: JSON Patch / merge patch, case-insensitive paths, 409 and 412."""

    system: ClassVar[str] = "superoffice"
    write_endpoints: ClassVar[frozenset[str]] = frozenset({"update"})
    editor_field: ClassVar[str] = "Phone"

    def __init__(
        self,
        *,
        utc_offset: timedelta = timedelta(hours=1),
        precision: str = "full",
        **kwargs: Any,
    ) -> None:
        if precision not in ("full", "second"):
            raise ConfigError(f"precision is 'full' or 'second', got {precision!r}")
        super().__init__(**kwargs)
        self.utc_offset = utc_offset
        self.precision = precision

    @classmethod
    def demo_record(cls, i: int) -> dict[str, Any]:
        who = TEAM_A[person(i)]
        return {
            "ProjectmemberId": i,
            "ProjectId": 1,
            "ProjectName": "Migration",
            "ContactId": 1,
            "ContactName": "Team A",
            "ContactDepartment": "Team A",
            "PersonId": 100 + person(i),
            "Firstname": who.title(),
            "FullName": who.title(),
            "EmailAddress": f"{who}@example.com",
            "ProjectMemberTypeId": 1,
            "ProjectMemberTypeName": "member",
        }

    @classmethod
    def demo_change(cls, i: int) -> Change:
        """Odd records: an assignment; even ones: a guarded merge that also moves the
        member's department."""
        cid, to = f"superoffice-{i}", 200 + target(i)
        if i % 2:
            held = str(100 + person(i))
            return Assign(system="superoffice", record=i, id=cid, to=str(to), expect=held)
        merge = {"PersonId": to, "ContactDepartment": "Team B"}
        return Merge(system="superoffice", record=i, id=cid, merge=merge, guard=True)

    def demo_mismatches(self, ids: Iterable[int]) -> Iterator[tuple[int, str]]:
        for i in ids:
            rec = self.records[str(i)]
            if rec["PersonId"] != 200 + target(i):
                yield i, f"PersonId is {rec['PersonId']}, want {200 + target(i)}"
            elif i % 2 == 0 and rec["ContactDepartment"] != "Team B":
                yield i, f"ContactDepartment is {rec['ContactDepartment']!r}, want 'Team B'"

    def move_elsewhere(self, i: int) -> None:
        self.records[str(i)]["PersonId"] = 999

    def adapter(self) -> SuperOfficeAdapter:
        return SuperOfficeAdapter(self.url, token=self.token)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v1/ProjectMember/{id}", self._read, name="read")
        router.add_patch("/api/v1/ProjectMember/{id}", self._update, name="update")

    def credential(self, request: web.Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value == self.token:
            return value
        if scheme == "soticket" and value == self.token and request.headers.get("SO-AppToken"):
            return value
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return user if user and password == self.token else None
        return None

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        body = {
            "Error": True,
            "ErrorType": extra.pop("kind", None) or _ERROR_TYPES.get(status, "Error"),
            "ErrorMessage": message,
            "ErrorSource": extra.pop("source", "ProjectMember"),
            **extra,
        }
        return self.json(body, status)

    def unauthorized(self) -> web.Response:
        return self.error(
            401, "Authorization failed: supply a valid Bearer, Basic or SOTicket credential"
        )

    def _stamp(self) -> str:
        return format_updated(self.clock.now(), self.utc_offset)

    def seed(self, records: Iterable[Mapping[str, Any]]) -> None:
        now = self._stamp()
        for r in records:
            pid = r["ProjectmemberId"]
            if type(pid) is not int:
                raise ConfigError(f"ProjectmemberId must be an integer, got {pid!r}")
            rec: dict[str, Any] = dict.fromkeys(sorted(_INT_FIELDS), 0)
            rec.update(dict.fromkeys(sorted(_STR_FIELDS), ""))
            rec.update(
                {
                    "ProjectmemberId": pid,
                    "Registered": now,
                    "Updated": now,
                    "TableRight": None,
                    "FieldProperties": {},
                }
            )
            rec.update({k: v for k, v in r.items() if k in _FIELDS})
            rec["_Links"] = {"Self": f"{self.url}/api/v1/ProjectMember/{pid}"}
            self.records[str(pid)] = rec

    def edit(self, key: str) -> None:
        rec = self.records[key]
        n = self.stats.edits[key] + 1
        self.records[key] = {**rec, "Phone": f"+47 555 {n:05d}", "Updated": self._stamp()}

    # ---- endpoints ------------------------------------------------------------------

    def _select(self, rec: dict[str, Any], request: web.Request) -> dict[str, Any]:
        select = request.query.get("$select")
        if not select:
            return rec
        wanted = {s.strip().split("/")[0].casefold() for s in select.split(",")}
        return {k: (v if k.casefold() in wanted else None) for k, v in rec.items()}

    def _find(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        key = request.match_info["id"]
        rec = self.records.get(key) if key.lstrip("-").isdigit() else None
        if rec is None:
            return self.error(404, f"ProjectMember with id {key} does not exist in the db.")
        return key, rec

    async def _read(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        key, rec = found
        resp = self.json(self._select(rec, request))
        self.after_read(key)
        return resp

    async def _update(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        key, rec = found
        try:
            body = await self.body(request)
        except BadBody as e:
            return self.error(400, str(e))
        try:
            if isinstance(body, list):
                patch = JsonPatch(body, allowed_ops=_ALLOWED, case_insensitive=True)
            elif isinstance(body, dict):
                patch = merge_to_json_patch(body, rec, case_insensitive=True)
            else:
                return self.error(
                    400, "The body must be a JSON Patch array or a merge patch object"
                )
        except InvalidPatch as e:
            return self.error(400, f"Invalid patch: {e}", kind="InvalidPatch")
        except PatchError as e:
            return self.error(400, f"Invalid merge patch: {e}", kind="InvalidPatch")
        since = request.headers.get("If-Unmodified-Since")
        if since is not None:
            try:
                limit = parsedate_to_datetime(since)
            except (TypeError, ValueError):
                limit = None  # RFC 9110: an invalid HTTP-date is ignored
            if limit is not None:
                if limit.tzinfo is None:
                    limit = limit.replace(tzinfo=UTC)
                updated = parse_updated(rec["Updated"])
                if self.precision == "second":
                    updated = updated.replace(microsecond=0)
                if updated > limit:
                    return self.error(
                        412,
                        f"ProjectMember {key} has changed since {since} (Updated {rec['Updated']})",
                    )
        try:
            new = apply_patch(rec, patch, case_insensitive=True)
        except PatchConflict as e:
            if e.reason == "test-failed":
                return self.error(409, f"Update blocked by a failed test: {e}", kind="Conflict")
            return self.error(400, f"Patch does not apply: {e}", kind="InvalidPatch")
        if isinstance(new, dict):
            for field in _STR_FIELDS | _OTHER:  # removed: back to the default value
                if field in rec and field not in new:
                    new[field] = "" if field in _STR_FIELDS else None
        problem = self._check(rec, new)
        if problem is not None:
            return self.error(400, problem, kind="InvalidPatch")
        new["Updated"] = self._stamp()
        self.records[key] = new
        self.stats.writes[key] += 1
        return self.json(self._select(new, request))

    @staticmethod
    def _check(old: dict[str, Any], new: Any) -> str | None:
        """Why a patched record cannot be saved (entity schema), or ``None``."""
        if not isinstance(new, dict):
            return "the patch must leave a ProjectMember object"
        for field in _READ_ONLY:
            if new.get(field, ...) != old.get(field, ...):
                return f"{field} is read-only"
        for field, value in new.items():
            if field not in _FIELDS:
                return f"ProjectMember has no property '{field}'"
            if field in _INT_FIELDS and (
                type(value) is not int or not _INT32[0] <= value <= _INT32[1]
            ):
                return f"{field} must be an int32, got {value!r}"
            if field in _STR_FIELDS and value is not None and not isinstance(value, str):
                return f"{field} must be a string, got {value!r}"
        missing = sorted(_INT_FIELDS - new.keys())
        if missing:
            return f"{missing[0]} cannot be removed (an int32 with no empty value)"
        return None
