"""Fake "Helpdesk": an in-house ticket system, driven by the generic REST adapter.

It stands for the system every user has that no vendor documents, so it follows the HTTP
and JSON standards strictly:

- ``GET /api/tickets/{id}``: the ticket, with a strong ``ETag`` (``"<version>"``).
- ``PATCH /api/tickets/{id}`` with ``application/merge-patch+json`` (RFC 7396) or
  ``application/json-patch+json`` (RFC 6902); ``PUT /api/tickets/{id}`` with the whole
  ticket (``application/json``). Another media type is ``415`` with ``Accept-Patch``.
- Preconditions (RFC 9110, RFC 6585): ``If-Match`` with a stale tag is ``412``; a
  ``version`` member sent in the body that is not the current one is ``409``; a failed
  JSON Patch ``test`` is ``409``; a write with neither precondition is ``428``
  (``require_precondition=False`` turns that off).
- Tickets have a fixed set of fields: unknown ones, a wrong type, removing a required
  one or changing ``id`` is ``422``. ``version`` and ``updated_at`` are the server's
  (each write adds one to ``version``). Removing ``assignee`` (a merge patch's ``null``)
  leaves it ``null``: unassigned.
- Error bodies: ``{"error": {"code": ..., "message": ...}}``. Auth: ``Authorization:
  Bearer <token>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..changes import Assign, Change, SetFields
from ..errors import ConfigError, InvalidPatch, PatchConflict, PatchError
from ..merge import apply_merge_patch
from ..patch import JsonPatch, Test, apply_patch
from ..systems import RestAdapter
from ._demo import TEAM_A, TEAM_B, person, target
from ._server import BadBody, FakeServer, rfc3339

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["HelpdeskServer"]

#: Field -> allowed JSON types (``None`` in the tuple: may be null); all are required.
_FIELDS: dict[str, tuple[type | None, ...]] = {
    "title": (str,),
    "queue": (str,),
    "status": (str,),
    "assignee": (str, list, None),
    "notes": (str,),
}
_SERVER = ("id", "version", "updated_at")
_MERGE = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HelpdeskServer(FakeServer):
    """An in-house ticket system: ETag + ``If-Match``, merge patch, JSON Patch, PUT.

    Args:
        require_precondition: Refuse (``428``) a write that carries no ``If-Match`` and no
            ``version``.
        weak_etags: Send weak tags (``W/"<version>"``), as Express does by default and
            nginx does once it compresses; ``If-Match`` still compares strongly (RFC 9110
            13.1.1), so a weak tag sent back never matches: 412.
    """

    system: ClassVar[str] = "helpdesk"
    write_endpoints: ClassVar[frozenset[str]] = frozenset({"patch", "put"})
    editor_field: ClassVar[str] = "notes"

    def __init__(
        self, *, require_precondition: bool = True, weak_etags: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.require_precondition = require_precondition
        self.weak_etags = weak_etags

    # -- configuration and demo data -------------------------------------------------

    def adapter(self, write: str = "merge-patch", version: str = "etag") -> RestAdapter:
        table, _ = self.settings()
        return RestAdapter(
            table["url"],
            system=self.system,
            record=table["record"],
            write=write,  # type: ignore[arg-type]
            version=version,
            token=self.token,
            error_message=table["error_message"],
        )

    def settings(self) -> tuple[dict[str, Any], dict[str, str]]:
        var = "DEMO_HELPDESK_TOKEN"
        table = {
            "adapter": "rest",
            "url": f"{self.url}/api",
            "record": "/tickets/{id}",
            "write": "merge-patch",
            "assignee": "/assignee",
            "version": "etag",
            "token_env": var,
            "error_message": "/error/message",
        }
        return table, {var: self.token}

    @classmethod
    def demo_record(cls, i: int) -> dict[str, Any]:
        return {"id": f"HD-{i:06d}", "title": f"Ticket {i}", "assignee": TEAM_A[person(i)]}

    @classmethod
    def demo_change(cls, i: int) -> Change:
        """Odd tickets: an assignment; even ones: the assignee and the queue together."""
        cid, to = f"helpdesk-{i}", TEAM_B[target(i)]
        if i % 2:
            held = TEAM_A[person(i)]
            return Assign(system="helpdesk", record=f"HD-{i:06d}", id=cid, to=to, expect=held)
        state = {"assignee": to, "queue": "team-b"}
        return SetFields(system="helpdesk", record=f"HD-{i:06d}", id=cid, state=state)

    def demo_mismatches(self, ids: Iterable[int]) -> Iterator[tuple[int, str]]:
        for i in ids:
            rec = self.records[f"HD-{i:06d}"]
            want = TEAM_B[target(i)]
            if rec["assignee"] != want:
                yield i, f"assignee is {rec['assignee']!r}, want {want!r}"
            elif i % 2 == 0 and rec["queue"] != "team-b":
                yield i, f"queue is {rec['queue']!r}, want 'team-b'"

    def move_elsewhere(self, i: int) -> None:
        key = f"HD-{i:06d}"
        self.records[key] = self._bump({**self.records[key], "assignee": "zed"})

    # -- the fake's own behaviour ------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/tickets/{id}", self._read, name="read")
        router.add_patch("/api/tickets/{id}", self._patch, name="patch")
        router.add_put("/api/tickets/{id}", self._put, name="put")

    def credential(self, request: web.Request) -> str | None:
        ok = request.headers.get("Authorization") == f"Bearer {self.token}"
        return self.token if ok else None

    def unauthorized(self) -> web.Response:
        return self.error(401, "a valid bearer token is required", code="unauthenticated")

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        code = extra.pop("code", "error")
        return self.json({"error": {"code": code, "message": message, **extra}}, status)

    def seed(self, records: Iterable[Mapping[str, Any]]) -> None:
        now = rfc3339(self.clock.now())
        for r in records:
            tid = r.get("id")
            if not isinstance(tid, str) or not tid:
                raise ConfigError(f"helpdesk ticket ids are strings, got {tid!r}")
            rec = {
                "id": tid,
                "title": "Ticket",
                "queue": "team-a",
                "status": "open",
                "assignee": None,
                "notes": "",
                "version": 1,
                "updated_at": now,
                **r,
            }
            try:
                self._valid(rec)
            except Refused as e:
                raise ConfigError(f"helpdesk ticket {tid}: {e.message}") from None
            self.records[tid] = rec

    def edit(self, key: str) -> None:
        rec = self.records[key]
        n = self.stats.edits[key] + 1
        self.records[key] = self._bump({**rec, "notes": f"edited by someone else ({n})"})

    def _bump(self, rec: dict[str, Any]) -> dict[str, Any]:
        return {**rec, "version": rec["version"] + 1, "updated_at": rfc3339(self.clock.now())}

    def _answer(self, rec: dict[str, Any], status: int = 200) -> web.Response:
        resp = self.json(rec, status)
        tag = f'"{rec["version"]}"'
        resp.headers["ETag"] = f"W/{tag}" if self.weak_etags else tag
        return resp

    async def _read(self, request: web.Request) -> web.Response:
        key = request.match_info["id"]
        rec = self.records.get(key)
        if rec is None:
            return self.error(404, f"no ticket {key}", code="not_found")
        resp = self._answer(rec)
        self.after_read(key)
        return resp

    async def _patch(self, request: web.Request) -> web.Response:
        return await self._write(request, put=False)

    async def _put(self, request: web.Request) -> web.Response:
        return await self._write(request, put=True)

    async def _write(self, request: web.Request, *, put: bool) -> web.Response:
        key = request.match_info["id"]
        rec = self.records.get(key)
        if rec is None:
            return self.error(404, f"no ticket {key}", code="not_found")
        kind = request.content_type
        allowed = ("application/json",) if put else (_MERGE, _JSON_PATCH)
        if kind not in allowed:
            resp = self.error(415, f"unsupported media type {kind!r}", code="media_type")
            if not put:
                resp.headers["Accept-Patch"] = f"{_MERGE}, {_JSON_PATCH}"
            return resp
        try:
            body = await self.body(request)
        except BadBody as e:
            return self.error(400, str(e), code="bad_request")
        try:
            matched = self._if_match(request.headers.get("If-Match"), rec)
            new, pinned = self._apply(rec, body, kind)
            if not (matched or pinned) and self.require_precondition:
                raise Refused(428, "precondition_required", "send If-Match or the version")
            self._valid(new)
        except Refused as e:
            return self.error(e.status, e.message, code=e.code)
        new = self._bump({**new, "id": rec["id"], "version": rec["version"]})
        self.records[key] = new
        self.stats.writes[key] += 1
        return self._answer(new)

    @staticmethod
    def _if_match(header: str | None, rec: dict[str, Any]) -> bool:
        """Whether an ``If-Match`` was sent (raises ``Refused`` 412 when it does not match)."""
        if header is None:
            return False
        tags = [t.strip() for t in header.split(",")]
        if "*" in tags or f'"{rec["version"]}"' in tags:  # strong comparison: no W/
            return True
        raise Refused(412, "precondition_failed", "the ticket has changed (ETag mismatch)")

    @staticmethod
    def _apply(rec: dict[str, Any], body: Any, kind: str) -> tuple[dict[str, Any], bool]:
        """The ticket after the write, and whether the body pinned the version."""
        pinned = False
        if kind == _JSON_PATCH:
            try:
                patch = JsonPatch(body)
            except InvalidPatch as e:
                raise Refused(400, "bad_patch", str(e)) from None
            pinned = any(isinstance(op, Test) and op.path == "/version" for op in patch)
            try:
                new = apply_patch(rec, patch)
            except PatchConflict as e:
                failed_test = e.reason == "test-failed"
                status, code = (409, "conflict") if failed_test else (422, "unprocessable")
                raise Refused(status, code, str(e)) from None
            except PatchError as e:
                raise Refused(422, "unprocessable", str(e)) from None
        else:
            if not isinstance(body, dict):
                raise Refused(422, "unprocessable", "the body must be a JSON object")
            if "version" in body:
                pinned = True
                if body["version"] != rec["version"]:
                    raise Refused(409, "conflict", "the ticket has changed (version mismatch)")
            if kind == _MERGE:
                new = apply_merge_patch(rec, body)
                if "assignee" not in new:
                    new = {**new, "assignee": None}
            else:
                new = {"id": rec["id"], **body}
        if not isinstance(new, dict):
            raise Refused(422, "unprocessable", "a ticket is a JSON object")
        if new.get("id") != rec["id"]:
            raise Refused(422, "unprocessable", "id cannot be changed")
        # version and updated_at are the server's: whatever was sent is not stored.
        return {**new, "version": rec["version"], "updated_at": rec["updated_at"]}, pinned

    @staticmethod
    def _valid(rec: dict[str, Any]) -> None:
        unknown = sorted(set(rec) - set(_FIELDS) - set(_SERVER))
        if unknown:
            raise Refused(422, "unprocessable", f"unknown field(s): {', '.join(unknown)}")
        for field, kinds in _FIELDS.items():
            if field not in rec:
                raise Refused(422, "unprocessable", f"{field} is required")
            value = rec[field]
            if value is None:
                if None not in kinds:
                    raise Refused(422, "unprocessable", f"{field} must not be null")
            elif not isinstance(value, tuple(k for k in kinds if k is not None)):
                raise Refused(422, "unprocessable", f"{field} has the wrong type")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise Refused(422, "unprocessable", f"{field}: a list of user names")
