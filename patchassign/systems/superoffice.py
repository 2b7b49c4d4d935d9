"""SuperOffice ProjectMember: ``PATCH /api/v1/ProjectMember/{id}`` with a JSON Patch.

The adapter reads the record, computes the JSON Patch that turns it into what the change
wants (a merge patch or desired fields are converted with the core, so the server gets
``add``/``replace``/``remove``/``test`` only), and guards it with what SuperOffice
documents exactly: a first ``test`` operation on the ``Updated`` value it read (a failed
test is 409: the record changed since, it is re-read and re-diffed). ``guard=True`` also
pins every old value the change touches.

``If-Unmodified-Since`` (412) is sent only when asked (``if_unmodified_since=True``): how
precisely the server compares an HTTP-date (whole seconds) with ``Updated`` (seven
fractional digits) is not documented, and at full precision every write would be refused
with a 412 that no re-read can cure.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, ClassVar

from ..changes import Assign, Change, Merge, Patch, SetFields
from ..diff import make_patch
from ..errors import ConfigError, InvalidPatch, PatchConflict, PatchError
from ..merge import apply_merge_patch
from ..patch import JsonPatch, Test, apply_patch
from ..pointer import find_key
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
    in_place,
    read_config,
    secret,
    segment,
    single,
)

__all__ = ["SuperOfficeAdapter", "if_unmodified_since"]

ALLOWED_OPS = frozenset({"add", "replace", "remove", "test"})


def parse_updated(text: str) -> datetime:
    """``Updated`` (7 fractional digits, an offset or none) as an aware UTC datetime."""
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def if_unmodified_since(updated: str) -> str:
    """The HTTP-date for ``If-Unmodified-Since`` from an ``Updated`` value (whole seconds)."""
    return format_datetime(parse_updated(updated).replace(microsecond=0), usegmt=True)


class SuperOfficeConfig(SystemConfig, kw_only=True, forbid_unknown_fields=True):
    """``[systems.superoffice]``: ``token_env``, or ``user`` + ``password_env``, or
    ``ticket_env`` + ``app_token_env``; ``if_unmodified_since``."""

    token_env: EnvVar | None = None
    user: str | None = None
    password_env: EnvVar | None = None
    ticket_env: EnvVar | None = None
    app_token_env: EnvVar | None = None
    if_unmodified_since: bool = False


class SuperOfficeAdapter(BaseAdapter):
    """SuperOffice CRM; Bearer, Basic or SOTicket auth.

    Args:
        base_url: The tenant root: ``https://online.superoffice.com/Cust12345`` (Online)
            or the on-site server's root; requests go to ``{base_url}/api/v1/...``.
        token: A Bearer access token (Online).
        user, password: Basic authentication (on-site).
        ticket, app_token: ``SOTicket`` with ``SO-AppToken`` (server to server).
        if_unmodified_since: Also send ``If-Unmodified-Since`` from ``Updated`` (whole
            seconds; only for a server known to compare at that precision).
    """

    system: ClassVar[str] = "superoffice"
    idempotent: ClassVar[bool] = True
    versioned: ClassVar[bool] = True
    actions: ClassVar[frozenset[str]] = frozenset({"assign", "merge", "patch", "set"})

    config: ClassVar[type[SystemConfig]] = SuperOfficeConfig

    @classmethod
    def from_config(cls, table: Mapping[str, Any], credentials: Credentials) -> SuperOfficeAdapter:
        conf = read_config(SuperOfficeConfig, table)
        return cls(
            conf.url,
            token=credentials.get(conf.token_env, "token_env"),
            user=conf.user,
            password=credentials.get(conf.password_env, "password_env"),
            ticket=credentials.get(conf.ticket_env, "ticket_env"),
            app_token=credentials.get(conf.app_token_env, "app_token_env"),
            if_unmodified_since=conf.if_unmodified_since,
        )

    def __init__(
        self,
        base_url: str,
        *,
        token: str | Secret | None = None,
        user: str | None = None,
        password: str | Secret | None = None,
        ticket: str | Secret | None = None,
        app_token: str | Secret | None = None,
        if_unmodified_since: bool = False,
    ) -> None:
        super().__init__(base_url, {"Accept": "application/json"})
        self.if_unmodified_since = if_unmodified_since
        if token is not None:
            self._auth = {"Authorization": secret(f"Bearer {secret(token).reveal()}")}
        elif user is not None and password is not None:
            import base64

            raw = base64.b64encode(f"{user}:{secret(password).reveal()}".encode()).decode()
            self._auth = {"Authorization": Secret(f"Basic {raw}")}
        elif ticket is not None and app_token is not None:
            self._auth = {
                "Authorization": Secret(f"SOTicket {secret(ticket).reveal()}"),
                "SO-AppToken": secret(app_token),
            }
        else:
            raise ConfigError("superoffice: give token, user and password, or ticket and app_token")

    def auth_headers(self) -> dict[str, str]:
        return {k: v.reveal() for k, v in self._auth.items()}

    def probe_path(self) -> str:
        return f"/api/v1/ProjectMember/{2**31 - 1}"

    def key(self, change: Change) -> str:
        return self._path(change).rsplit("/", 1)[1]

    def _path(self, change: Change) -> str:
        record = change.record
        if isinstance(record, str) and record.isascii() and record.isdigit():
            record = int(record)
        if type(record) is not int or not 0 < record < 2**31:
            raise self.invalid(
                f"a ProjectMember id is a positive int32, got {change.record!r}", "record"
            )
        return f"/api/v1/ProjectMember/{segment(record)}"

    @staticmethod
    def _person(value: str | list[str], field: str) -> int:
        text = single(value, "superoffice", field)
        if not (text.isascii() and text.isdigit()):
            raise SuperOfficeAdapter._bad(
                f"a SuperOffice assignee is a PersonId (integer), got {text!r}", field
            )
        return int(text)

    @staticmethod
    def _bad(reason: str, field: str) -> Exception:
        from ..errors import InvalidChange

        return InvalidChange(reason, field=field, system="superoffice")

    def check(self, change: Change) -> None:
        self.check_action(change)
        self._path(change)
        if isinstance(change, Assign):
            self._person(change.to, "to")
            if change.expect is not None:
                self._person(change.expect, "expect")
        elif isinstance(change, Patch):
            try:
                JsonPatch(change.patch, allowed_ops=ALLOWED_OPS, case_insensitive=True)
            except InvalidPatch as e:
                raise self.invalid(str(e), "patch") from None

    def needs_read(self, change: Change) -> bool:
        return True  # If-Unmodified-Since and the diff need the record

    def read(self, change: Change) -> HttpRequest:
        return self.get(self._path(change))

    def current(self, change: Change, response: HttpResponse) -> Current | Retry | Failed:
        if response.status == 200:
            record = response.json()
            if isinstance(record, dict):
                updated = record.get("Updated")
                return Current(record, updated if isinstance(updated, str) else None)
            return self.not_the_answer(response, "the ProjectMember")
        return self.classify(response, self.error_message(response))

    def _target(self, change: Change, record: dict[str, Any]) -> Any:
        """The record as the change wants it (raises PatchError when it cannot be)."""
        if isinstance(change, Assign):
            return self._set(record, {"PersonId": self._person(change.to, "to")})
        if isinstance(change, SetFields):
            return self._set(record, change.state)
        if isinstance(change, Merge):
            return apply_merge_patch(record, change.merge, case_insensitive=True)
        assert isinstance(change, Patch)
        return apply_patch(record, change.patch, case_insensitive=True)

    @staticmethod
    def _set(record: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        new = dict(record)
        for key, value in fields.items():
            new[find_key(new, key) or key] = value
        return new

    def holder(self, record: Any) -> dict[str, Any] | None:
        held = record.get("PersonId") if isinstance(record, dict) else None
        return {"to": None if held is None else str(held)}

    def assigned(self, change: Change) -> dict[str, Any]:
        assert isinstance(change, Assign)
        return {"to": str(self._person(change.to, "to"))}

    def prepare(self, change: Change, current: Current | None) -> Prepared:
        if current is None or not isinstance(current.record, dict):
            return Failed("a SuperOffice update needs the current record")
        record = current.record
        if isinstance(change, Assign) and change.expect is not None:
            held = record.get("PersonId")
            if held not in (self._person(change.to, "to"), self._person(change.expect, "expect")):
                return Conflict(f"PersonId is {held}, expected {change.expect}", recoverable=False)
        try:
            target = self._target(change, record)
        except PatchConflict as e:
            if isinstance(change, Patch) and in_place(record, change.patch):
                return Unchanged(current.version)
            return Conflict(f"the change does not apply to the record: {e}", recoverable=False)
        except PatchError as e:
            return Failed(str(e))
        guard = getattr(change, "guard", False)
        ops = make_patch(record, target, guard=guard)
        if not len(ops):
            return Unchanged(current.version)
        if isinstance(change, Patch):
            # Send the caller's own operations (their tests included), behind our guards.
            own = JsonPatch(change.patch, case_insensitive=True)
            ops = JsonPatch([op for op in ops if isinstance(op, Test)]) + own if guard else own
        if current.version is not None:
            # The record as read, exactly: any write since changed Updated (409).
            ops = JsonPatch([Test(path="/Updated", value=current.version)]) + ops
        headers = {}
        if current.version is not None and self.if_unmodified_since:
            try:
                headers["If-Unmodified-Since"] = if_unmodified_since(current.version)
            except ValueError:
                return Failed(f"cannot read the record's Updated value {current.version!r}")
        return HttpRequest(
            "PATCH",
            self.base + self._path(change),
            self.headers({"Content-Type": "application/json", **headers}),
            ops.to_json(),
        )

    def outcome(self, change: Change, response: HttpResponse) -> Outcome:
        if response.status < 300:
            record = response.json()
            version = record.get("Updated") if isinstance(record, dict) else None
            if response.status != 200 or not isinstance(version, str):
                return self.not_the_answer(response, "the ProjectMember (with Updated)")
            return Applied(version, record)
        message = self.error_message(response)
        if response.status == 409:
            return Conflict(f"a test failed: {message}", 409)
        if response.status == 412:
            return Conflict(f"changed since read: {message}", 412)
        return self.classify(response, message, write=True)
