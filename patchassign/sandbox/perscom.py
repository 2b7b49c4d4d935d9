"""Fake PERSCOM assignment-records API (``/{v1|v2}/assignment-records/{id}``) and users.

Follows the vendor page and OpenAPI description (``vendor-specs/``): Bearer auth, partial
update with field validation (422 with ``error.errors``), ``{"data": ...}`` answers, the
all-or-nothing batch update, and **no concurrency control**: the last write wins, as on the
real service. Seed records use the read shape (``id`` required; missing fields are null).

As in PERSCOM's own code, only **creating** an assignment record (``POST``) moves its user:
a primary record's unit, position, specialty and status (those not null) are copied onto
the user (``GET /{v}/users/{id}``). An update changes the record and nothing else. Ids
are checked like the server's ``exists:`` rules: users ``1..999`` and statuses, units,
positions, specialties and documents ``1..99`` exist (``users=``, ``refs=``); others are
422 "The selected ... is invalid.", as is ``author_id: null`` (not nullable in the
source). Unknown ``include`` values are ignored (Laravel Orion filters them), an empty
body is an empty update, and with ``tenant=`` set a request must carry ``X-Perscom-Id``
with it (401 otherwise).
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from aiohttp import web

from ..changes import Assign, Change
from ..errors import ConfigError
from ..systems import PerscomAdapter
from ._demo import TEAM_A, person, target
from ._server import BadBody, FakeServer, rfc3339

__all__ = ["PerscomServer"]

_INT_FIELDS = (
    "user_id",
    "status_id",
    "unit_id",
    "position_id",
    "specialty_id",
    "document_id",
    "author_id",
)
_FIELDS = (*_INT_FIELDS, "type", "text")
_TYPES = ("primary", "secondary")
_TEXT_MAX = 65_535
_VERSIONS = frozenset({"v1", "v2"})
_ERROR_TYPES = {
    400: "BadRequestHttpException",
    401: "AuthenticationException",
    403: "HttpException",
    404: "NotFoundHttpException",
    405: "MethodNotAllowedHttpException",
    422: "ValidationException",
    429: "ThrottleRequestsException",
    503: "HttpException",
}


def _label(field: str) -> str:
    return field.replace("_", " ")


_REFS = {
    "user_id": "users",
    "author_id": "users",
    "status_id": "statuses",
    "unit_id": "units",
    "position_id": "positions",
    "specialty_id": "specialties",
    "document_id": "documents",
}
#: What creating a primary assignment record copies onto its user.
PLACEMENT = ("status_id", "unit_id", "position_id", "specialty_id")
_NOT_NULL = frozenset({"user_id", "author_id"})


def _require_user(changes: Mapping[str, Any], errors: dict[str, list[str]]) -> None:
    """``user_id`` is required in every body, updates included (the vendor's page and
    OpenAPI file both say so; the page also marks ``type`` required, the file does not,
    and the fake follows the file there)."""
    if "user_id" not in changes and "user_id" not in errors and "body" not in errors:
        errors["user_id"] = ["The user id field is required."]


def validate(
    body: Any, exists: Mapping[str, Container[int]] | None = None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The accepted fields of an update body and the errors per field (Laravel style).

    ``exists``: table -> the ids in it (the server's ``exists:`` rules); ``None``: no check.
    """
    if not isinstance(body, dict):
        return {}, {"body": ["The request body must be a JSON object."]}
    changes: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for field, value in body.items():
        if field in _INT_FIELDS:
            if value is None and field not in _NOT_NULL:
                changes[field] = None
            elif type(value) is int:
                if exists is not None and value not in exists[_REFS[field]]:
                    errors[field] = [f"The selected {_label(field)} is invalid."]
                else:
                    changes[field] = value
            else:
                errors[field] = [f"The {_label(field)} field must be an integer."]
        elif field == "type":
            if value in _TYPES:
                changes[field] = value
            else:
                errors[field] = ["The selected type is invalid."]
        elif field == "text":
            if value is None:
                changes[field] = None
            elif not isinstance(value, str):
                errors[field] = ["The text field must be a string."]
            elif len(value) > _TEXT_MAX:
                errors[field] = [f"The text field must not be greater than {_TEXT_MAX} characters."]
            else:
                changes[field] = value
        # Unknown members are ignored, as Laravel's validated() data drops them.
    return changes, errors


