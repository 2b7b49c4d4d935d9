"""The adapter contract and what the five adapters share. Pure: no I/O, bytes in and out.

An adapter turns a :class:`~patchassign.changes.Change` into HTTP requests and HTTP
responses into outcomes. The dispatcher drives it::

    if adapter.needs_read(change):
        current = adapter.current(change, send(adapter.read(change)))   # Current | Retry | Failed
    step = adapter.prepare(change, current)     # HttpRequest | Unchanged | Conflict | Failed
    outcome = adapter.outcome(change, send(step))   # Applied | Retry | Conflict | Failed

On ``Conflict(recoverable=True)`` it reads again and prepares again (re-diff). After an
ambiguous failure (timeout, dropped connection, a 5xx that may have applied) it reads
before any resend, and ``prepare`` then sees whether the change is already in place. A
write that is not idempotent (``idempotent``, or ``idempotent_for(change)`` where it
differs by change) is sent again only when that read proves the record untouched since the
write was prepared (the same version token in :class:`Current`); otherwise the change ends
unknown, not resent. ``versioned`` says whether a late write could still land unseen: the
dispatcher lets it settle before reading back, and a resume holds such items.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

from ..errors import ConfigError, InvalidChange, PatchError
from ..pointer import find_key, parse_tokens

if TYPE_CHECKING:
    from ..changes import Change

__all__ = [
    "Adapter",
    "Applied",
    "BaseAdapter",
    "Conflict",
    "Credentials",
    "Current",
    "Failed",
    "HttpRequest",
    "HttpResponse",
    "Limits",
    "Outcome",
    "Prepared",
    "Retry",
    "Secret",
    "SystemConfig",
    "Unchanged",
    "check_header",
    "parse_retry_after",
    "segment",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Secret:
    """A credential that never shows itself in ``repr``, ``str``, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        text: object = value  # untyped callers (a config, a script) pass anything
        if not isinstance(text, str) or not text:
            got = "an empty string" if text == "" else type(text).__name__
            raise ConfigError(f"a credential must be a non-empty string, got {got}")
        check_header("credential", text)
        self._value = text

    def reveal(self) -> str:
        """The secret itself, for building a request header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def secret(value: str | Secret) -> Secret:
    return value if isinstance(value, Secret) else Secret(value)


def check_header(name: str, value: str) -> str:
    """``value`` if it is safe as an HTTP header value; CR, LF and other controls are refused.

    Raises:
        ConfigError: The value holds a control character (header injection).
    """
    text: object = value  # untyped callers pass anything
    if not isinstance(text, str):
        raise ConfigError(f"header {name}: the value must be a string, got {type(text).__name__}")
    if _CONTROL.search(text.replace("\t", " ")):
        raise ConfigError(f"header {name}: value contains a control character (CR/LF refused)")
    return value


def segment(value: str | int) -> str:
    """One URL path segment, percent-encoded so that it cannot change the path.

    ``/``, ``?``, ``#``, ``%`` and spaces are encoded; a segment of dots only (``..``)
    is encoded too, so it cannot climb the path.
    """
    text = quote(str(value), safe="")
    if text.strip(".") == "":
        text = text.replace(".", "%2E")
    return text


def base_url(url: str) -> str:
    """A validated base URL without a trailing slash.

    Raises:
        ConfigError: Not an absolute http(s) URL, or it carries a query or fragment.
    """
    check_header("base_url", url)
    try:
        parts = urlsplit(url)
    except ValueError:  # brackets that do not hold an IPv6 address: "http://[::1", "[zz]"
        raise ConfigError(f"base_url is not a URL: {url!r}") from None
    try:
        has_userinfo = bool(parts.username or parts.password) or "@" in parts.netloc
    except ValueError:
        has_userinfo = "@" in parts.netloc
    if has_userinfo:  # checked first: the other messages print the URL
        raise ConfigError("base_url must not embed credentials; use the auth settings")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"base_url must be an absolute http(s) URL, got {url!r}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError(f"base_url must not hold spaces or control characters: {url!r}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"base_url's port must be a number from 1 to 65535: {url!r}")
    if not parts.hostname:
        raise ConfigError(f"base_url names no host: {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"base_url must not have a query or fragment: {url!r}")
    return url.rstrip("/")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date.

    Returns ``None`` when absent or unreadable; never negative; capped at one day.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is true; float("²") fails
        return min(float(value), 86_400.0)
    if not value.isascii():
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), 86_400.0)


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How hard one system may be driven.

    Attributes:
        concurrency: Requests in flight at once, at most.
        rate: Requests per second (reads and writes), or ``None`` for no limit.
        burst: Requests that may go at once before ``rate`` applies.
        batch: Changes one request may carry where the adapter can combine them (its
            ``batch_max``); ``None``: the adapter's own maximum; ``0`` or ``1``: one
            change per request.
        linger: Seconds a batch waits for more changes before it goes.
    """

    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 32
    # From one request in about three hours to a million a second: past either end a
    # value is a slip (``inf``, ``1e-9``), not a limit.
    rate: Annotated[float, msgspec.Meta(ge=1e-4, le=1_000_000)] | None = None
    burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    batch: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None
    linger: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.02


