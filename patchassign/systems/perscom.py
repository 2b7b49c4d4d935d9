"""PERSCOM assignment records: ``PATCH /{version}/assignment-records/{id}``, and moves.

``assign``, ``merge``, ``set`` and ``patch`` **update an assignment record**: they change
the record (its ``user_id``, unit, position...) and fire PERSCOM's webhooks, and they move
nobody. In PERSCOM's own code only *creating* an assignment record copies its unit,
position, specialty and status onto the user. ``move`` does that: it creates a new
assignment record for a user (``POST /{version}/assignment-records``), after reading the
user (``GET /{version}/users/{id}``); it is not idempotent, so after an ambiguous failure
it is resent only when the user is provably untouched (the same ``updated_at``).

No version token: PERSCOM applies the last write. When a change needs the current record
(``expect``, ``set``, ``patch``) the adapter reads it first and diffs, which narrows but does
not close the race with other writers; plain ``assign`` and a ``merge`` that names the
``user_id`` are blind partial updates (idempotent). Every update body carries ``user_id``,
which PERSCOM's page and OpenAPI file mark required for an update too: a ``merge`` without
it reads the record first and sends its ``user_id`` back unchanged. Validation mirrors the vendor's schema and source: integer ids (not
booleans), ``author_id`` not null, ``type`` primary/secondary, ``text`` at most 65,535
characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from .._json import json_equal
from ..changes import Assign, Change, Merge, MovePerson, Patch, SetFields
from ..errors import InvalidPatch, PatchConflict
from ..patch import apply_patch
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
    Limits,
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

__all__ = ["PerscomAdapter"]

_INT_FIELDS = frozenset(
    {"user_id", "status_id", "unit_id", "position_id", "specialty_id", "document_id", "author_id"}
)
_FIELDS = _INT_FIELDS | {"type", "text"}
_TEXT_MAX = 65_535
_NOT_NULL = frozenset({"user_id", "author_id"})
#: What creating a primary assignment record copies onto its user.
PLACEMENT = ("status_id", "unit_id", "position_id", "specialty_id")


class PerscomConfig(SystemConfig, kw_only=True, forbid_unknown_fields=True):
    """``[systems.perscom]``: ``token_env``, ``tenant``, ``version``, ``notifications``."""

    token_env: EnvVar
    tenant: str | None = None
    version: str = "v2"
    notifications: bool = True


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


class PerscomAdapter(BaseAdapter):
    """PERSCOM (``https://api.perscom.io``); Bearer token; last write wins.

    Args:
        base_url: API root, e.g. ``https://api.perscom.io``.
        token: The API key (Bearer).
        version: ``"v2"`` (default) or ``"v1"``.
        tenant: Sent as ``X-Perscom-Id`` when the token carries no tenant claim.
        notifications: ``False`` sends ``X-Perscom-Notifications: false`` (bulk runs).
    """

    system: ClassVar[str] = "perscom"
    idempotent: ClassVar[bool] = True
    versioned: ClassVar[bool] = False
    actions: ClassVar[frozenset[str]] = frozenset({"assign", "merge", "set", "patch", "move"})
    #: 1,000 requests a minute per user.
    limits: ClassVar[Limits] = Limits(concurrency=16, rate=1000 / 60, burst=20)

    config: ClassVar[type[SystemConfig]] = PerscomConfig

    @classmethod
    def from_config(cls, table: Mapping[str, Any], credentials: Credentials) -> PerscomAdapter:
        conf = read_config(PerscomConfig, table)
        return cls(
            conf.url,
            credentials.need(conf.token_env, "token_env"),
            version=conf.version,
            tenant=conf.tenant,
            notifications=conf.notifications,
        )

    def __init__(
        self,
        base_url: str,
        token: str | Secret,
        *,
        version: str = "v2",
        tenant: str | None = None,
        notifications: bool = True,
    ) -> None:
        if version not in ("v1", "v2"):
            raise self.invalid(f"version must be v1 or v2, got {version!r}")
        headers = {"Accept": "application/json"}
        if tenant is not None:
            headers["X-Perscom-Id"] = tenant
        if not notifications:
            headers["X-Perscom-Notifications"] = "false"
        super().__init__(base_url, headers)
        self._token = secret(token)
        self.version = version

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.reveal()}"}

    def probe_path(self) -> str:
        return f"/{self.version}/assignment-records/{2**31 - 1}"

    def _path(self, change: Change) -> str:
        return f"/{self.version}/assignment-records/{segment(self._id(change))}"

    def idempotent_for(self, change: Change) -> bool:
        """A move creates a record: not idempotent. Updates are."""
        return not isinstance(change, MovePerson)

    def key(self, change: Change) -> str:
        return str(self._id(change))

    def _id(self, change: Change) -> int:
        record = change.record
        if isinstance(record, str) and record.isascii() and record.isdigit():
            record = int(record)
        if type(record) is not int or record <= 0:
            raise self.invalid(
                f"a PERSCOM record id is a positive integer, got {record!r}", "record"
            )
        return record

    def check(self, change: Change) -> None:
        self.check_action(change)
        self._id(change)
        if isinstance(change, Assign):
            self._user(change.to, "to")
            if change.expect is not None:
                self._user(change.expect, "expect")
            if change.to_type != "user":
                raise self.invalid("PERSCOM assigns records to users, not teams", "to_type")
        elif isinstance(change, Merge | SetFields):
            self._fields(change.merge if isinstance(change, Merge) else change.state)
        elif isinstance(change, MovePerson):
            self._fields(change.to)
            if "user_id" in change.to:
                raise self.invalid("a move's user is its record, not to.user_id", "to")
            if change.to.get("type", "primary") != "primary":
                raise self.invalid("only a primary assignment record moves its user", "to")
            if not any(change.to.get(k) is not None for k in PLACEMENT):
                raise self.invalid(f"a move names at least one of {', '.join(PLACEMENT)}", "to")
            if change.expect is not None:
                odd = sorted(set(change.expect) - set(PLACEMENT))
                if odd:
                    raise self.invalid(
                        f"expect names the user's placement ({', '.join(PLACEMENT)}), "
                        f"not {', '.join(odd)}",
                        "expect",
                    )

    def _user(self, value: str | list[str], field: str) -> int:
        text = single(value, self.system, field)
        if not (text.isascii() and text.isdigit()):
            raise self.invalid(f"a PERSCOM user is an integer user_id, got {text!r}", field)
        return int(text)

    def _fields(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key not in _FIELDS:
                raise self.invalid(
                    f"PERSCOM assignment records have no field {key!r} "
                    f"(fields: {', '.join(sorted(_FIELDS))})",
                    key,
                )
            if key in _INT_FIELDS:
                if value is None and key not in _NOT_NULL:
                    continue
                if type(value) is not int:
                    raise self.invalid(f"{key} must be an integer", key)
            elif key == "type" and value not in ("primary", "secondary"):
                raise self.invalid("type must be 'primary' or 'secondary'", key)
            elif key == "text" and value is not None:
                if not isinstance(value, str):
                    raise self.invalid("text must be a string or null", key)
                if len(value) > _TEXT_MAX:
                    raise self.invalid(f"text is longer than {_TEXT_MAX} characters", key)

    def needs_read(self, change: Change) -> bool:
        if isinstance(change, Assign):  # the common case first: asked for every change
            return change.expect is not None
        if isinstance(change, Merge):  # an update body needs the user_id: the record's
            return "user_id" not in change.merge
        return isinstance(change, SetFields | Patch | MovePerson)

    def read(self, change: Change) -> HttpRequest:
        if isinstance(change, MovePerson):  # a move reads the user it moves
            return self.get(f"/{self.version}/users/{segment(self._id(change))}")
        return self.get(self._path(change))

    def current(self, change: Change, response: HttpResponse) -> Current | Retry | Failed:
        if response.status == 200:
            body = response.json()
            data = body.get("data") if isinstance(body, dict) else None
            if isinstance(data, dict):
                return Current(data, data.get("updated_at"))
            return self.not_the_answer(response, 'the record ({"data": {...}})')
        return self.classify(response, self.error_message(response))

    def holder(self, record: Any) -> dict[str, Any] | None:
        held = record.get("user_id") if isinstance(record, dict) else None
        return {"to": None if held is None else str(held)}

    def assigned(self, change: Change) -> dict[str, Any]:
        assert isinstance(change, Assign)
        return {"to": str(self._user(change.to, "to"))}

    def touched(self, change: Change, record: Any) -> dict[str, Any] | None:
        if isinstance(change, MovePerson):
            if not isinstance(record, dict):
                return None
            return {"to": {k: record.get(k) for k in PLACEMENT if k in change.to}}
        return super().touched(change, record)

    def wanted(self, change: Change, record: Any) -> dict[str, Any] | None:
        if isinstance(change, MovePerson):
            return {"to": {k: change.to[k] for k in PLACEMENT if k in change.to}}
        return super().wanted(change, record)

    def _move(self, change: MovePerson, current: Current | None) -> Prepared:
        user = current.record if current is not None else None
        if not isinstance(user, dict):
            return Failed("a move needs the user as read")
        placed = {k: user.get(k) for k in PLACEMENT}
        wanted = {k: change.to[k] for k in PLACEMENT if k in change.to}
        if all(placed[k] == v for k, v in wanted.items()):
            return Unchanged(current.version if current else None, "the user is already there")
        if change.expect is not None and any(placed[k] != v for k, v in change.expect.items()):
            return Conflict(f"the user is at {placed}, expected {change.expect}", recoverable=False)
        body = {"user_id": self._id(change), "type": "primary", **change.to}
        return self.json_request("POST", f"/{self.version}/assignment-records", body)

    def prepare(self, change: Change, current: Current | None) -> Prepared:
        record = current.record if current is not None else None
        body: dict[str, Any]
        if isinstance(change, Assign):
            user = self._user(change.to, "to")
            body = {"user_id": user}
            if record is not None and change.expect is not None:
                held = record.get("user_id")
                if held != user and held != self._user(change.expect, "expect"):
                    return Conflict(
                        f"assigned to user {held}, expected user {change.expect}",
                        recoverable=False,
                    )
        elif isinstance(change, Merge):
            body = dict(change.merge)
        elif isinstance(change, SetFields):
            body = dict(change.state)
        elif isinstance(change, Patch):
            if record is None:
                return Failed("a PERSCOM patch needs the current record")
            base = {k: v for k, v in record.items() if k in _FIELDS}
            try:
                new = apply_patch(base, change.patch, case_insensitive=True)
            except PatchConflict as e:
                if in_place(base, change.patch):
                    return Unchanged(record.get("updated_at"))
                return Conflict(f"the patch does not apply: {e}", recoverable=False)
            except InvalidPatch as e:
                return Failed(str(e))
            if not isinstance(new, dict):
                return Failed("the patch must leave an object")
            body = {k: new.get(k) for k in _FIELDS if not json_equal(new.get(k), base.get(k))}
            try:
                self._fields(body)
            except ValueError as e:
                return Failed(str(e))
        elif isinstance(change, MovePerson):
            return self._move(change, current)
        else:  # pragma: no cover - check() refuses the rest
            return Failed(f"unsupported change {type(change).__name__}")
        if record is not None:
            body = {
                k: v for k, v in body.items() if not json_equal(record.get(k), v) or k not in record
            }
            if not body:
                return Unchanged(record.get("updated_at"))
            if "user_id" not in body:  # required in every update: the one it holds
                held = record.get("user_id")
                if type(held) is not int:
                    return Failed(f"the record holds no user_id to send back: {held!r}")
                body = {"user_id": held, **body}
        if "user_id" not in body:  # pragma: no cover - needs_read() reads for these
            return Failed("a PERSCOM update needs the user_id: read the record first")
        return self.json_request("PATCH", self._path(change), body)

    # -- batching: record updates through PATCH /{v}/assignment-records/batch ---------------

    #: No batched reads (the OpenAPI file documents no filter by id); updates: our choice
    #: of 50 per request (the file states no maximum).
    batch_max: ClassVar[tuple[int, int]] = (0, 50)

    def batch_group(self, request: HttpRequest, write: bool) -> Any:
        prefix = f"{self.base}/{self.version}/assignment-records/"
        if not write or request.method != "PATCH" or not request.url.startswith(prefix):
            return None
        rid = request.url[len(prefix) :]
        return "update" if rid.isascii() and rid.isdigit() else None

    def _rid(self, request: HttpRequest) -> str:
        return request.url.rsplit("/", 1)[1]

    def combine(self, requests: list[HttpRequest], write: bool) -> HttpRequest:
        resources = {self._rid(r): _decode(r.body or b"{}") for r in requests}
        url = f"{self.base}/{self.version}/assignment-records/batch"
        return HttpRequest("PATCH", url, requests[0].headers, _encode({"resources": resources}))

    def split(
        self, requests: list[HttpRequest], write: bool, response: HttpResponse
    ) -> list[HttpResponse | None] | None:
        body = response.json()
        headers = {"Content-Type": "application/json"}
        ids = [self._rid(r) for r in requests]
        if response.status == 200:
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                return None
            by_id = {str(r.get("id")): r for r in data if isinstance(r, dict)}
            return [
                HttpResponse(200, headers, _encode({"data": by_id[i]})) if i in by_id else None
                for i in ids
            ]
        error = body.get("error") if isinstance(body, dict) else None
        if response.status != 422 or not isinstance(error, dict):
            return None
        errors = error.get("errors")
        if not isinstance(errors, dict):
            return None
        # All or nothing: the fields at fault are named "resources.<id>.<field>".
        mine: dict[str, dict[str, Any]] = {}
        for key, messages in errors.items():
            _, rid, field = [*str(key).split(".", 2), "", ""][:3]
            if rid in ids and field:
                mine.setdefault(rid, {})[field] = messages
        if not mine:
            return None
        out: list[HttpResponse | None] = []
        for i in ids:
            if i in mine:
                first = next(iter(mine[i].values()))
                message = first[0] if isinstance(first, list) and first else "invalid"
                own = {"error": {**error, "message": message, "errors": mine[i]}}
                out.append(HttpResponse(422, headers, _encode(own)))
            else:
                out.append(None)
        return out

    def outcome(self, change: Change, response: HttpResponse) -> Outcome:
        if response.status < 300:
            body = response.json()
            data = body.get("data") if isinstance(body, dict) else None
            if isinstance(data, dict) and "id" in data:
                if isinstance(change, MovePerson):
                    if response.status == 201:  # the new record's: no version of the user
                        return Applied(None, data)
                elif response.status == 200:
                    version = data.get("updated_at")
                    return Applied(version if isinstance(version, str) else None, data)
            return self.not_the_answer(response, 'the record ({"data": {"id": ...}})')
        message = self.error_message(response)
        if response.status == 422:
            body = response.json()
            errors = body.get("error", {}).get("errors") if isinstance(body, dict) else None
            if isinstance(errors, dict) and errors:
                message = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in errors.items())
            return Failed(f"rejected: {message}", 422)
        return self.classify(response, message, write=True)