class PerscomServer(FakeServer):
    """PERSCOM: partial updates, last write wins, 422 validation errors."""

    system: ClassVar[str] = "perscom"
    write_endpoints: ClassVar[frozenset[str]] = frozenset({"update", "batch", "create"})
    editor_field: ClassVar[str] = "text"

    def __init__(
        self,
        *,
        users: Iterable[int] = range(1, 1000),
        refs: Iterable[int] = range(1, 100),
        tenant: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        known = frozenset(refs)
        self.exists: dict[str, set[int]] = {
            "users": set(users),
            **{t: set(known) for t in ("statuses", "units", "positions", "specialties")},
            "documents": set(known),
        }
        #: User id -> the user's placement (what creating a primary record copies).
        self.users: dict[int, dict[str, Any]] = {}
        self.tenant = tenant
        self._next = 1

    @classmethod
    def demo_record(cls, i: int) -> dict[str, Any]:
        return {
            "id": i,
            "user_id": 100 + i % len(TEAM_A),
            "type": "primary",
            "unit_id": 1,
            "position_id": 10 + i % 3,
            "status_id": 1,
            "author_id": 1,
            "text": None,
        }

    @classmethod
    def demo_change(cls, i: int) -> Change:
        to, held = str(200 + target(i)), str(100 + person(i))
        return Assign(system="perscom", record=i, id=f"perscom-{i}", to=to, expect=held)

    def demo_mismatches(self, ids: Iterable[int]) -> Iterator[tuple[int, str]]:
        for i in ids:
            got = self.records[str(i)]["user_id"]
            if got != 200 + target(i):
                yield i, f"user_id is {got}, want {200 + target(i)}"

    def move_elsewhere(self, i: int) -> None:
        self.records[str(i)]["user_id"] = 999

    def adapter(self) -> PerscomAdapter:
        return PerscomAdapter(self.url, self.token, tenant=self.tenant, notifications=False)

    def settings(self) -> tuple[dict[str, Any], dict[str, str]]:
        table, env = super().settings()
        # the real one allows 1,000 requests a minute; the fake has no limit
        return {**table, "notifications": False, "rate": 0}, env

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_patch("/{version}/assignment-records/batch", self._batch, name="batch")
        router.add_get("/{version}/assignment-records/{record}", self._read, name="read")
        router.add_patch("/{version}/assignment-records/{record}", self._update, name="update")
        router.add_get("/{version}/assignment-records", self._list, name="list")
        router.add_post("/{version}/assignment-records", self._create, name="create")
        router.add_get("/{version}/users/{user}", self._user, name="user")

    def credential(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if self.tenant is not None and request.headers.get("X-Perscom-Id") != self.tenant:
            return None  # the key carries no tenant claim: the header must name it
        return token if scheme.lower() == "bearer" and token == self.token else None

    def user(self, uid: int) -> dict[str, Any]:
        """User ``uid`` as ``GET /users/{id}`` shows it (made on first use)."""
        if uid not in self.users:
            self.users[uid] = {
                "id": uid,
                "name": f"User {uid}",
                **dict.fromkeys(PLACEMENT),
                "updated_at": rfc3339(self.clock.now(), digits=0),
            }
        return self.users[uid]

    def _place(self, record: Mapping[str, Any]) -> None:
        """What creating ``record`` does to its user (PERSCOM's created() observer)."""
        if record.get("type", "primary") != "primary":
            return
        copied = {k: record[k] for k in PLACEMENT if record.get(k) is not None}
        user = self.user(record["user_id"])
        if copied:
            self.users[user["id"]] = {
                **user,
                **copied,
                "updated_at": rfc3339(self.clock.now(), digits=0),
            }

    def unauthorized(self) -> web.Response:
        return self.error(
            401,
            "You are not authenticated. Please provide a valid API key that contains your "
            "PERSCOM ID to continue.",
        )

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        body: dict[str, Any] = {
            "message": message,
            "type": _ERROR_TYPES.get(status, "HttpException"),
            "request_id": str(uuid.uuid4()),
            "trace_id": uuid.uuid4().hex,
            **extra,
        }
        return self.json({"error": body}, status)

    def throttled(self, retry_after: float) -> web.Response:
        resp = self.error(
            429, "You have exceeded the API rate limit. Please wait a minute before trying again."
        )
        resp.headers["Retry-After"] = str(max(1, round(retry_after))) if retry_after else "0"
        return resp

    def seed(self, records: Iterable[Mapping[str, Any]]) -> None:
        now = rfc3339(self.clock.now(), digits=0)
        for r in records:
            rid = r["id"]
            if type(rid) is not int:
                raise ConfigError(f"PERSCOM record ids are integers, got {rid!r}")
            rec: dict[str, Any] = {"id": rid, **dict.fromkeys(_FIELDS)}
            rec["type"] = "primary"
            rec.update({k: v for k, v in r.items() if k in _FIELDS})
            rec["label"] = r.get("label", f"Assignment record #{rid}")
            rec["created_at"] = r.get("created_at", now)
            rec["updated_at"] = r.get("updated_at", now)
            self.records[str(rid)] = rec
            self._next = max(self._next, rid + 1)
            for field, table in _REFS.items():
                if type(rec.get(field)) is int:
                    self.exists[table].add(rec[field])
            if type(rec.get("user_id")) is int:
                self._place(rec)  # seeded records were created once

    def edit(self, key: str) -> None:
        rec = self.records[key]
        n = self.stats.edits[key] + 1
        self.records[key] = {
            **rec,
            "text": f"edited by someone else ({n})",
            "updated_at": rfc3339(self.clock.now(), digits=0),
        }

    # ---- endpoints ------------------------------------------------------------------

    def _check_path(self, request: web.Request) -> web.Response | None:
        if request.match_info["version"] not in _VERSIONS:
            return self.error(404, "The requested resource could not be found.")
        # Unknown `include` values are filtered out, not refused (Laravel Orion).
        return None

    def _find(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        bad = self._check_path(request)
        if bad is not None:
            return bad
        key = request.match_info["record"]
        rec = self.records.get(key) if key.isdigit() else None
        if rec is None:
            return self.error(404, "The requested resource could not be found.")
        return key, rec

    async def _read(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        key, rec = found
        resp = self.json({"data": rec})
        self.after_read(key)
        return resp

    async def _list(self, request: web.Request) -> web.Response:
        bad = self._check_path(request)
        if bad is not None:
            return bad
        records = list(self.records.values())
        return self.json(
            {
                "data": records,
                "meta": {"current_page": 1, "total": len(records), "per_page": len(records)},
            }
        )

    def _invalid(self, errors: dict[str, list[str]]) -> web.Response:
        first = next(iter(errors.values()))[0]
        more = sum(len(v) for v in errors.values()) - 1
        message = first if not more else f"{first} (and {more} more error{'s' * (more > 1)})"
        return self.error(422, message, errors=errors)

    async def _update(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        key, rec = found
        body = await self._body(request)
        changes, errors = validate(body, self.exists)
        _require_user(changes, errors)  # required in an update too (page and OpenAPI file)
        if errors:
            return self._invalid(errors)
        # An update changes the record (and fires webhooks): it moves nobody.
        self.records[key] = rec = self._apply(rec, changes)
        self.stats.writes[key] += 1
        return self.json({"data": rec})

    async def _body(self, request: web.Request) -> Any:
        """The JSON body as Laravel reads it: a body that is missing or not JSON is no
        input at all (``Request::json()`` decodes it to nothing, never a 400), so an
        update changes nothing and a create or a batch lacks its required fields (422)."""
        try:
            return await self.body(request)
        except BadBody:
            return {}

    async def _create(self, request: web.Request) -> web.Response:
        bad = self._check_path(request)
        if bad is not None:
            return bad
        body = await self._body(request)
        changes, errors = validate(body, self.exists)
        _require_user(changes, errors)
        if errors:
            return self._invalid(errors)
        rid = self._next
        self._next += 1
        now = rfc3339(self.clock.now(), digits=0)
        rec: dict[str, Any] = {"id": rid, **dict.fromkeys(_FIELDS), "type": "primary"}
        rec.update(changes)
        rec.update(label=f"Assignment record #{rid}", created_at=now, updated_at=now)
        self.records[str(rid)] = rec
        self._place(rec)
        self.stats.writes[f"users/{rec['user_id']}"] += 1
        return self.json({"data": rec}, 201)

    async def _user(self, request: web.Request) -> web.Response:
        if request.match_info["version"] not in _VERSIONS:
            return self.error(404, "The requested resource could not be found.")
        text = request.match_info["user"]
        uid = int(text) if text.isascii() and text.isdigit() else None
        if uid is None or uid not in self.exists["users"]:
            return self.error(404, "The requested resource could not be found.")
        return self.json({"data": self.user(uid)})

    def _apply(self, rec: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        if all(rec.get(k) == v and type(rec.get(k)) is type(v) for k, v in changes.items()):
            return rec  # Eloquent saves nothing (and keeps updated_at) when nothing changed
        return {**rec, **changes, "updated_at": rfc3339(self.clock.now(), digits=0)}

    async def _batch(self, request: web.Request) -> web.Response:
        bad = self._check_path(request)
        if bad is not None:
            return bad
        body = await self._body(request)
        resources = body.get("resources") if isinstance(body, dict) else None
        if not isinstance(resources, dict) or not resources:
            return self._invalid({"resources": ["The resources field is required."]})
        planned: list[tuple[str, dict[str, Any]]] = []
        errors: dict[str, list[str]] = {}
        for rid, fields in resources.items():
            if rid not in self.records:
                return self.error(404, f"Assignment record {rid} could not be found.")
            changes, errs = validate(fields, self.exists)
            _require_user(changes, errs)
            errors.update({f"resources.{rid}.{k}": v for k, v in errs.items()})
            planned.append((rid, changes))
        if errors:  # all or nothing
            return self._invalid(errors)
        out = []
        for rid, changes in planned:
            self.records[rid] = rec = self._apply(self.records[rid], changes)
            self.stats.writes[rid] += 1
            out.append(rec)
        return self.json({"data": out})
