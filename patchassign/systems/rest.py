"""The generic adapter: an in-house REST system described by configuration, not code.

Most organisations have a system of their own that holds assignments: a ticket tracker,
a case system, a work queue with a JSON API. This adapter drives any of them that reads a
record with ``GET`` and writes it with one of the three standard writes::

    [systems.helpdesk]
    adapter = "rest"
    url = "https://helpdesk.example.com/api"
    record = "/tickets/{id}"           # the record's URL under url; {id} is percent-encoded
    write = "merge-patch"              # PATCH application/merge-patch+json (RFC 7396),
                                       # "json-patch" (PATCH, RFC 6902) or "put" (the record)
    assignee = "/assignee"             # JSON Pointer to the assignee in the record
    version = "etag"                   # ETag + If-Match; or a JSON Pointer to a version
                                       # field sent back; or "none"
    token_env = "HELPDESK_TOKEN"       # sent as "Authorization: Bearer <token>"
    error_message = "/error/message"   # JSON Pointer to the message in error bodies

Every change reads the record first: the write is computed from it (a diff, so a record
already as wanted is ``unchanged`` and nothing is sent) and carries its version token, so a
concurrent change is a conflict (``409`` or ``412``: re-read, re-diffed, sent again) and a
resend after a lost answer cannot apply twice. With ``version = "none"`` the system has no
token: a JSON Patch write then pins the old values it changes with ``test`` operations,
and the other writes are last-writer-wins (say so to whoever owns the system).

Actions: ``assign`` (one assignee, or a list where the system keeps a list), ``unassign``
(the assignee becomes ``null``; a merge patch removes the member, which RFC 7396 says is
the same), ``merge``, ``patch`` and ``set``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from ..changes import Assign, Change, Merge, Patch, SetFields, Unassign
from ..errors import ConfigError, InvalidPatch, NotRepresentable, PatchConflict, PatchError
from ..merge import apply_merge_patch, make_merge_patch
from ..patch import JsonPatch, Test, apply_patch
from ..pointer import format_tokens, parse_tokens, resolve_tokens
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
    in_place,
    printable,
    read_config,
    secret,
    segment,
)

__all__ = ["RestAdapter", "RestConfig"]

Write = Literal["merge-patch", "json-patch", "put"]
_CONTENT_TYPES: dict[str, str] = {
    "merge-patch": "application/merge-patch+json",
    "json-patch": "application/json-patch+json",
    "put": "application/json",
}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class RestConfig(SystemConfig, kw_only=True, forbid_unknown_fields=True):
    """``[systems.<name>]`` with ``adapter = "rest"``: see the module's docstring."""

    record: str
    read: str | None = None
    write: Write = "merge-patch"
    assignee: str = "/assignee"
    data: str = ""
    version: str = "etag"
    token_env: EnvVar | None = None
    auth_header: str = "Authorization"
    auth_scheme: str | None = "Bearer"
    error_message: str | None = None
    conflict_status: list[Annotated[int, msgspec.Meta(ge=400, le=499)]] = msgspec.field(
        default_factory=lambda: [409, 412]
    )
    headers: dict[str, str] = msgspec.field(default_factory=dict)


def _template(text: str, what: str) -> str:
    """A path template under the base URL, with exactly one ``{id}``."""
    check_header(what, text)
    if not text.startswith("/") or text.count("{id}") != 1:
        raise ConfigError(f"{what} must start with '/' and hold {{id}} once, got {text!r}")
    if "{id}" in text.partition("?")[2] or "#" in text:
        raise ConfigError(f"{what}: {{id}} belongs in the path, and no fragment: {text!r}")
    return text


def _pointer(text: str, what: str) -> tuple[str, ...]:
    try:
        return parse_tokens(text, case_insensitive=True)
    except PatchError as e:
        raise ConfigError(f"{what}: not a JSON Pointer: {getattr(e, 'reason', e)}") from None


