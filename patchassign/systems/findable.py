"""Findable assignments: ``POST /assignments/{id}/delegate``.

**Not idempotent**: each accepted delegate creates a successor assignment. The adapter reads
the assignment before sending; if it is already ``delegated`` to the same UPN, the change
is in place (``Unchanged``; the dispatcher reports it applied when it had sent it before).
What a delegate does to the original is not documented (only the successor is), so after
an ambiguous failure a delegate is resent only when the re-read shows the original's
``_etag`` (which Cosmos DB changes on any write) as it was when the delegate was prepared;
otherwise the change ends "unknown, not resent" with what was seen. At most once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..changes import Change, Delegate
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
    read_config,
    secret,
    segment,
)

__all__ = ["FindableAdapter"]

_OPEN = frozenset({"pending", "in_progress"})


class FindableConfig(SystemConfig, kw_only=True, forbid_unknown_fields=True):
    """``[systems.findable]``: ``token_env`` (an Azure AD bearer token)."""

    token_env: EnvVar


class FindableAdapter(BaseAdapter):
    """Findable (self-hosted; the customer's base URL); Azure AD Bearer token."""

    system: ClassVar[str] = "findable"
    idempotent: ClassVar[bool] = False
    versioned: ClassVar[bool] = False
    actions: ClassVar[frozenset[str]] = frozenset({"delegate"})

    config: ClassVar[type[SystemConfig]] = FindableConfig

    @classmethod
    def from_config(cls, table: Mapping[str, Any], credentials: Credentials) -> FindableAdapter:
        conf = read_config(FindableConfig, table)
        return cls(conf.url, credentials.need(conf.token_env, "token_env"))

    def __init__(self, base_url: str, token: str | Secret) -> None:
        super().__init__(base_url, {"Accept": "application/json"})
        self._token = secret(token)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.reveal()}"}

    def probe_path(self) -> str:
        return "/assignments/patchassign-preflight"

    def _path(self, change: Change) -> str:
        if not isinstance(change.record, str):
            raise self.invalid(
                f"a Findable assignment id is a string, got {change.record!r}", "record"
            )
        return f"/assignments/{segment(change.record)}"

    def check(self, change: Change) -> None:
        self.check_action(change)
        self._path(change)
        assert isinstance(change, Delegate)
        user, at, domain = change.to.partition("@")
        if not (user and at and "." in domain) or any(c.isspace() for c in change.to):
            raise self.invalid(
                f"toUpn must be a user principal name (user@domain), got {change.to!r}", "to"
            )

    def needs_read(self, change: Change) -> bool:
        return True  # the only way to know whether a delegate already happened

    def read(self, change: Change) -> HttpRequest:
        return self.get(self._path(change))

    def current(self, change: Change, response: HttpResponse) -> Current | Retry | Failed:
        if response.status == 200:
            record = response.json()
            if isinstance(record, dict):
                etag = record.get("_etag")
                return Current(record, etag if isinstance(etag, str) else None)
            return self.not_the_answer(response, "the assignment")
        return self.classify(response, self.error_message(response))

    def holder(self, record: Any) -> dict[str, Any] | None:
        if not isinstance(record, dict):
            return None
        if record.get("status") == "delegated" and record.get("delegatedTo"):
            return {"to": str(record["delegatedTo"])}
        held = record.get("assigneeEmail")
        return {"to": None if held is None else str(held)}

    def prepare(self, change: Change, current: Current | None) -> Prepared:
        assert isinstance(change, Delegate)
        if current is None or not isinstance(current.record, dict):
            return Failed("a delegation needs the current assignment")
        rec = current.record
        status = rec.get("status")
        to = change.to.casefold()
        if status == "delegated":
            if str(rec.get("delegatedTo", "")).casefold() == to:
                return Unchanged(current.version, f"already delegated to {change.to}")
            return Conflict(f"already delegated to {rec.get('delegatedTo')!r}", recoverable=False)
        if status not in _OPEN:
            return Conflict(
                f"the assignment is {status}; only open ones can be delegated", recoverable=False
            )
        if rec.get("allowDelegation") is False:
            return Conflict("the assignment does not allow delegation", recoverable=False)
        holder = str(rec.get("assigneeEmail", ""))
        if holder.casefold() == to:
            return Unchanged(current.version, f"already assigned to {change.to}")
        if change.expect is not None and holder.casefold() != change.expect.casefold():
            return Conflict(
                f"assigned to {holder!r}, expected {change.expect!r}", recoverable=False
            )
        body: dict[str, str] = {"toUpn": change.to}
        if change.reason is not None:
            body["reason"] = change.reason
        return self.json_request("POST", f"{self._path(change)}/delegate", body)

    def outcome(self, change: Change, response: HttpResponse) -> Outcome:
        if response.status < 300:
            successor = response.json()
            if response.status not in (200, 201) or not (
                isinstance(successor, dict) and successor.get("id")
            ):
                return self.not_the_answer(response, "the successor assignment (with an id)")
            etag = successor.get("_etag")
            return Applied(etag if isinstance(etag, str) else None, successor)
        message = self.error_message(response)
        if response.status == 409:
            # Maybe our own earlier attempt went through: re-read decides.
            return Conflict(f"refused: {message}", 409)
        return self.classify(response, message, write=True)
