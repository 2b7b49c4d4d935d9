"""Maxsight (formerly PassFort) task assignment: ``PUT /v5/tasks/{id}/update-assignment``.

Every write carries ``If-Match`` with the task's ``updated_at`` as read (exact string), so a
concurrent change is a 409 and a resend after a lost answer cannot apply twice: the
adapter always reads first. The assignee is emailed by the system on every change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from ..changes import Assign, Change, Unassign
from ..errors import ConfigError
from ._base import (
    Applied,
    BaseAdapter,
    Conflict,
    Credentials,
    Current,
    EnvVar,
    Failed,
    HttpRequest,
    HttpResponse,
    Outcome,
    Prepared,
    Retry,
    Secret,
    SystemConfig,
    Unchanged,
    check_header,
    parse_retry_after,
    read_config,
    secret,
    segment,
    single,
)

__all__ = ["MaxsightAdapter"]


class MaxsightConfig(SystemConfig, kw_only=True, forbid_unknown_fields=True):
    """``[systems.maxsight]``: ``api_key_env``, ``assigned_by``."""

    api_key_env: EnvVar
    assigned_by: str | None = None


class MaxsightAdapter(BaseAdapter):
    """Maxsight; ``apikey`` header; ``If-Match`` optimistic concurrency.

    Args:
        base_url: The region's API root, e.g. ``https://api.passfort.com``.
        api_key: The API key.
        assigned_by: Default ``assigned_by_id`` for changes that give no ``by``.
    """

    system: ClassVar[str] = "maxsight"
    idempotent: ClassVar[bool] = True
    versioned: ClassVar[bool] = True
    actions: ClassVar[frozenset[str]] = frozenset({"assign", "unassign"})

    config: ClassVar[type[SystemConfig]] = MaxsightConfig

    @classmethod
    def from_config(cls, table: Mapping[str, Any], credentials: Credentials) -> MaxsightAdapter:
        conf = read_config(MaxsightConfig, table)
        key = credentials.need(conf.api_key_env, "api_key_env")
        return cls(conf.url, key, assigned_by=conf.assigned_by)

    def __init__(
        self, base_url: str, api_key: str | Secret, *, assigned_by: str | None = None
    ) -> None:
        super().__init__(base_url, {"Accept": "application/json"})
        self._key = secret(api_key)
        self.assigned_by = assigned_by

    def auth_headers(self) -> dict[str, str]:
        return {"apikey": self._key.reveal()}

    def _task(self, change: Change) -> str:
        if not isinstance(change.record, str):
            raise self.invalid(f"a Maxsight task id is a string, got {change.record!r}", "record")
        return segment(change.record)

    def check(self, change: Change) -> None:
        self.check_action(change)
        self._task(change)
        if isinstance(change, Assign):
            single(change.to, self.system, "to")
            if change.expect is not None:
                single(change.expect, self.system, "expect")
        if isinstance(change, Assign | Unassign) and (change.by or self.assigned_by) is None:
            raise self.invalid(
                "Maxsight needs assigned_by_id: give 'by' or configure assigned_by", "by"
            )

    def needs_read(self, change: Change) -> bool:
        return True  # If-Match needs the task's updated_at

    def read(self, change: Change) -> HttpRequest:
        return self.get(f"/v5/tasks/{self._task(change)}")

    def current(self, change: Change, response: HttpResponse) -> Current | Retry | Failed:
        if response.status == 200:
            task = response.json()
            if isinstance(task, dict) and isinstance(task.get("updated_at"), str):
                return Current(task, task["updated_at"])
            return self.not_the_answer(response, "the task (with updated_at)")
        return self._error(response)

    def holder(self, record: Any) -> dict[str, Any] | None:
        held = record.get("assignment") if isinstance(record, dict) else None
        if not isinstance(held, dict):
            return {"to": None}
        out: dict[str, Any] = {"to": held.get("assigned_to_id")}
        kind = held.get("assigned_to_type")
        if isinstance(kind, str) and kind.lower() != "user":
            out["to_type"] = kind.lower()
        return out

    def assigned(self, change: Change) -> dict[str, Any]:
        if not isinstance(change, Assign):
            return {"to": None}
        out: dict[str, Any] = {"to": single(change.to, self.system, "to")}
        if change.to_type != "user":
            out["to_type"] = change.to_type
        return out

    def prepare(self, change: Change, current: Current | None) -> Prepared:
        if current is None or current.version is None:
            return Failed("a Maxsight update needs the task's updated_at")
        held: Any = current.record.get("assignment")
        holder = held.get("assigned_to_id") if isinstance(held, dict) else None
        assert isinstance(change, Assign | Unassign)
        by = change.by or self.assigned_by
        if isinstance(change, Assign):
            to = single(change.to, self.system, "to")
            kind = change.to_type.upper()
            if isinstance(held, dict) and holder == to and held.get("assigned_to_type") == kind:
                return Unchanged(current.version)
            body: dict[str, Any] = {
                "update": {
                    "assigned_by_id": by,
                    "assigned_to_id": to,
                    "assigned_to_type": kind,
                    "assignment_comment": change.comment,
                }
            }
        else:
            if held is None:
                return Unchanged(current.version)
            body = {"unassign": {"assigned_by_id": by, "assignment_comment": change.comment}}
        if change.expect is not None and holder != single(change.expect, self.system, "expect"):
            return Conflict(
                f"assigned to {holder!r}, expected {change.expect!r}", recoverable=False
            )
        try:
            version = check_header("If-Match", current.version)
        except ConfigError:
            return Failed("the task's updated_at holds control characters; refusing to send it")
        return self.json_request(
            "PUT", f"/v5/tasks/{self._task(change)}/update-assignment", body, {"If-Match": version}
        )

    def outcome(self, change: Change, response: HttpResponse) -> Outcome:
        if response.status < 300:
            task = response.json()
            version = task.get("updated_at") if isinstance(task, dict) else None
            if response.status != 200 or not isinstance(version, str):
                return self.not_the_answer(response, "the task (with updated_at)")
            return Applied(version, task)
        if response.status == 409:
            return Conflict(f"version mismatch: {self.error_message(response)}", 409)
        return self._error(response, write=True)

    def _error(self, response: HttpResponse, *, write: bool = False) -> Retry | Failed:
        outcome = self.classify(response, self.error_message(response), write=write)
        if isinstance(outcome, Retry) and outcome.after is None:
            secs = response.header("X-RateLimit-Retry-Secs") or response.header(
                "X-RateLimit-Reset-Secs"
            )
            after = parse_retry_after(secs)
            if after is not None:
                return msgspec.structs.replace(outcome, after=after)
        return outcome

    def probe_path(self) -> str:
        return "/v5/tasks/patchassign-preflight"