class RestAdapter(BaseAdapter):
    """An in-house REST system, described by its configuration (see the module).

    Args:
        base_url: The API root; ``record`` and ``read`` are appended to it.
        system: The system's name in plans and the configuration (the table's name).
        record: The record's path template, e.g. ``/tickets/{id}`` (the write goes here).
        read: The read's path template (default: ``record``); it may add a query.
        write: ``"merge-patch"``, ``"json-patch"`` or ``"put"``.
        assignee: JSON Pointer to the assignee in the record.
        data: JSON Pointer to the record inside read and write answers (``""``: the body
            is the record).
        version: ``"etag"``, ``"none"``, or a JSON Pointer to a version field in the record.
        token: The credential, sent in ``auth_header`` after ``auth_scheme``.
        auth_header, auth_scheme: Where and how the token goes (``auth_scheme=None``: the
            bare token, as for ``X-Api-Key``).
        error_message: JSON Pointer to the message in error bodies (default: a
            ``message`` or ``error`` member, as for the other systems).
        conflict_status: Statuses that mean "changed since read" (default 409 and 412).
        headers: Static headers sent with every request (not for credentials).
    """

    system: ClassVar[str] = "rest"
    idempotent: ClassVar[bool] = True
    versioned: ClassVar[bool] = True
    actions: ClassVar[frozenset[str]] = frozenset({"assign", "unassign", "merge", "patch", "set"})
    config: ClassVar[type[SystemConfig]] = RestConfig

    @classmethod
    def for_system(
        cls, name: str, table: Mapping[str, Any], credentials: Credentials
    ) -> RestAdapter:
        """The adapter of a ``[systems.<name>]`` table that says ``adapter = "rest"``."""
        conf = read_config(RestConfig, {k: v for k, v in table.items() if k != "adapter"})
        if not re.match(r"^[a-z][a-z0-9_-]{0,63}$", name):
            raise ConfigError(f"{name!r} is not a system name (lower case, digits, - and _)")
        return cls(
            conf.url,
            system=name,
            record=conf.record,
            read=conf.read,
            write=conf.write,
            assignee=conf.assignee,
            data=conf.data,
            version=conf.version,
            token=credentials.get(conf.token_env, "token_env"),
            auth_header=conf.auth_header,
            auth_scheme=conf.auth_scheme,
            error_message=conf.error_message,
            conflict_status=conf.conflict_status,
            headers=conf.headers,
        )

    @classmethod
    def from_config(cls, table: Mapping[str, Any], credentials: Credentials) -> RestAdapter:
        return cls.for_system(cls.system, table, credentials)

    def __init__(
        self,
        base_url: str,
        *,
        system: str = "rest",
        record: str,
        read: str | None = None,
        write: Write = "merge-patch",
        assignee: str = "/assignee",
        data: str = "",
        version: str = "etag",
        token: str | Secret | None = None,
        auth_header: str = "Authorization",
        auth_scheme: str | None = "Bearer",
        error_message: str | None = None,
        conflict_status: Iterable[int] = (409, 412),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, {"Accept": "application/json", **(headers or {})})
        # One class, many systems: the name and whether there is a token are per instance.
        self.system = system  # type: ignore[misc]
        version = _version_keyword(version)
        self.versioned = version != "none"  # type: ignore[misc]
        if write not in _CONTENT_TYPES:
            raise ConfigError(f"write must be one of {', '.join(_CONTENT_TYPES)}, got {write!r}")
        self.write = write
        self._record = _template(record, "record")
        self._read = _template(read, "read") if read is not None else self._record
        self._assignee = _pointer(assignee, "assignee")
        if not self._assignee:
            raise ConfigError("assignee must point into the record, not be the whole of it")
        self._data = _pointer(data, "data")
        self._etag = version == "etag"
        self._version = () if version in ("etag", "none") else _pointer(version, "version")
        if version not in ("etag", "none") and not self._version:
            raise ConfigError("version: 'etag', 'none' or a JSON Pointer to a field")
        self._message = None if error_message is None else _pointer(error_message, "error_message")
        self._conflicts = frozenset(conflict_status)
        if not _TOKEN.match(auth_header):
            raise ConfigError(f"auth_header is not a header name: {auth_header!r}")
        self._auth: dict[str, Secret] = {}
        if token is not None:
            value = secret(token).reveal()
            self._auth[auth_header] = Secret(f"{auth_scheme} {value}" if auth_scheme else value)

    def __repr__(self) -> str:
        return f"<RestAdapter {self.system} {self.base}{self._record} write={self.write}>"

    def auth_headers(self) -> dict[str, str]:
        return {k: v.reveal() for k, v in self._auth.items()}

    # -- addresses -------------------------------------------------------------------

    def _url(self, template: str, change: Change) -> str:
        record = change.record
        if isinstance(record, str) and not record.strip():
            raise self.invalid("a record id must not be blank", "record")
        return self.base + template.replace("{id}", segment(record))

    def probe_path(self) -> str:
        return self._read.replace("{id}", "patchassign-preflight")

    # -- the contract ----------------------------------------------------------------

    def check(self, change: Change) -> None:
        self.check_action(change)
        self._url(self._record, change)
        if isinstance(change, Assign) and change.to_type != "user":
            raise self.invalid(
                f"{self.system} is configured with one assignee field; to_type "
                f"{change.to_type!r} is not supported",
                "to_type",
            )
        if isinstance(change, Patch):
            try:
                JsonPatch(change.patch, case_insensitive=True)
            except InvalidPatch as e:
                raise self.invalid(str(e), "patch") from None

    def needs_read(self, change: Change) -> bool:
        return True  # the write is a diff against the record, with its version token

    def read(self, change: Change) -> HttpRequest:
        return HttpRequest(
            "GET", self._url(self._read, change), self.headers({"Accept": "application/json"})
        )

    def current(self, change: Change, response: HttpResponse) -> Current | Retry | Failed:
        if response.status == 200:
            record = self._record_of(response)
            if not isinstance(record, dict):
                return self.not_the_answer(response, "the record (a JSON object)")
            if self._etag:
                tag = response.header("ETag")
                if not tag:
                    return Failed(
                        f"{self.system} sent no ETag with the record: configure version as "
                        "a field's JSON Pointer, or 'none'"
                    )
                if tag.startswith("W/"):
                    # If-Match compares strongly (RFC 9110 13.1.1): a weak tag sent back
                    # never matches, so every write would be refused (412) and retried.
                    return Failed(
                        f"{self.system} sent a weak ETag ({tag}), which cannot guard a write: "
                        "If-Match compares strong tags only, so every write would get 412. "
                        "Have the server send strong ETags (a compressing proxy may weaken "
                        "them), or configure version as a field's JSON Pointer, or 'none'"
                    )
                return Current(record, tag)
            if self._version:
                try:
                    value = resolve_tokens(record, self._version, case_insensitive=True)
                except PatchError:
                    return Failed(f"the record has no version at {format_tokens(self._version)}")
                return Current(record, _encode(value).decode())
            return Current(record)
        return self._error(response)

    def _record_of(self, response: HttpResponse) -> Any:
        body = response.json()
        try:
            return resolve_tokens(body, self._data, case_insensitive=True)
        except PatchError:
            return None

    def holder(self, record: Any) -> dict[str, Any] | None:
        if not isinstance(record, dict):
            return None
        try:
            held = resolve_tokens(record, self._assignee, case_insensitive=True)
        except PatchConflict:
            held = None
        return {"to": held}

    def _target(self, change: Change, record: dict[str, Any]) -> Any:
        """The record as ``change`` wants it (raises PatchError when it cannot be)."""
        where = format_tokens(self._assignee)
        if isinstance(change, Assign):
            ops: list[dict[str, Any]] = [{"op": "add", "path": where, "value": change.to}]
            return apply_patch(record, ops, case_insensitive=True)
        if isinstance(change, Unassign):
            if self.write == "merge-patch":  # RFC 7396: null removes the member
                merged = _put_in({}, self._assignee, None)
                return apply_merge_patch(record, merged, case_insensitive=True)
            ops = [{"op": "add", "path": where, "value": None}]
            return apply_patch(record, ops, case_insensitive=True)
        if isinstance(change, SetFields):
            ops = [{"op": "add", "path": f"/{k}", "value": v} for k, v in change.state.items()]
            return apply_patch(record, ops, case_insensitive=True)
        if isinstance(change, Merge):
            return apply_merge_patch(record, change.merge, case_insensitive=True)
        assert isinstance(change, Patch)
        return apply_patch(record, change.patch, case_insensitive=True)

    def prepare(self, change: Change, current: Current | None) -> Prepared:
        if current is None or not isinstance(current.record, dict):
            return Failed(f"a {self.system} update needs the current record")
        record = current.record
        if isinstance(change, Assign | Unassign) and change.expect is not None:
            held = (self.holder(record) or {}).get("to")
            want = None if isinstance(change, Unassign) else change.to
            if _people(held) not in (_people(want), _people(change.expect)):
                reason = f"assigned to {held!r}, expected {change.expect!r}"
                return Conflict(reason, recoverable=False)
        try:
            target = self._target(change, record)
        except PatchConflict as e:
            if isinstance(change, Patch) and in_place(record, change.patch):
                return Unchanged(current.version)
            return Conflict(f"the change does not apply to the record: {e}", recoverable=False)
        except PatchError as e:
            return Failed(str(e))
        try:
            body = self._body(change, record, target, current.version)
        except NotRepresentable as e:
            return Failed(f"{self.system} takes merge patches, which cannot say this: {e}")
        except PatchError as e:
            return Failed(str(e))
        if body is None:
            return Unchanged(current.version)
        extra = {"Content-Type": _CONTENT_TYPES[self.write]}
        if self._etag and current.version is not None:
            try:
                extra["If-Match"] = check_header("If-Match", current.version)
            except ConfigError:
                return Failed("the record's ETag holds control characters; refusing to send it")
        method = "PUT" if self.write == "put" else "PATCH"
        return HttpRequest(
            method, self._url(self._record, change), self.headers(extra), _encode(body)
        )

    def _body(
        self, change: Change, record: dict[str, Any], target: Any, version: str | None
    ) -> Any:
        """The write's body, or ``None`` when the record already is as wanted."""
        if self.write == "json-patch":
            guard = getattr(change, "guard", False) or not self.versioned
            ops = _diff(record, target, guard)
            if ops is None:
                return None
            if isinstance(change, Patch):  # the caller's own operations, behind our guards
                own = JsonPatch(change.patch, case_insensitive=True)
                ops = JsonPatch([op for op in ops if isinstance(op, Test)]) + own if guard else own
            if self._version and version is not None:
                pin = Test(path=format_tokens(self._version), value=_value(version))
                ops = JsonPatch([pin]) + ops
            return ops.to_list()
        if target == record:
            return None
        if self.write == "put":
            return target
        patch = make_merge_patch(record, target)
        if self._version and version is not None:  # the version as read, sent back
            patch = _put_in(patch, self._version, _value(version))
        return patch

    def outcome(self, change: Change, response: HttpResponse) -> Outcome:
        if response.status < 300:
            if response.status == 204 or (not response.body and response.status < 300):
                return Applied(response.header("ETag"))
            record = self._record_of(response)
            if not isinstance(record, dict):
                return self.not_the_answer(response, "the record (a JSON object)")
            version: str | None = response.header("ETag") if self._etag else None
            if self._version:
                try:
                    value = resolve_tokens(record, self._version, case_insensitive=True)
                    version = _encode(value).decode()
                except PatchError:
                    version = None
            return Applied(version, record)
        if response.status in self._conflicts:
            return Conflict(f"changed since read: {self.error_message(response)}", response.status)
        if response.status == 428:
            return Failed(
                f"{self.system} requires a precondition (428): configure version = 'etag' "
                "or a version field",
                428,
            )
        return self._error(response, write=True)

    def _error(self, response: HttpResponse, *, write: bool = False) -> Retry | Failed:
        return self.classify(response, self.error_message(response), write=write)

    def error_message(self, response: HttpResponse) -> str:
        if self._message is not None:
            try:
                found = resolve_tokens(response.json(), self._message, case_insensitive=True)
            except PatchError:
                found = None
            if isinstance(found, str) and found:
                return printable(found[:500])
        return super().error_message(response)


