"""Kintone record assignees: ``PUT /k/v1/record/assignees.json``.

The adapter reads the record first (``$revision`` and the current assignees, from the
``STATUS_ASSIGNEE`` field whatever its code), then writes with that ``revision``: a stale
revision is ``GAIA_CO02`` (a recoverable conflict). Errors are classified by their
``code``, not only the HTTP status. At most 100 assignees. Kintone allows at most 100
concurrent requests per domain (the rest get 429 and no Retry-After): keep concurrency
well under that.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

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
    Limits,
    Outcome,
    Prepared,
    Retry,
    Secret,
    SystemConfig,
    Unchanged,
    assignees,
    printable,
    read_config,
    secret,
    segment,
)

__all__ = ["MAX_ASSIGNEES", "KintoneAdapter"]

MAX_ASSIGNEES = 100
#: Records one records.json read returns; API requests in one bulkRequest.json.
MAX_READ = 500
MAX_BULK = 20
_CONFLICT = frozenset({"GAIA_CO02"})
_AUTH = frozenset({"GAIA_IA02", "CB_WA01", "CB_AU01", "GAIA_NO01", "CB_NO02"})
_NOT_FOUND = frozenset({"GAIA_RE01", "GAIA_AP01"})
#: Too many concurrent requests for the domain (the 429 carries no Retry-After).
_THROTTLED = frozenset({"GAIA_TO04"})
_encode = msgspec.json.Encoder().encode


def _tokens(given: str | Secret | list[str | Secret], what: str) -> list[Secret]:
    listed = given if isinstance(given, list) else [given]
    out: list[Secret] = []
    for t in listed:
        text = t.reveal() if isinstance(t, Secret) else t
        out += [Secret(part.strip()) for part in text.split(",") if part.strip()]
    if not 1 <= len(out) <= 9:
        raise ConfigError(f"kintone: {what}: between 1 and 9 API tokens")
    return out


class KintoneConfig(SystemConfig, kw_only=True, forbid_unknown_fields=True):
    """``[systems.kintone]``: tokens per app (``app_tokens_env``), shared tokens
    (``api_token_env``) or password auth (``login``, ``password_env``); ``app``, ``space``."""

    app_tokens_env: dict[Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,17}$")], EnvVar] = (
        msgspec.field(default_factory=dict)
    )
    api_token_env: EnvVar | None = None
    login: str | None = None
    password_env: EnvVar | None = None
    app: int | None = None
    space: int | None = None


class KintoneAdapter(BaseAdapter):
    """Kintone (``https://<subdomain>.kintone.com``); API token or password auth.

    Args:
        base_url: The domain root.
        app_tokens: App id -> that app's API token (or several of it): a Kintone API
            token belongs to one app, and a request carries the tokens of the apps it
            touches (comma-separated, at most 9).
        api_token: One token, or several (comma-separated, at most 9), sent as they are
            for every app that ``app_tokens`` does not name (one app, or a combined
            header of several apps' tokens).
        login: With ``password``: password authentication instead of tokens (for the
            apps no token is given for).
        password: The login's password.
        app: Default app id for records given as a bare record id.
        space: Guest space id: requests go to ``/k/guest/{space}/v1/...``.
    """

    system: ClassVar[str] = "kintone"
    idempotent: ClassVar[bool] = True
    versioned: ClassVar[bool] = True
    actions: ClassVar[frozenset[str]] = frozenset({"assign", "unassign"})
    #: Past 100 concurrent requests Kintone blocks the whole domain: stay at half.
    limits: ClassVar[Limits] = Limits(concurrency=50)

    config: ClassVar[type[SystemConfig]] = KintoneConfig

    @classmethod
    def from_config(cls, table: Mapping[str, Any], credentials: Credentials) -> KintoneAdapter:
        conf = read_config(KintoneConfig, table)
        per_app: dict[int, str | Secret | list[str | Secret]] = {
            int(app): credentials.need(var, f"app_tokens_env.{app}")
            for app, var in conf.app_tokens_env.items()
        }
        return cls(
            conf.url,
            app_tokens=per_app or None,
            api_token=credentials.get(conf.api_token_env, "api_token_env"),
            login=conf.login,
            password=credentials.get(conf.password_env, "password_env"),
            app=conf.app,
            space=conf.space,
        )

    def __init__(
        self,
        base_url: str,
        *,
        app_tokens: Mapping[int, str | Secret | list[str | Secret]] | None = None,
        api_token: str | Secret | list[str | Secret] | None = None,
        login: str | None = None,
        password: str | Secret | None = None,
        app: int | None = None,
        space: int | None = None,
    ) -> None:
        super().__init__(base_url, {"Accept": "application/json"})
        self._tokens: dict[int, list[Secret]] = {}
        for app_id, given in (app_tokens or {}).items():
            if type(app_id) is not int or app_id <= 0:
                raise ConfigError(f"kintone: app_tokens: app ids are integers, got {app_id!r}")
            self._tokens[app_id] = _tokens(given, f"app {app_id}")
        self._shared = _tokens(api_token, "api_token") if api_token is not None else None
        self._password: Secret | None = None
        if login is not None and password is not None:
            raw = f"{login}:{secret(password).reveal()}".encode()
            self._password = Secret(base64.b64encode(raw).decode())
        if not (self._tokens or self._shared or self._password):
            raise ConfigError("kintone: give app_tokens, api_token, or login and password")
        self.app = app
        self._prefix = f"/k/guest/{segment(space)}/v1" if space is not None else "/k/v1"

    def auth_headers(self) -> dict[str, str]:
        """Every credential this adapter may send (a request carries only its apps')."""
        out: dict[str, str] = {}
        tokens = [t for ts in self._tokens.values() for t in ts] + (self._shared or [])
        if tokens:
            out["X-Cybozu-API-Token"] = ",".join(dict.fromkeys(t.reveal() for t in tokens))
        if self._password is not None:
            out["X-Cybozu-Authorization"] = self._password.reveal()
        return out

    def app_auth(self, *apps: int) -> dict[str, str] | None:
        """The auth header of a request that touches ``apps``: their tokens, combined
        (comma-separated, at most 9), else password authentication; ``None``: this
        adapter holds no credential for one of them."""
        tokens: list[Secret] = []
        for app in dict.fromkeys(apps):
            own = self._tokens.get(app, self._shared)
            if own is None:
                if self._password is None:
                    return None
                return {"X-Cybozu-Authorization": self._password.reveal()}
            tokens += own
        joined = list(dict.fromkeys(t.reveal() for t in tokens))
        if len(joined) > 9:
            return None
        return {"X-Cybozu-API-Token": ",".join(joined)}

    def _request(self, method: str, path: str, app: int, body: Any = None) -> HttpRequest:
        auth = self.app_auth(app)
        if auth is None:
            raise self.invalid(f"no API token for kintone app {app} (add it to app_tokens)")
        headers = {**self._static, **auth}
        if body is None:
            return HttpRequest(method, self.base + path, headers)
        headers["Content-Type"] = "application/json"
        return HttpRequest(method, self.base + path, headers, _encode(body))

    def probe(self) -> HttpRequest:
        """Read record 1 of an app the adapter has a token for (the configured app, else
        the first): a 404 (``GAIA_RE01``) still proves the token is accepted."""
        app = self.app or next(iter(self._tokens), 1)
        query = urlencode({"app": app, "id": 1})
        return self._request("GET", f"{self._prefix}/record.json?{query}", app)

    def probed(self, response: HttpResponse) -> Current | Retry | Failed:
        if response.status < 300:
            return Current(None)
        outcome = self._error(response)
        if isinstance(outcome, Failed) and not outcome.auth and response.status in (404, 400):
            return Current(None)  # no such record or app: the token itself was accepted
        return outcome if not isinstance(outcome, Conflict) else Current(None)

    def _ids(self, change: Change) -> tuple[int, int]:
        record = change.record
        app: Any = self.app
        if isinstance(record, str) and ":" in record:
            app_text, _, record = record.partition(":")
            app = int(app_text) if app_text.isascii() and app_text.isdigit() else None
            if app is None:
                raise self.invalid(
                    f"kintone record {change.record!r}: app must be an integer", "record"
                )
        if isinstance(record, str) and record.isascii() and record.isdigit():
            record = int(record)
        if type(record) is not int or record <= 0:
            raise self.invalid(
                f"a kintone record is '<app>:<id>' or an id with a configured app, got {change.record!r}",
                "record",
            )
        if app is None:
            raise self.invalid(
                "no app: write the record as '<app>:<id>' or configure app", "record"
            )
        return app, record

    def key(self, change: Change) -> str:
        app, rid = self._ids(change)
        return f"{app}:{rid}"

    def check(self, change: Change) -> None:
        self.check_action(change)
        app, _ = self._ids(change)
        if self.app_auth(app) is None:
            raise self.invalid(
                f"no API token for kintone app {app}: add it to app_tokens "
                "(a Kintone API token belongs to one app)",
                "record",
            )
        if isinstance(change, Assign):
            to = assignees(change.to) or []
            if len(to) > MAX_ASSIGNEES:
                raise self.invalid(
                    f"kintone takes at most {MAX_ASSIGNEES} assignees, got {len(to)}", "to"
                )
            if change.to_type != "user":
                raise self.invalid(
                    "kintone assignees are users (login names), not teams", "to_type"
                )
        if isinstance(change, Assign | Unassign) and (change.comment or change.by):
            raise self.invalid(
                "kintone assignee changes carry no comment or author",
                "comment" if change.comment else "by",
            )

    def needs_read(self, change: Change) -> bool:
        return True  # the revision, and whether the change is already in place

    def read(self, change: Change) -> HttpRequest:
        app, rid = self._ids(change)
        query = urlencode({"app": app, "id": rid})
        return self._request("GET", f"{self._prefix}/record.json?{query}", app)

    def current(self, change: Change, response: HttpResponse) -> Current | Retry | Failed:
        if response.status == 200:
            body = response.json()
            record = body.get("record") if isinstance(body, dict) else None
            if isinstance(record, dict):
                revision = record.get("$revision", {}).get("value")
                return Current(record, str(revision) if revision is not None else None)
            return self.not_the_answer(response, '{"record": ...}')
        outcome = self._error(response)
        return (
            outcome if not isinstance(outcome, Conflict) else Failed(outcome.reason, outcome.status)
        )

    @staticmethod
    def holders(record: dict[str, Any]) -> list[str] | None:
        """The codes in the record's STATUS_ASSIGNEE field (``None``: no such field)."""
        for field in record.values():
            if isinstance(field, dict) and field.get("type") == "STATUS_ASSIGNEE":
                return [str(u.get("code")) for u in field.get("value") or [] if isinstance(u, dict)]
        return None

    def holder(self, record: Any) -> dict[str, Any] | None:
        held = self.holders(record) if isinstance(record, dict) else None
        return None if held is None else {"to": held}

    def assigned(self, change: Change) -> dict[str, Any]:
        return {"to": assignees(change.to) if isinstance(change, Assign) else []}

    def prepare(self, change: Change, current: Current | None) -> Prepared:
        if current is None:
            return Failed("a kintone update needs the current record")
        held = self.holders(current.record)
        if held is None:
            return Failed(
                "the record has no assignee field: is process management on for this app?"
            )
        target = assignees(change.to) if isinstance(change, Assign) else []
        assert target is not None
        if sorted(held) == sorted(target):
            return Unchanged(current.version)
        expect = assignees(change.expect) if isinstance(change, Assign | Unassign) else None
        if expect is not None and sorted(held) != sorted(expect):
            return Conflict(f"assigned to {held}, expected {expect}", recoverable=False)
        app, rid = self._ids(change)
        body: dict[str, Any] = {"app": app, "id": rid, "assignees": target}
        if current.version is not None:
            body["revision"] = current.version
        return self._request("PUT", f"{self._prefix}/record/assignees.json", app, body)

    # -- batching: records.json for reads, bulkRequest.json for writes -------------------

    batch_max: ClassVar[tuple[int, int]] = (MAX_READ, MAX_BULK)

    def batch_group(self, request: HttpRequest, write: bool) -> Any:
        """Requests of one app go together (its token; a read's query names one app)."""
        if write:
            if request.method != "PUT" or not request.url.endswith("/record/assignees.json"):
                return None
            body = msgspec.json.decode(request.body or b"null")
            return ("w", body.get("app")) if isinstance(body, dict) else None
        if request.method != "GET" or "/record.json?" not in request.url:
            return None
        return ("r", parse_qs(urlsplit(request.url).query).get("app", [None])[0])

    def combine(self, requests: list[HttpRequest], write: bool) -> HttpRequest:
        first = requests[0]
        if write:
            bulk = [
                {"method": "PUT", "api": f"{self._prefix}/record/assignees.json",
                 "payload": msgspec.json.decode(r.body or b"null")}
                for r in requests
            ]  # fmt: skip
            url = f"{self.base}{self._prefix}/bulkRequest.json"
            return HttpRequest("POST", url, first.headers, _encode({"requests": bulk}))
        queries = [parse_qs(urlsplit(r.url).query) for r in requests]
        ids = ", ".join(f'"{q["id"][0]}"' for q in queries)
        query = urlencode({
            "app": queries[0]["app"][0],
            "query": f"$id in ({ids}) limit {len(requests)}",
        })  # fmt: skip
        return HttpRequest("GET", f"{self.base}{self._prefix}/records.json?{query}", first.headers)

    def split(
        self, requests: list[HttpRequest], write: bool, response: HttpResponse
    ) -> list[HttpResponse | None] | None:
        body = response.json()
        headers = {"Content-Type": "application/json"}
        if write:
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list) or len(results) != len(requests):
                return None
            if response.status == 200:
                return [HttpResponse(200, headers, _encode(r)) for r in results]
            # All or nothing: the failing request's slot holds its error, the others {}.
            return [
                HttpResponse(response.status, headers, _encode(r)) if r else None for r in results
            ]
        records = body.get("records") if isinstance(body, dict) else None
        if response.status != 200 or not isinstance(records, list):
            return None
        by_id = {str(r.get("$id", {}).get("value")): r for r in records if isinstance(r, dict)}
        out: list[HttpResponse | None] = []
        for r in requests:
            rid = parse_qs(urlsplit(r.url).query)["id"][0]
            record = by_id.get(rid)
            if record is None:
                missing = {"code": "GAIA_RE01", "id": "", "message": f"The specified record (ID: {rid}) is not found."}  # fmt: skip
                out.append(HttpResponse(404, headers, _encode(missing)))
            else:
                out.append(HttpResponse(200, headers, _encode({"record": record})))
        return out

    def outcome(self, change: Change, response: HttpResponse) -> Outcome:
        if response.status < 300:
            body = response.json()
            revision = body.get("revision") if isinstance(body, dict) else None
            if response.status != 200 or revision is None:
                return self.not_the_answer(response, '{"revision": ...}')
            return Applied(str(revision), body)
        return self._error(response, write=True)

    def _error(self, response: HttpResponse, *, write: bool = False) -> Conflict | Retry | Failed:
        body = response.json()
        code = body.get("code") if isinstance(body, dict) else None
        code = printable(code[:100]) if isinstance(code, str) else None
        message = self.error_message(response)
        if code in _CONFLICT:
            return Conflict(f"{code}: {message}", response.status)
        if code in _AUTH:
            return Failed(f"{code}: not authorised: {message}", response.status, auth=True)
        if code in _THROTTLED:
            return Retry(f"{code}: throttled: {message}", response.status, throttled=True)
        if code in _NOT_FOUND:
            return Failed(f"{code}: {message}", response.status)
        if isinstance(body, dict) and isinstance(body.get("errors"), dict):
            details = "; ".join(
                f"{k}: {' '.join(m for m in v['messages'] if isinstance(m, str))}"
                for k, v in body["errors"].items()
                if isinstance(v, dict) and isinstance(v.get("messages"), list)
            )
            message = f"{message} ({printable(details[:500])})" if details else message
        return self.classify(response, f"{code}: {message}" if code else message, write=write)
