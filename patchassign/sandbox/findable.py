"""Fake Findable assignment-delegate API.

``POST /assignments/{id}/delegate`` with ``{"toUpn", "reason"?}`` and a Bearer token
answers 201 with the **successor** assignment (new id, ``pending``, ``delegatedFrom``,
``delegationChain`` extended with the delegating assignee). What becomes of the original
is not documented by the vendor: with ``records_delegation=True`` (the default) it becomes
``delegated`` with ``delegatedTo`` set to the UPN, and a resend is refused with 409; with
``records_delegation=False`` its fields stay as they were and only what Cosmos DB changes
on any write changes (``_etag``, ``_ts``, ``updatedAt``), so a blind resend creates a
second successor. 409 when the original is no longer open (not
``pending``/``in_progress``) or ``allowDelegation`` is false. Not idempotent.
``GET /assignments/{id}`` reads one. Error bodies are ``{"error": {"code", "message"}}``
(our choice; the vendor page shows none).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..changes import Change, Delegate
from ..errors import ConfigError
from ..systems import FindableAdapter
from ._demo import TEAM_A, TEAM_B, person, target
from ._server import BadBody, FakeServer, rfc3339

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["FindableServer"]

_OPEN = frozenset({"pending", "in_progress"})
_STATUSES = frozenset(
    {
        "pending",
        "in_progress",
        "completed",
        "failed",
        "expired",
        "cancelled",
        "rejected",
        "delegated",
    }
)
_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def _looks_like_upn(value: str) -> bool:
    user, at, domain = value.partition("@")
    return bool(at and user and "." in domain and not any(c.isspace() for c in value))


class FindableServer(FakeServer):
    """Findable: delegation creates a successor; not idempotent."""

    system: ClassVar[str] = "findable"
    write_endpoints: ClassVar[frozenset[str]] = frozenset({"delegate"})
    editor_field: ClassVar[str] = "remindersSent"

    def __init__(self, *, records_delegation: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ids = itertools.count(1)
        self.records_delegation = records_delegation

    @classmethod
    def demo_record(cls, i: int) -> dict[str, Any]:
        return {
            "id": f"asg-{i:06d}",
            "assigneeEmail": f"{TEAM_A[person(i)]}@example.com",
            "status": "pending" if i % 5 else "in_progress",
            "allowDelegation": True,
        }

    @classmethod
    def demo_change(cls, i: int) -> Change:
        return Delegate(
            system="findable",
            record=f"asg-{i:06d}",
            id=f"findable-{i}",
            to=f"{TEAM_B[target(i)]}@example.com",
            reason="team B owns this now",
            expect=f"{TEAM_A[person(i)]}@example.com",
        )

    def demo_mismatches(self, ids: Iterable[int]) -> Iterator[tuple[int, str]]:
        """The original is ``delegated`` to the target, and exactly one successor exists,
        assigned to the target."""
        successors: dict[str, list[dict[str, Any]]] = {}
        for rec in self.records.values():
            origin = rec.get("delegatedFrom")
            if origin is not None:
                successors.setdefault(origin, []).append(rec)
        for i in ids:
            key = f"asg-{i:06d}"
            rec = self.records[key]
            email = f"{TEAM_B[target(i)]}@example.com"
            found = successors.get(key, [])
            if rec["status"] != "delegated" or rec.get("delegatedTo") != email:
                got = rec.get("delegatedTo")
                yield i, f"status {rec['status']!r}, delegated to {got!r}, want {email}"
            elif len(found) != 1:
                yield i, f"{len(found)} successors, want exactly 1"
            elif found[0]["assigneeEmail"] != email:
                yield i, f"successor assigned to {found[0]['assigneeEmail']!r}, want {email}"

    def move_elsewhere(self, i: int) -> None:
        self.records[f"asg-{i:06d}"]["assigneeEmail"] = "zed@example.com"

    def adapter(self) -> FindableAdapter:
        return FindableAdapter(self.url, self.token)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/assignments/{id}/delegate", self._delegate, name="delegate")
        router.add_get("/assignments/{id}", self._read, name="read")

    def credential(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token == self.token else None

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        return self.json(
            {"error": {"code": _CODES.get(status, "Error"), "message": message, **extra}}, status
        )

    def unauthorized(self) -> web.Response:
        return self.error(401, "A valid Azure AD bearer token is required")

    def _stamp(self) -> tuple[str, int]:
        t = self.clock.now()
        return rfc3339(t, digits=3), int(t.timestamp())

    def seed(self, records: Iterable[Mapping[str, Any]]) -> None:
        now, ts = self._stamp()
        for r in records:
            aid = r["id"]
            if not isinstance(aid, str) or not aid:
                raise ConfigError(f"Findable assignment ids are strings, got {aid!r}")
            status = r.get("status", "pending")
            if status not in _STATUSES:
                raise ConfigError(f"unknown assignment status {status!r}")
            self.records[aid] = {
                "id": aid,
                "targetType": "document",
                "targetId": "doc-1",
                "assigneeEmail": "someone@example.com",
                "assignedBy": "admin@example.com",
                "originatorEmail": "admin@example.com",
                "completionCriteria": "manual",
                "attempts": [],
                "status": status,
                "delegationChain": [],
                "allowDelegation": True,
                "remindersSent": 0,
                "createdAt": now,
                "updatedAt": now,
                "createdBy": "admin@example.com",
                "updatedBy": "admin@example.com",
                "_ts": ts,
                "_etag": f'"{secrets.token_hex(8)}"',
                **r,
            }

    def edit(self, key: str) -> None:
        rec = self.records[key]
        now, ts = self._stamp()
        self.records[key] = {
            **rec,
            "remindersSent": rec.get("remindersSent", 0) + 1,
            "lastReminderAt": now,
            "updatedAt": now,
            "_ts": ts,
            "_etag": f'"{secrets.token_hex(8)}"',
        }

    async def _read(self, request: web.Request) -> web.Response:
        key = request.match_info["id"]
        rec = self.records.get(key)
        if rec is None:
            return self.error(404, f"Assignment {key} not found")
        resp = self.json(rec)
        self.after_read(key)
        return resp

    async def _delegate(self, request: web.Request) -> web.Response:
        key = request.match_info["id"]
        rec = self.records.get(key)
        if rec is None:
            return self.error(404, f"Assignment {key} not found")
        try:
            body = await self.body(request)
        except BadBody as e:
            return self.error(400, str(e))
        if not isinstance(body, dict):
            return self.error(400, "The body must be a JSON object with toUpn")
        to, reason = body.get("toUpn"), body.get("reason")
        if not isinstance(to, str) or not _looks_like_upn(to):
            return self.error(
                400, "toUpn is required and must be a user principal name (user@domain)"
            )
        if reason is not None and not isinstance(reason, str):
            return self.error(400, "reason must be a string")
        unknown = sorted(set(body) - {"toUpn", "reason"})
        if unknown:
            return self.error(400, f"unknown field(s): {', '.join(unknown)}")
        if rec["status"] not in _OPEN:
            return self.error(
                409, f"Assignment {key} is {rec['status']}; only open assignments can be delegated"
            )
        if not rec.get("allowDelegation", False):
            return self.error(409, f"Assignment {key} does not allow delegation")
        if to.casefold() == rec["assigneeEmail"].casefold():
            return self.error(400, f"Assignment {key} is already assigned to {to}")
        now, ts = self._stamp()
        successor_id = f"{key}~d{next(self._ids)}"
        successor = {
            **rec,
            "id": successor_id,
            "assigneeEmail": to,
            "status": "pending",
            "attempts": [],
            "delegationChain": [*rec["delegationChain"], rec["assigneeEmail"]],
            "delegatedFrom": key,
            "delegationReason": reason,
            "remindersSent": 0,
            "createdAt": now,
            "updatedAt": now,
            "_ts": ts,
            "_etag": f'"{secrets.token_hex(8)}"',
        }
        successor.pop("delegatedTo", None)
        recorded = (
            {"status": "delegated", "delegatedTo": to, "delegationReason": reason}
            if self.records_delegation
            else {}
        )
        self.records[key] = {
            **rec,
            **recorded,
            "updatedAt": now,
            "_ts": ts,
            "_etag": f'"{secrets.token_hex(8)}"',
        }
        self.records[successor_id] = successor
        self.stats.writes[key] += 1
        return self.json(successor, 201)
