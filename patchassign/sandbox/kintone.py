"""Fake Kintone record-assignees API (process management).

``PUT /k/v1/record/assignees.json`` (and ``/k/guest/{space}/v1/...``) with ``{app, id,
assignees, revision?}``; ``GET /k/v1/record.json?app=&id=`` reads the record with its
``$revision`` (a string). A ``revision`` that is not the latest is 409 ``GAIA_CO02``;
``-1`` or no revision skips the check. At most 100 assignees. Errors are ``{"id", "code",
"message"[, "errors"]}``. Auth: ``X-Cybozu-API-Token`` (a comma-separated list of at most
9) or ``X-Cybozu-Authorization: base64(login:password)``. An API token belongs to one app
(:meth:`KintoneServer.token_for`, :meth:`KintoneServer.add_token`): a request for an app
none of whose tokens it carries is 400 ``GAIA_IA02``; a token without the permissions
the endpoint needs (view records to read; view records and manage the app to update
assignees, as the vendor's page says) is 403 ``GAIA_NO01``; no known token at all is 401.

``POST /k/v1/bulkRequest.json`` runs up to 20 assignee updates (``{"requests": [{"method":
"PUT", "api": "/k/v1/record/assignees.json", "payload": {...}}]}``) all or nothing: on a
failure the failing request's slot of ``results`` holds its error, the others ``{}``, with
that request's status, and nothing is stored (which status the real service answers a
failed bulk request with is our assumption). ``GET /k/v1/records.json?app=&query=$id in
("1","2")`` reads up to ``limit`` records (100 by default, 500 at most), only the
``fields[n]`` asked for; the sandbox reads no other query form. A bulk request is one
request towards the concurrency limit, as on the real domain.

More than 100 requests in progress at once get 429 (the real domain is then blocked until
concurrency drops); every answer carries ``X-ConcurrencyLimit-Limit`` and
``X-ConcurrencyLimit-Running``. The 429 carries Kintone's code for it, ``GAIA_TO04``,
and no Retry-After. Seed records: ``{"app", "id", "assignees": [codes], "status"?,
"revision"?, "fields"?: {code: {"type", "value"}}, "space"?, "single_assignee"?}``.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from aiohttp import web

from ..changes import Assign, Change
from ..errors import ConfigError
from ..systems import KintoneAdapter
from ._demo import TEAM_A, TEAM_B, person, target
from ._server import BadBody, FakeServer
from ._server import _decode as _decode_json

__all__ = ["KintoneServer"]

MAX_ASSIGNEES = 100
MAX_CONCURRENT = 100
#: Requests in one ``bulkRequest.json``; records one ``records.json`` read may return.
MAX_BULK = 20
MAX_READ = 500
_ASSIGNEES_API = re.compile(r"/k/(?:guest/(?P<space>\d+)/)?v1/record/assignees\.json")
_QUERY = re.compile(
    r'\$id\s+in\s*\((?P<ids>\s*"?-?\d+"?(?:\s*,\s*"?-?\d+"?)*\s*)\)'
    r"(?:\s+limit\s+(?P<limit>\d+))?",
    re.IGNORECASE,
)
#: Updating assignees needs "permission to manage the App and view records" (vendor page).
_MANAGE = frozenset({"view", "manage"})


def _number(value: Any) -> int | None:
    """Kintone accepts an integer or a numeric string for app, id and revision."""
    if type(value) is int:
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


class KintoneServer(FakeServer):
    """Kintone: revision checks, 100 assignees, 100 concurrent requests, coded errors."""

    system: ClassVar[str] = "kintone"
    write_endpoints: ClassVar[frozenset[str]] = frozenset(
        {"update", "update_guest", "bulk", "bulk_guest"}
    )
    max_concurrent: ClassVar[int | None] = MAX_CONCURRENT
    editor_field: ClassVar[str] = "Notes"

    #: Login name for password authentication (the password is the token).
    login = "sandbox-admin"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.users: set[str] = set()  # when not empty, assignees must be among them
        #: API token -> (its app, its permissions: "view", "manage").
        self.app_tokens: dict[str, tuple[int, frozenset[str]]] = {}
        self._own: dict[int, str] = {}  # app -> the sandbox's full-permission token
        self._spaces: dict[int, int | None] = {}  # app -> guest space
        self._single: set[int] = set()  # apps whose records take one assignee

    @classmethod
    def demo_record(cls, i: int) -> dict[str, Any]:
        return {"app": 1, "id": i, "assignees": [TEAM_A[person(i)]], "status": "In progress"}

    @classmethod
    def demo_change(cls, i: int) -> Change:
        to, held = [TEAM_B[target(i)]], [TEAM_A[person(i)]]
        return Assign(system="kintone", record=f"1:{i}", id=f"kintone-{i}", to=to, expect=held)

    def demo_mismatches(self, ids: Iterable[int]) -> Iterator[tuple[int, str]]:
        for i in ids:
            got = self.records[f"1:{i}"]["assignees"]
            if got != [TEAM_B[target(i)]]:
                yield i, f"assignees are {got}, want {[TEAM_B[target(i)]]}"

    def move_elsewhere(self, i: int) -> None:
        self.records[f"1:{i}"]["assignees"] = ["zed"]

    def adapter(self) -> KintoneAdapter:
        return KintoneAdapter(
            self.url,
            app_tokens={app: self.token_for(app) for app in self.apps} or None,
            login=self.login,
            password=self.token,
        )

    def settings(self) -> tuple[dict[str, Any], dict[str, str]]:
        # A Kintone API token belongs to one app: one variable per app.
        env = {f"DEMO_KINTONE_APP{app}_TOKEN": self.token_for(app) for app in self.apps}
        tokens = {str(app): f"DEMO_KINTONE_APP{app}_TOKEN" for app in self.apps}
        return {"url": self.url, "app_tokens_env": tokens}, env

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_put("/k/v1/record/assignees.json", self._update, name="update")
        router.add_put(
            "/k/guest/{space}/v1/record/assignees.json", self._update, name="update_guest"
        )
        router.add_get("/k/v1/record.json", self._read, name="read")
        router.add_get("/k/guest/{space}/v1/record.json", self._read, name="read_guest")
        router.add_get("/k/v1/records.json", self._read_many, name="read_many")
        router.add_get("/k/guest/{space}/v1/records.json", self._read_many, name="read_many_guest")
        router.add_post("/k/v1/bulkRequest.json", self._bulk, name="bulk")
        router.add_post("/k/guest/{space}/v1/bulkRequest.json", self._bulk, name="bulk_guest")

    def token_for(self, app: int) -> str:
        """The sandbox's API token of ``app``, with every permission (made on first use)."""
        if app not in self._own:
            self._own[app] = self.add_token(app)
        return self._own[app]

    def add_token(self, app: int, permissions: Iterable[str] = ("view", "manage")) -> str:
        """A new API token of ``app`` with ``permissions`` (``"view"``, ``"manage"``)."""
        token = secrets.token_urlsafe(24)
        self.app_tokens[token] = (app, frozenset(permissions))
        return token

    @property
    def apps(self) -> list[int]:
        """The apps seeded so far."""
        return sorted(self._spaces)

    def credential(self, request: web.Request) -> str | None:
        tokens = request.headers.get("X-Cybozu-API-Token")
        if tokens is not None:
            listed = [t.strip() for t in tokens.split(",")]
            known = len(listed) <= 9 and any(t in self.app_tokens for t in listed)
            return tokens if known else None
        password = request.headers.get("X-Cybozu-Authorization")
        if password is not None:
            try:
                login, _, secret = base64.b64decode(password, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return login if login == self.login and secret == self.token else None
        return None

    def unauthorized(self) -> web.Response:
        return self.error(401, "Password authentication failed.", code="CB_WA01")

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        code = extra.pop("code", None) or {
            400: "CB_VA01",
            404: "GAIA_RE01",
            405: "CB_NO01",
            409: "GAIA_CO02",
            429: "GAIA_TO04",  # too many concurrent requests to the domain
            503: "CB_UN01",
        }.get(status, "CB_UN01")
        return self.json(
            {"id": secrets.token_hex(10), "code": code, "message": message, **extra}, status
        )

    def throttled(self, retry_after: float) -> web.Response:
        # Kintone sends no Retry-After; clients must back off on their own.
        return self.error(429, "Too many concurrent requests to this domain.")

    def too_busy(self) -> web.Response:
        return self.throttled(0)

    def decorate(self, response: web.StreamResponse) -> None:
        response.headers["X-ConcurrencyLimit-Limit"] = str(MAX_CONCURRENT)
        response.headers["X-ConcurrencyLimit-Running"] = str(self._inflight)

    def seed(self, records: Iterable[Mapping[str, Any]]) -> None:
        for r in records:
            app, rid = r["app"], r["id"]
            if type(app) is not int or type(rid) is not int:
                raise ConfigError(f"Kintone app and record ids are integers, got {app!r}, {rid!r}")
            self._spaces[app] = r.get("space")
            self.token_for(app)
            if r.get("single_assignee"):
                self._single.add(app)
            self.records[f"{app}:{rid}"] = {
                "app": app,
                "id": rid,
                "revision": int(r.get("revision", 1)),
                "status": r.get("status", "In progress"),
                "assignees": list(r.get("assignees", [])),
                "fields": dict(
                    r.get("fields", {self.editor_field: {"type": "SINGLE_LINE_TEXT", "value": ""}})
                ),
            }

    def edit(self, key: str) -> None:
        rec = self.records[key]
        n = self.stats.edits[key] + 1
        fields = {
            **rec["fields"],
            self.editor_field: {"type": "SINGLE_LINE_TEXT", "value": f"edited ({n})"},
        }
        self.records[key] = {**rec, "fields": fields, "revision": rec["revision"] + 1}

    def view(self, key: str) -> dict[str, Any]:
        """A stored record in the shape ``GET record.json`` answers."""
        rec = self.records[key]
        return {
            **rec["fields"],
            "$id": {"type": "__ID__", "value": str(rec["id"])},
            "$revision": {"type": "__REVISION__", "value": str(rec["revision"])},
            "Status": {"type": "STATUS", "value": rec["status"]},
            "Assignee": {
                "type": "STATUS_ASSIGNEE",
                "value": [
                    {"code": c, "name": c.replace(".", " ").title()} for c in rec["assignees"]
                ],
            },
        }

    # ---- endpoints ------------------------------------------------------------------

    def _permit(self, request: web.Request, app: int, need: frozenset[str]) -> web.Response | None:
        """``None`` when the request's credential may do ``need`` in ``app``."""
        header = request.headers.get("X-Cybozu-API-Token")
        if header is None:
            return None  # password authentication: the sandbox's admin may do anything
        granted: set[str] = set()
        matched = False
        for token in header.split(","):
            owner = self.app_tokens.get(token.strip())
            if owner is not None and owner[0] == app:
                matched = True
                granted |= owner[1]
        if not matched:
            return self.error(400, "The API token does not match the app.", code="GAIA_IA02")
        if not need <= granted:
            return self.error(
                403, "Using this API token, you cannot run the specified API.", code="GAIA_NO01"
            )
        return None

    def _locate(
        self,
        request: web.Request,
        app: Any,
        rid: Any,
        need: frozenset[str] = frozenset({"view"}),
        space: str | None = None,
    ) -> str | web.Response:
        errors = {}
        app_n, rid_n = _number(app), _number(rid)
        if app is None:
            errors["app"] = {"messages": ["Required field."]}
        elif app_n is None:
            errors["app"] = {"messages": ["Enter an integer value."]}
        if rid is None:
            errors["id"] = {"messages": ["Required field."]}
        elif rid_n is None:
            errors["id"] = {"messages": ["Enter an integer value."]}
        if errors:
            return self.error(400, "Missing or invalid input.", errors=errors)
        assert app_n is not None
        assert rid_n is not None
        if space is None:
            space = request.match_info.get("space")
        refused = self._app(request, app_n, need, space)
        if refused is not None:
            return refused
        key = f"{app_n}:{rid_n}"
        if key not in self.records:
            return self.error(
                404, f"The specified record (ID: {rid_n}) is not found.", code="GAIA_RE01"
            )
        return key

    def _app(
        self, request: web.Request, app_n: int, need: frozenset[str], space: str | None
    ) -> web.Response | None:
        """``None`` when ``app_n`` exists in ``space`` (``None`` or ``""``: in no guest
        space) and the credential may ``need``."""
        if app_n not in self._spaces or (
            str(self._spaces[app_n]) != space if space else self._spaces[app_n] is not None
        ):
            return self.error(
                404,
                f"The app (ID: {app_n}) not found. The app may have been deleted.",
                code="GAIA_AP01",
            )
        return self._permit(request, app_n, need)

    async def _read(self, request: web.Request) -> web.Response:
        found = self._locate(request, request.query.get("app"), request.query.get("id"))
        if isinstance(found, web.Response):
            return found
        resp = self.json({"record": self.view(found)})
        self.after_read(found)
        return resp

    async def _update(self, request: web.Request) -> web.Response:
        try:
            body = await self.body(request)
        except BadBody as e:
            return self.error(400, str(e), code="CB_IJ01")
        done = self._assignees(request, body, {})
        if isinstance(done, web.Response):
            return done
        key, rec = done
        self.records[key] = rec
        self.stats.writes[key] += 1
        return self.json({"revision": str(rec["revision"])})

    def _assignees(
        self,
        request: web.Request,
        body: Any,
        staged: Mapping[str, dict[str, Any]],
        space: str | None = None,
    ) -> tuple[str, dict[str, Any]] | web.Response:
        """Check one assignees update against the record as ``staged`` holds it (earlier
        requests of the same bulk request) or as stored; the record after it, not stored."""
        if not isinstance(body, dict):
            return self.error(400, "The request body must be a JSON object.", code="CB_IJ01")
        found = self._locate(request, body.get("app"), body.get("id"), _MANAGE, space)
        if isinstance(found, web.Response):
            return found
        key = found
        rec = staged.get(key) or self.records[key]
        assignees = body.get("assignees")
        problem = None
        if assignees is None:
            problem = "Required field."
        elif not isinstance(assignees, list) or not all(isinstance(a, str) for a in assignees):
            problem = "Specify an array of user codes."
        elif len(assignees) > MAX_ASSIGNEES:
            problem = f"Up to {MAX_ASSIGNEES} assignees can be specified."
        elif rec["app"] in self._single and len(assignees) > 1:
            problem = "Only one assignee can be specified for this status."
        elif self.users and (unknown := [a for a in assignees if a not in self.users]):
            problem = f"The user ({unknown[0]}) is not found or cannot be an assignee."
        if problem is not None:
            return self.error(
                400, "Missing or invalid input.", errors={"assignees": {"messages": [problem]}}
            )
        if "revision" in body and body["revision"] is not None:
            revision = _number(body["revision"])
            if revision is None:
                return self.error(
                    400,
                    "Missing or invalid input.",
                    errors={"revision": {"messages": ["Enter an integer value."]}},
                )
            if revision != -1 and revision != rec["revision"]:
                return self.error(
                    409,
                    "The revision is not the latest. Someone may update a record after you opened it.",
                    code="GAIA_CO02",
                )
        return key, {
            **rec,
            "assignees": list(dict.fromkeys(assignees or ())),
            "revision": rec["revision"] + 1,
        }

    async def _bulk(self, request: web.Request) -> web.Response:
        """``POST bulkRequest.json``: up to 20 requests, all or nothing. On a failure the
        failing request's slot holds its error and the others ``{}``, with the failing
        request's status; nothing is stored. Only assignee updates are run here."""
        try:
            body = await self.body(request)
        except BadBody as e:
            return self.error(400, str(e), code="CB_IJ01")
        items = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK:
            return self.error(
                400,
                "Missing or invalid input.",
                errors={"requests": {"messages": [f"Specify 1 to {MAX_BULK} requests."]}},
            )
        staged: dict[str, dict[str, Any]] = {}
        written: list[str] = []
        results: list[dict[str, Any]] = []
        for n, item in enumerate(items):
            done = self._bulk_one(request, item, staged)
            if isinstance(done, web.Response):
                assert isinstance(done.body, bytes)
                slots: list[Any] = [{}] * len(items)
                slots[n] = _decode_json(done.body)
                return self.json({"results": slots}, done.status)
            key, rec = done
            staged[key] = rec
            written.append(key)
            results.append({"revision": str(rec["revision"])})
        self.records.update(staged)
        for key in written:
            self.stats.writes[key] += 1
        return self.json({"results": results})

    def _bulk_one(
        self, request: web.Request, item: Any, staged: Mapping[str, dict[str, Any]]
    ) -> tuple[str, dict[str, Any]] | web.Response:
        if not isinstance(item, dict):
            return self.error(400, "Each request must be an object.", code="CB_VA01")
        method, api = item.get("method"), item.get("api")
        match = _ASSIGNEES_API.fullmatch(api) if isinstance(api, str) else None
        if method != "PUT" or match is None:
            return self.error(
                400,
                f"The sandbox runs only PUT record/assignees.json in a bulk request, got "
                f"{method!r} {api!r}.",
                code="CB_VA01",
            )
        # The api's own path says the space ("": none), not the bulk request's URL.
        return self._assignees(request, item.get("payload"), staged, match["space"] or "")

    async def _read_many(self, request: web.Request) -> web.Response:
        """``GET records.json?app=&query=$id in ("1", ...)&fields[0]=...``: the records
        the query names (the only query form the sandbox reads), at most ``limit`` (100
        by default, 500 at most) in ``$id`` order, only the ``fields`` asked for."""
        app = request.query.get("app")
        app_n = _number(app)
        if app_n is None:
            message = "Required field." if app is None else "Enter an integer value."
            return self.error(
                400, "Missing or invalid input.", errors={"app": {"messages": [message]}}
            )
        refused = self._app(request, app_n, frozenset({"view"}), request.match_info.get("space"))
        if refused is not None:
            return refused
        parsed = _QUERY.fullmatch(request.query.get("query", "").strip())
        if parsed is None:
            return self.error(
                400,
                'The sandbox reads only queries of the form $id in ("1", "2") [limit N].',
                errors={"query": {"messages": ["Unsupported query."]}},
            )
        limit = int(parsed["limit"] or 100)
        if not 1 <= limit <= MAX_READ:
            return self.error(
                400,
                "Missing or invalid input.",
                errors={"query": {"messages": [f"limit must be 1 to {MAX_READ}."]}},
            )
        ids = sorted({int(x) for x in re.findall(r'"?(-?\d+)"?', parsed["ids"])})
        keys = [f"{app_n}:{i}" for i in ids if f"{app_n}:{i}" in self.records][:limit]
        fields = [v for k, v in request.query.items() if re.fullmatch(r"fields\[\d+\]", k)]
        records = []
        for key in keys:
            view = self.view(key)
            records.append({k: v for k, v in view.items() if k in fields} if fields else view)
        resp = self.json({"records": records, "totalCount": None})
        for key in keys:
            self.after_read(key)
        return resp