def _value(version: str) -> Any:
    """A version field's value from its text in :class:`Current` (JSON; else the text)."""
    try:
        return _decode(version)
    except msgspec.DecodeError:
        return version


def _diff(record: Any, target: Any, guard: bool) -> JsonPatch | None:
    from ..diff import make_patch

    ops = make_patch(record, target, guard=guard)
    return ops if any(not isinstance(op, Test) for op in ops) else None


def _put_in(obj: dict[str, Any], tokens: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``obj`` with ``value`` at ``tokens`` (objects made along the way);
    ``obj``'s own subtrees are copied where changed, never mutated."""
    head, rest = tokens[0], tokens[1:]
    child = obj.get(head)
    return {
        **obj,
        head: _put_in(child if isinstance(child, dict) else {}, rest, value) if rest else value,
    }


def _people(value: Any) -> list[Any]:
    """An assignee value (one, a list, or none) as a list, for comparing."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _version_keyword(version: str) -> str:
    """``version`` with its keywords matched without regard to case (``"ETag"`` is the
    ETag, not a field named so); a near miss of one without a leading ``/`` (``"etga"``,
    ``"non"``) is refused rather than read as a field's pointer that no record holds
    (every change would fail on it, at run time)."""
    if not isinstance(version, str):
        raise ConfigError(f"version: 'etag', 'none' or a JSON Pointer to a field, got {version!r}")
    folded = version.strip().casefold()
    if folded in ("etag", "none"):
        return folded
    if not version.startswith("/"):
        near = difflib.get_close_matches(folded, ["etag", "none"], n=1, cutoff=0.6)
        if near:
            raise ConfigError(
                f"version: {version!r} is neither 'etag' nor 'none' (did you mean "
                f"{near[0]!r}?); a field's JSON Pointer starts with '/': '/{version}'"
            )
    return version