#: The name of an environment variable (credentials are read from the environment).
EnvVar = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class SystemConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What every ``[systems.<name>]`` table holds; each system's module subclasses it
    with its own settings (credentials as ``*_env``: names of environment variables).

    Attributes:
        url: The system's base URL.
        concurrency: Requests in flight at once (default: the system's own limit).
        rate: Requests per second; ``0`` turns off the system's default rate limit.
        burst: Requests that may go at once before ``rate`` applies.
        batch: Changes per request where the system has a bulk endpoint (``0``: off).
        linger: Seconds a batch waits for more changes (default 0.02).
    """

    url: str
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    rate: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    batch: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None
    linger: Annotated[float, msgspec.Meta(ge=0, le=10)] | None = None


class Credentials:
    """Reads credentials named in a configuration from the environment, as ``Secret``."""

    __slots__ = ("_env",)

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, var: str | None, what: str) -> Secret | None:
        """The value of ``var`` (``None`` when no variable is named).

        Raises:
            ConfigError: ``var`` is named but not set (or empty).
        """
        if var is None:
            return None
        value = self._env.get(var)
        if not value:
            raise ConfigError(f"{what}: environment variable {var} is not set")
        return Secret(value)

    def need(self, var: str, what: str) -> Secret:
        """The value of ``var``, which must be set."""
        value = self.get(var, what)
        assert value is not None
        return value


_C = TypeVar("_C", bound="SystemConfig")


def plain(message: str) -> str:
    """msgspec's "Object contains unknown field `x` - at `$.systems.kintone`" made plain:
    ``systems.kintone: Object contains unknown field `x```."""
    reason, sep, where = message.rpartition(" - at `$")
    if not sep:
        return message
    path = where.rstrip("`").lstrip(".")
    return f"{path}: {reason}" if path else reason


def read_config(kind: type[_C], table: Mapping[str, Any]) -> _C:
    """``table`` as ``kind``, or a :class:`ConfigError` that names the key at fault."""
    try:
        return msgspec.convert(dict(table), kind)
    except msgspec.ValidationError as e:
        raise ConfigError(plain(str(e)) + unknown_hint(str(e), kind)) from None


def unknown_hint(message: str, kind: type[Any]) -> str:
    """For msgspec's "unknown field `x`" on a table of ``kind``: the keys it takes, and
    where a secret goes instead when ``x_env`` is one of them (``""`` otherwise)."""
    found = re.search(r"unknown field `([^`]*)`", message)
    fields = getattr(kind, "__struct_fields__", None)
    if found is None or not fields or " - at `$." in message:  # a nested table's key
        return ""
    key = found.group(1)
    if f"{key}_env" in fields:
        return (
            f' (secrets are read from the environment: {key}_env = "VARIABLE" names the '
            "variable that holds it)"
        )
    return f" (known: {', '.join(sorted(fields))})"


def keyword_options(cls: type[Any], table: Mapping[str, Any], credentials: Credentials) -> Any:
    """``cls(url, **options)`` from a ``[systems.<name>]`` table: every key but the limits
    passed as a keyword argument, a key ending in ``_env`` read from that environment
    variable and passed without the suffix (the convention for adapters of your own).

    Raises:
        ConfigError: A missing credential, or options the class does not take.
    """
    limits = set(SystemConfig.__struct_fields__) - {"url"}
    url = table.get("url")
    if not isinstance(url, str):
        raise ConfigError("url: a base URL (text) is required")
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key in limits or key == "url":
            continue
        if key.endswith("_env"):
            if not isinstance(value, str):
                raise ConfigError(f"{key} must name an environment variable")
            options[key[: -len("_env")]] = credentials.need(value, key).reveal()
        else:
            options[key] = value
    try:
        return cls(url, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{cls.__module__}:{cls.__qualname__}: {e}") from None


class HttpRequest(msgspec.Struct, frozen=True):
    """A request to send: ``url`` is fully percent-encoded (send it as encoded)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None

    def __repr__(self) -> str:
        # Header values may be credentials: names only.
        return f"HttpRequest({self.method} {self.url}, headers={sorted(self.headers)})"


class HttpResponse(msgspec.Struct, frozen=True):
    """A response as the adapter sees it; header names are matched case-insensitively."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    @classmethod
    def from_json(
        cls, status: int, data: Any, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """A response with ``data`` encoded as a JSON body (for tests and mock transports)."""
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, _encode(data))

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is not None:
            return value
        lower = name.lower()
        for k, v in self.headers.items():
            if k.lower() == lower:
                return v
        return None

    def json(self) -> Any:
        """The body as JSON, or ``None`` when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return _decode(self.body)
        except msgspec.DecodeError:
            return None


class Current(msgspec.Struct, frozen=True):
    """The record as read now, and its version token (``None``: the system has none)."""

    record: Any
    version: str | None = None


class Applied(msgspec.Struct, frozen=True):
    """The system accepted the change. ``record``: what it returned (the successor, for a
    delegation)."""

    version: str | None = None
    record: Any = None


class Unchanged(msgspec.Struct, frozen=True):
    """The record already is as the change wants it; nothing was sent."""

    version: str | None = None
    reason: str = "already in the requested state"


class Retry(msgspec.Struct, frozen=True):
    """Try again later. ``after``: the server's wait in seconds, if it said.

    ``ambiguous``: the change may have been applied (a 5xx other than 503): read before
    resending. ``throttled``: the system refused for load (429 or the system's own
    code): the dispatcher slows the whole system down when most answers are like this.
    """

    reason: str
    status: int | None = None
    after: float | None = None
    ambiguous: bool = False
    throttled: bool = False


class Conflict(msgspec.Struct, frozen=True):
    """The record changed under us, or no longer fits the change.

    ``recoverable``: re-reading and preparing again may succeed (a stale version);
    otherwise the change does not apply to the record as it is (report, do not force).
    """

    reason: str
    status: int | None = None
    recoverable: bool = True


class Failed(msgspec.Struct, frozen=True):
    """Permanent failure: sending again cannot help (bad input, auth, not found).

    ``auth``: the system refused the credentials or their permissions (401, 403 or the
    system's own codes). After a few records in a row the dispatcher stops the system.
    ``redirected``: the system answered with a redirect (3xx), which is not followed: its
    configured URL is likely not the API's. After a few records in a row, the same.
    """

    reason: str
    status: int | None = None
    auth: bool = False
    redirected: bool = False


Outcome = Applied | Retry | Conflict | Failed
Prepared = HttpRequest | Unchanged | Conflict | Failed


@runtime_checkable
class Adapter(Protocol):
    """What the dispatcher needs from a system adapter. Implementations do no I/O."""

    @property
    def system(self) -> str:
        """The system's name (``"kintone"``...)."""

    @property
    def idempotent(self) -> bool:
        """Resending a write after an ambiguous failure cannot apply it twice. When false,
        a write is resent only on proof that the first did not land (see the module)."""

    @property
    def versioned(self) -> bool:
        """The system checks a version token on write (optimistic concurrency)."""

    @property
    def limits(self) -> Limits:
        """How hard the system may be driven by default (its documented limits)."""

    def check(self, change: Change) -> None:
        """Refuse a change this system cannot do, before anything is sent.

        Raises:
            InvalidChange: The action, record id or values are not supported.
        """

    def needs_read(self, change: Change) -> bool:
        """Whether :meth:`prepare` needs the current record (a version token, a diff)."""

    def read(self, change: Change) -> HttpRequest:
        """The request that reads the change's record."""

    def current(self, change: Change, response: HttpResponse) -> Current | Retry | Failed:
        """The record and version from a read response (or why there is none)."""

    def prepare(self, change: Change, current: Current | None) -> Prepared:
        """The write request, or the reason none is needed (or possible)."""

    def outcome(self, change: Change, response: HttpResponse) -> Outcome:
        """What a write response means."""


class BaseAdapter(abc.ABC):
    """Shared checks, JSON helpers and status classification; subclasses are adapters."""

    system: ClassVar[str]
    idempotent: ClassVar[bool] = True
    versioned: ClassVar[bool] = False
    #: Default limits; a system with documented limits overrides this.
    limits: ClassVar[Limits] = Limits()
    actions: ClassVar[frozenset[str]]
    #: The system's ``[systems.<name>]`` table (``None``: the keyword-argument
    #: convention of :meth:`from_config`).
    config: ClassVar[type[SystemConfig] | None] = None
    #: How many reads and how many writes one request may carry, where the system has a
    #: bulk endpoint (``0``: none). See :meth:`batch_group`, :meth:`combine`, :meth:`split`.
    batch_max: ClassVar[tuple[int, int]] = (0, 0)

    # -- batching: optional; the dispatcher knows no system by name -------------------

    def batch_group(self, request: HttpRequest, write: bool) -> Any:
        """Which of this system's requests may go together: those of one group (any
        hashable). ``None``: this one goes alone."""
        return None

    def combine(self, requests: list[HttpRequest], write: bool) -> HttpRequest:
        """One request doing what ``requests`` (of one group, at most ``batch_max``) do."""
        raise NotImplementedError

    def split(
        self, requests: list[HttpRequest], write: bool, response: HttpResponse
    ) -> list[HttpResponse | None] | None:
        """Each request's own answer from the combined one, in the shape the request alone
        would have got, so that :meth:`current` and :meth:`outcome` read it as usual.

        A slot holds ``None`` when that request was not carried out because another one
        failed (an all-or-nothing batch): the dispatcher sends it again, without the one
        that failed. ``None`` as a whole: the answer says nothing per request (a 429, a
        5xx, a refusal): every request gets it as it is, and a 4xx of a larger batch is
        split in halves until the one at fault is alone.
        """
        return None

    @classmethod
    def from_config(cls, table: Mapping[str, Any], credentials: Credentials) -> BaseAdapter:
        """The adapter a ``[systems.<name>]`` table describes.

        The default is the convention for adapters of your own (:func:`keyword_options`);
        built-in systems override it with their own :class:`SystemConfig`.

        Raises:
            ConfigError: A missing credential, or options the class does not take.
        """
        adapter: BaseAdapter = keyword_options(cls, table, credentials)
        return adapter

    def __init__(self, base: str, headers: Mapping[str, str]) -> None:
        self.base = base_url(base)
        for name, value in headers.items():
            check_header(name, value)
        self._static = dict(headers)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base}>"

    def idempotent_for(self, change: Change) -> bool:
        """Whether ``change``'s write may be sent twice safely: :attr:`idempotent`, unless
        a system has writes of both kinds (PERSCOM: an update is, a new record is not)."""
        return self.idempotent

    @abc.abstractmethod
    def check(self, change: Change) -> None: ...

    @abc.abstractmethod
    def needs_read(self, change: Change) -> bool: ...

    @abc.abstractmethod
    def read(self, change: Change) -> HttpRequest: ...

    @abc.abstractmethod
    def current(self, change: Change, response: HttpResponse) -> Current | Retry | Failed: ...

    @abc.abstractmethod
    def prepare(self, change: Change, current: Current | None) -> Prepared: ...

    @abc.abstractmethod
    def outcome(self, change: Change, response: HttpResponse) -> Outcome: ...

    # -- helpers ---------------------------------------------------------------------

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The static headers (auth included) plus ``extra``, each value checked."""
        out = {**self._static, **self.auth_headers()}
        if extra:
            for k, v in extra.items():
                out[k] = check_header(k, v)
        return out

    def auth_headers(self) -> dict[str, str]:
        return {}

    def json_request(
        self, method: str, path: str, body: Any, extra: Mapping[str, str] | None = None
    ) -> HttpRequest:
        headers = self.headers({"Content-Type": "application/json", **(extra or {})})
        return HttpRequest(method, self.base + path, headers, _encode(body))

    def get(self, path: str) -> HttpRequest:
        return HttpRequest("GET", self.base + path, self.headers({"Accept": "application/json"}))

    def check_action(self, change: Change) -> None:
        action = str(type(change).__struct_config__.tag)
        if change.system != self.system:
            raise InvalidChange(
                f"this change is for {change.system}, not {self.system}",
                field="system",
                system=change.system,
            )
        if action not in self.actions:
            raise InvalidChange(
                f"{self.system} does not support {action!r} (supported: "
                f"{', '.join(sorted(self.actions))})",
                field="action",
                system=self.system,
            )

    def invalid(self, reason: str, field: str | None = None) -> InvalidChange:
        return InvalidChange(reason, field=field, system=self.system)

    @staticmethod
    def classify(response: HttpResponse, message: str, *, write: bool = False) -> Retry | Failed:
        """The generic reading of a non-success status; ``write``: the answer to a write.

        A redirect is not followed (a write's body and credentials would go wherever the
        server says): it fails the change, and a few in a row stop the system, except a
        ``303 See Other`` to a write, which says the server took the write and put its
        answer elsewhere (RFC 9110, 15.4.4): ambiguous, the record is read back.
        """
        status = response.status
        if status == 429:
            return Retry(
                f"throttled: {message}",
                status,
                parse_retry_after(response.header("Retry-After")),
                throttled=True,
            )
        if status in (502, 503, 504):
            return Retry(
                f"unavailable: {message}",
                status,
                parse_retry_after(response.header("Retry-After")),
                ambiguous=status != 503,
            )
        if status >= 500:
            return Retry(f"server error {status}: {message}", status, None, ambiguous=True)
        if status in (401, 403):
            return Failed(f"not authorised ({status}): {message}", status, auth=True)
        if 300 <= status < 400:
            if status == 303 and write:
                location = response.header("Location")
                where = f" to {_location(location)}" if location else ""
                return Retry(
                    f"HTTP 303 See Other{where} (not followed): the write was taken, its "
                    "answer is elsewhere; reading the record back",
                    status,
                    ambiguous=True,
                )
            return Failed(message, status, redirected=True)
        return Failed(message, status)

    def key(self, change: Change) -> str:
        """The record's canonical key: two ways of writing one record give one key, so
        that changes to it keep their order (and the journal sees one record).

        The default is the record id as text; systems whose ids have several forms
        (Kintone's ``"7:5"`` and ``5`` with a configured app; numeric ids) override it.
        """
        return str(change.record)

    @staticmethod
    def not_the_answer(response: HttpResponse, expected: str) -> Retry:
        """A success status without the system's documented success body.

        A proxy, a WAF or a maintenance page can answer 200 without forwarding the
        request; a 204 can follow an applied write. Neither proves anything: the outcome
        is ambiguous, so the record is read back before anything is resent or reported.
        The same answer to a read is retried (it is not the record).
        """
        kind = response.header("Content-Type") or "no content type"
        return Retry(
            f"HTTP {response.status} without {expected} ({kind}, {len(response.body)} bytes): "
            "not the system's answer (a proxy or a maintenance page?); reading the record back",
            response.status,
            ambiguous=True,
        )

    def probe(self) -> HttpRequest:
        """A harmless authenticated read for a preflight check (:meth:`Dispatcher.check`).

        The default reads a record id that names nothing: a system checks credentials
        before it looks a record up, so ``404`` proves both reachability and access.
        Systems with a cheaper or surer read override this.
        """
        return self.get(self.probe_path())

    def probe_path(self) -> str:
        """The path :meth:`probe` reads (subclasses give one of their read endpoints)."""
        raise NotImplementedError

    def probed(self, response: HttpResponse) -> Current | Retry | Failed:
        """What a :meth:`probe` answer says: ``Current`` (reachable, authorised), or why not."""
        if response.status < 300 or response.status == 404:
            return Current(None)
        return self.classify(response, self.error_message(response))

    # -- before and after (the journal keeps them; undo and leftovers read them) --------

    def holder(self, record: Any) -> dict[str, Any] | None:
        """Who holds ``record`` now, in the plan's terms: ``{"to": ...}`` (``None`` when
        unassigned), plus ``to_type`` where it is not a user. ``None``: not readable."""
        return None

    def assigned(self, change: Change) -> dict[str, Any]:
        """What an :class:`~patchassign.changes.Assign` or ``Unassign`` leaves, in the
        terms of :meth:`holder`."""
        from ..changes import Assign

        if not isinstance(change, Assign):
            return {"to": None}
        out: dict[str, Any] = {"to": change.to}
        if change.to_type != "user":
            out["to_type"] = change.to_type
        return out

    def touched(self, change: Change, record: Any) -> dict[str, Any] | None:
        """The values in ``record`` of the fields ``change`` touches (what it held before
        a write, what it holds after, what a conflict found): ``{"to": ...}`` for the
        assignment actions, ``{field: value}`` for field updates (a field the record does
        not have is left out). ``None`` when the record cannot tell.
        """
        from ..changes import Merge, Patch, SetFields

        if not isinstance(record, dict):
            return None
        if not isinstance(change, Merge | Patch | SetFields):
            return self.holder(record)
        out: dict[str, Any] = {}
        for name in _field_names(change):
            try:
                key = find_key(record, name)
            except PatchError:
                return None
            if key is not None:
                out[key] = record[key]
        return out

    def wanted(self, change: Change, record: Any) -> dict[str, Any] | None:
        """The touched fields as ``change`` leaves them, from ``record`` as it was before
        (in the terms of :meth:`touched`); ``None`` when that cannot be worked out."""
        from ..changes import Assign, Merge, Patch, SetFields, Unassign

        if isinstance(change, Assign | Unassign):
            return self.assigned(change)
        if not isinstance(change, Merge | Patch | SetFields) or not isinstance(record, dict):
            return {"to": change.to} if hasattr(change, "to") else None
        from ..merge import apply_merge_patch
        from ..patch import apply_patch

        try:
            if isinstance(change, Merge):
                new = apply_merge_patch(record, change.merge, case_insensitive=True)
            elif isinstance(change, Patch):
                new = apply_patch(record, change.patch, case_insensitive=True)
            else:
                new = dict(record)
                for name, value in change.state.items():
                    new[find_key(new, name) or name] = value
        except PatchError:
            return None
        return self.touched(change, new)

    def error_message(self, response: HttpResponse) -> str:
        """The server's error message from its error body, or a summary of the status."""
        body = response.json()
        found = _find_message(body)
        if found:
            return printable(found[:500])
        if 300 <= response.status < 400:
            location = response.header("Location")
            if location:
                # A base URL that is not the API's (http for https, a moved host, a sign-on
                # page in the way): where it points is the fix. Not followed: a write's body
                # and credentials would go wherever the server says.
                return (
                    f"HTTP {response.status}, redirected to {_location(location)} (not "
                    "followed: if that is the system, configure its URL as that)"
                )
        return f"HTTP {response.status}"


