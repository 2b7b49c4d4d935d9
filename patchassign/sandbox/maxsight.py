"""Fake Maxsight (formerly PassFort) task assignment API.

``PUT /v5/tasks/{task_id}/update-assignment`` with ``apikey`` and ``If-Match: <updated_at>``
(compared as an exact string; a mismatch is 409 "Version mismatch"), body ``{"update":
{...}}`` or ``{"unassign": {...}}``; ``GET /v5/tasks/{task_id}`` reads the task. Every
change gets a new ``updated_at`` (microsecond digits, so two changes within one second
still differ). Error bodies are ``{"message": ...}`` (the vendor does not document them).
Rate-limited answers carry ``X-RateLimit-*`` headers, not ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..changes import Assign, Change
from ..errors import ConfigError
from ..systems import MaxsightAdapter
from ._server import BadBody, FakeServer, rfc3339

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["MaxsightServer"]

_ASSIGNEE_TYPES = ("USER", "TEAM")


def _assignment(body: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The new ``assignment`` value (None: unassigned) or an error message."""
    if not isinstance(body, dict):
        return None, "the request body must be a JSON object"
    kinds = [k for k in ("update", "unassign") if k in body]
    extra = sorted(set(body) - {"update", "unassign"})
    if extra:
        return None, f"unknown field(s) {', '.join(extra)}: expected 'update' or 'unassign'"
    if len(kinds) != 1:
        return None, "exactly one of 'update' or 'unassign' is required"
    inner = body[kinds[0]]
    if not isinstance(inner, dict):
        return None, f"'{kinds[0]}' must be an object"
    required = ("assigned_by_id", "assigned_to_id", "assigned_to_type")
    allowed = (
        (*required, "assignment_comment")
        if kinds[0] == "update"
        else (
            "assigned_by_id",
            "assignment_comment",
        )
    )
    unknown = sorted(set(inner) - set(allowed))
    if unknown:
        return None, f"{kinds[0]}: unknown field(s) {', '.join(unknown)}"
    for field in required if kinds[0] == "update" else ("assigned_by_id",):
        value = inner.get(field)
        if not isinstance(value, str) or not value:
            return None, f"{kinds[0]}.{field} is required and must be a non-empty string"
    comment = inner.get("assignment_comment")
    if comment is not None and not isinstance(comment, str):
        return None, f"{kinds[0]}.assignment_comment must be a string or null"
    if kinds[0] == "unassign":
        return None, None
    if inner["assigned_to_type"] not in _ASSIGNEE_TYPES:
        return None, "update.assigned_to_type must be USER or TEAM"
    return {
        "assigned_by_id": inner["assigned_by_id"],
        "assigned_to_id": inner["assigned_to_id"],
        "assigned_to_type": inner["assigned_to_type"],
        "assignment_comment": comment,
    }, None


class MaxsightServer(FakeServer):
    """Maxsight: ``If-Match`` on the task's ``updated_at``, exact string compare."""

    system: ClassVar[str] = "maxsight"
    write_endpoints: ClassVar[frozenset[str]] = frozenset({"update"})
    editor_field: ClassVar[str] = "custom_metadata"

    @classmethod
    def demo_record(cls, i: int) -> dict[str, Any]:
        return {
            "id": f"task-{i:06d}",
            "assignment": {
                "assigned_by_id": "admin",
                "assigned_to_id": "team-a",
                "assigned_to_type": "TEAM",
                "assignment_comment": None,
            },
        }

    @classmethod
    def demo_change(cls, i: int) -> Change:
        return Assign(
            system="maxsight",
            record=f"task-{i:06d}",
            id=f"maxsight-{i}",
            to="team-b",
            to_type="team",
            expect="team-a",
            by="admin",
            comment="team B owns this now",
        )

    def demo_mismatches(self, ids: Iterable[int]) -> Iterator[tuple[int, str]]:
        want = ("team-b", "TEAM")
        for i in ids:
            got = self.records[f"task-{i:06d}"].get("assignment") or {}
            have = (got.get("assigned_to_id"), got.get("assigned_to_type"))
            if have != want:
                yield i, f"assigned to {have}, want {want}"

    def move_elsewhere(self, i: int) -> None:
        self.records[f"task-{i:06d}"]["assignment"]["assigned_to_id"] = "team-z"

    def adapter(self) -> MaxsightAdapter:
        return MaxsightAdapter(self.url, self.token, assigned_by="admin")

    def settings(self) -> tuple[dict[str, Any], dict[str, str]]:
        table, env = super().settings()
        return {"url": table["url"], "api_key_env": table["token_env"], "assigned_by": "admin"}, env

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_put("/v5/tasks/{task}/update-assignment", self._update, name="update")
        router.add_get("/v5/tasks/{task}", self._read, name="read")

    def credential(self, request: web.Request) -> str | None:
        key = request.headers.get("apikey")
        return key if key == self.token else None

    def unauthorized(self) -> web.Response:
        return self.error(401, "Unauthorized: check the apikey header, region and IP allow list")

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        return self.json({"message": message, **extra}, status)

    def throttled(self, retry_after: float) -> web.Response:
        resp = self.error(429, "Too many requests")
        secs = str(max(1, round(retry_after))) if retry_after else "0"
        resp.headers["X-RateLimit-Retry-Secs"] = secs
        resp.headers["X-RateLimit-Remaining"] = "0"
        resp.headers["X-RateLimit-Reset-Secs"] = secs
        return resp

    def seed(self, records: Iterable[Mapping[str, Any]]) -> None:
        now = rfc3339(self.clock.now())
        for r in records:
            tid = r["id"]
            if not isinstance(tid, str) or not tid:
                raise ConfigError(f"Maxsight task ids are strings, got {tid!r}")
            self.records[tid] = {
                "assessment_id": None,
                "assessment_template_id": None,
                "assignment": None,
                "c_name": "Review documentation",
                "created_at": now,
                "custom_metadata": {},
                "data_version": 0,
                "entity_id": None,
                "id": tid,
                "institution_id": None,
                "locked_at": None,
                "microfrontend_id": None,
                "name": None,
                "status": "INCOMPLETE",
                "step_name": "Review",
                "updated_at": now,
                "workflow_instance_id": None,
                **r,
            }

    def edit(self, key: str) -> None:
        rec = self.records[key]
        n = self.stats.edits[key] + 1
        self.records[key] = {
            **rec,
            "custom_metadata": {**rec["custom_metadata"], "edited_by_someone_else": n},
            "updated_at": rfc3339(self.clock.now()),
        }

    async def _read(self, request: web.Request) -> web.Response:
        key = request.match_info["task"]
        rec = self.records.get(key)
        if rec is None:
            return self.error(404, "Task not found")
        resp = self.json(rec)
        self.after_read(key)
        return resp

    async def _update(self, request: web.Request) -> web.Response:
        key = request.match_info["task"]
        rec = self.records.get(key)
        if rec is None:
            return self.error(404, "Task not found")
        try:
            body = await self.body(request)
        except BadBody as e:
            return self.error(400, str(e))
        assignment, problem = _assignment(body)
        if problem is not None:
            return self.error(400, problem)
        version = request.headers.get("If-Match")
        if version is None:
            return self.error(400, "the If-Match header with the task's updated_at is required")
        if version != rec["updated_at"]:
            return self.error(409, "Version mismatch")
        rec = {**rec, "assignment": assignment, "updated_at": rfc3339(self.clock.now())}
        self.records[key] = rec
        self.stats.writes[key] += 1
        return self.json(rec)