def _location(location: str) -> str:
    """A redirect's target without what can carry secrets (user info, the query, the
    fragment: a sign-on page's query can hold tokens), printable and short."""
    try:
        parts = urlsplit(location.strip())
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host += f":{parts.port}"
        where = urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "a location that is not a URL"
    if parts.query or parts.fragment:
        where += "?..."
    return printable(where[:200])


def in_place(record: Any, patch: list[dict[str, Any]]) -> bool:
    """Whether a patch whose ``test`` operations fail on ``record`` is already in effect
    there: its other operations would change nothing. (After an unconfirmed write, the
    read-back finds the record as the patch left it, and its tests, written against the
    record before, fail: that is the patch applied, not a conflict.)"""
    from .._json import json_equal
    from ..patch import apply_patch

    ops = [op for op in patch if op.get("op") != "test"]
    if not ops:
        return False
    try:
        return json_equal(apply_patch(record, ops, case_insensitive=True), record)
    except PatchError:
        return False


def _field_names(change: Any) -> list[str]:
    """The top-level fields a merge, set or patch change names."""
    from ..changes import Merge, SetFields

    if isinstance(change, Merge):
        return list(change.merge)
    if isinstance(change, SetFields):
        return list(change.state)
    names: list[str] = []
    for op in change.patch:
        for member in ("path", "from"):
            text = op.get(member)
            if isinstance(text, str):
                try:
                    tokens = parse_tokens(text, case_insensitive=True)
                except PatchError:
                    continue
                if tokens and tokens[0] not in names:
                    names.append(tokens[0])
    return names


def printable(text: str) -> str:
    """A server's text made safe to show: characters that are not printable (a terminal's
    escape sequences, line breaks, NUL) are written as escapes (``\\x1b``), so that an
    answer cannot rewrite the screen or a log line it is shown in."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _find_message(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("message", "ErrorMessage", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict):
                inner = _find_message(value)
                if inner:
                    return inner
    return None


def assignees(value: str | list[str] | None) -> list[str] | None:
    """An ``Assign.to``/``expect`` value as a list."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def single(value: str | list[str], system: str, field: str) -> str:
    """One assignee, for systems that take exactly one."""
    if isinstance(value, str):
        return value
    if len(value) == 1:
        return value[0]
    raise InvalidChange(f"{system} takes exactly one assignee", field=field, system=system)
