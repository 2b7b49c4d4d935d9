"""The systems configuration file (TOML): where the systems are, how to log in, how hard to push.

Credentials are never in the file: it names the environment variables that hold them
(``token_env = "KINTONE_TOKEN"``), and they are read into :class:`~patchassign.systems.Secret`
values when the file is loaded. See ``docs/configuration.md``::

    concurrency = 64

    [retry]
    attempts = 6
    deadline = 300

    [systems.kintone]
    url = "https://acme.kintone.com"
    app_tokens_env = { 7 = "KINTONE_APP7_TOKEN" }   # a Kintone API token belongs to one app
    app = 7
    concurrency = 50                     # per-system limits: concurrency, rate, burst
"""

from __future__ import annotations

import base64
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from ._scrub import Scrubber as _Scrubber
from .dispatch import Limits, RetryPolicy
from .errors import ConfigError
from .systems import (
    Adapter,
    FindableAdapter,
    KintoneAdapter,
    MaxsightAdapter,
    PerscomAdapter,
    Secret,
    SuperOfficeAdapter,
)

__all__ = ["Config", "SystemConfig", "load_config", "parse_config"]

_Env = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class _System(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    #: Requests per second; ``0`` turns off the default rate limit.
    rate: Annotated[float, msgspec.Meta(ge=0)] | None = None
    burst: Annotated[int, msgspec.Meta(ge=1)] | None = None


class PerscomConfig(_System, kw_only=True, forbid_unknown_fields=True):
    token_env: _Env
    tenant: str | None = None
    version: str = "v2"
    notifications: bool = True


class MaxsightConfig(_System, kw_only=True, forbid_unknown_fields=True):
    api_key_env: _Env
    assigned_by: str | None = None


class KintoneConfig(_System, kw_only=True, forbid_unknown_fields=True):
    app_tokens_env: dict[Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,17}$")], _Env] = (
        msgspec.field(default_factory=dict)
    )
    api_token_env: _Env | None = None
    login: str | None = None
    password_env: _Env | None = None
    app: int | None = None
    space: int | None = None


class SuperOfficeConfig(_System, kw_only=True, forbid_unknown_fields=True):
    token_env: _Env | None = None
    user: str | None = None
    password_env: _Env | None = None
    ticket_env: _Env | None = None
    app_token_env: _Env | None = None
    if_unmodified_since: bool = False


class FindableConfig(_System, kw_only=True, forbid_unknown_fields=True):
    token_env: _Env


class CustomConfig(_System, kw_only=True, forbid_unknown_fields=False):
    """A system of your own: ``adapter = "package.module:AdapterClass"``.

    The adapter is built as ``AdapterClass(url, **options)``: every other key of the
    table except the limits is passed as a keyword argument, and a key ending in ``_env``
    is read from that environment variable and passed without the suffix
    (``token_env = "ACME_TOKEN"`` passes ``token=<value>``).
    """

    adapter: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]


SystemConfig = (
    PerscomConfig
    | MaxsightConfig
    | KintoneConfig
    | SuperOfficeConfig
    | FindableConfig
    | CustomConfig
)
_BUILT_IN: dict[str, type[_System]] = {
    "perscom": PerscomConfig,
    "maxsight": MaxsightConfig,
    "kintone": KintoneConfig,
    "superoffice": SuperOfficeConfig,
    "findable": FindableConfig,
}
_NAME = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]


class _File(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    systems: dict[_NAME, dict[str, Any]]
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    verify_tls: bool = True
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)


class Config:
    """A loaded configuration: adapters with their credentials, limits, retry policy."""

    def __init__(
        self,
        adapters: dict[str, Adapter],
        limits: dict[str, Limits],
        retry: RetryPolicy,
        concurrency: int,
        verify_tls: bool,
        secrets: tuple[Secret, ...] = (),
        broken: dict[str, str] | None = None,
    ) -> None:
        self.adapters = adapters
        #: Systems whose configuration cannot be used (a credential variable not set...),
        #: with why, when loaded with ``lazy=True``: an error only for a plan that uses one.
        self.broken = broken or {}
        self._secrets = secrets
        self._scrub = _Scrubber(s.reveal() for s in secrets)
        self.limits = limits
        self.retry = retry
        self.concurrency = concurrency
        self.verify_tls = verify_tls

    def __repr__(self) -> str:
        return f"<Config systems={sorted(self.adapters)} concurrency={self.concurrency}>"

    def scrub(self, text: str) -> str:
        """``text`` with every configured credential replaced by ``********``.

        Defence in depth for what servers send back: an error message that echoes a
        token must not carry it into the journal, the results, the report or a log line.
        Every form a credential is sent in is caught: as it is, each part of a
        comma-separated list, percent-encoded, base64 of ``login:password`` (Basic and
        Kintone password auth), and any 8 or more characters of one of those (what a
        cut message leaves of a key).
        """
        return self._scrub(text)


def load_config(
    path: str | Path, env: Mapping[str, str] | None = None, *, lazy: bool = False
) -> Config:
    """Read a TOML configuration file; credentials come from ``env`` (``os.environ``).

    ``lazy``: a system whose adapter cannot be built (its credential variable is not set,
    its URL is wrong) is left out and listed in :attr:`Config.broken`, so that a plan
    that does not use it runs without it.

    Raises:
        ConfigError: The file is missing or not TOML, a setting is unknown or of the
            wrong type (named by its dotted path), or a credential variable is not set.
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read configuration file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, env, source=str(path), lazy=lazy)


def parse_config(
    data: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    *,
    source: str = "config",
    lazy: bool = False,
) -> Config:
    """A :class:`Config` from already parsed TOML data (see :func:`load_config`)."""
    try:
        file = msgspec.convert(data, _File)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {_where(str(e))}") from None
    env = os.environ if env is None else env
    adapters: dict[str, Adapter] = {}
    limits: dict[str, Limits] = {}
    read: list[Secret] = []
    broken: dict[str, str] = {}
    for name, table in file.systems.items():
        kind = _BUILT_IN.get(name, CustomConfig)
        try:
            conf: SystemConfig = msgspec.convert(table, kind)  # type: ignore[assignment]
        except msgspec.ValidationError as e:
            reason = _where(str(e))
            if kind is CustomConfig and "adapter" in reason:
                reason += (
                    f" ({name!r} is not a built-in system: give "
                    "adapter = 'package.module:AdapterClass')"
                )
            raise ConfigError(f"{source}: systems.{name}: {reason}") from None
        try:
            adapters[name] = _adapter(name, conf, env, table)
            read += _secrets_of(table, env)
        except ConfigError as e:
            adapters.pop(name, None)
            if lazy:
                broken[name] = f"{source}: systems.{name}: {e}"
                continue
            raise ConfigError(f"{source}: systems.{name}: {e}") from None
        base = adapters[name].limits
        limits[name] = Limits(
            concurrency=conf.concurrency or base.concurrency,
            rate=(conf.rate or None) if conf.rate is not None else base.rate,
            burst=conf.burst or base.burst,
        )
    if not adapters and not broken:
        raise ConfigError(f"{source}: no systems configured (add a [systems.<name>] table)")
    return Config(
        adapters, limits, file.retry, file.concurrency, file.verify_tls, tuple(read), broken
    )


def _secrets_of(table: Mapping[str, Any], env: Mapping[str, str]) -> list[Secret]:
    out = []
    for field, given in table.items():
        if not field.endswith("_env"):
            continue
        names = given.values() if isinstance(given, Mapping) else [given]  # app_tokens_env
        for var in names:
            if not (isinstance(var, str) and env.get(var)):
                continue
            value = env[var]
            out.append(Secret(value))
            parts = [p.strip() for p in value.split(",")]
            out += [Secret(p) for p in parts if p and p != value]
    # Basic auth and Kintone's password auth send base64("login:password").
    login = table.get("login", table.get("user"))
    password = (
        env.get(table["password_env"]) if isinstance(table.get("password_env"), str) else None
    )
    if isinstance(login, str) and password:
        pair = base64.b64encode(f"{login}:{password}".encode()).decode()
        out.append(Secret(pair))
    return out


def _secret(env: Mapping[str, str], var: str | None, what: str) -> Secret | None:
    if var is None:
        return None
    value = env.get(var)
    if not value:
        raise ConfigError(f"{what}: environment variable {var} is not set")
    return Secret(value)


def _custom(
    name: str, conf: CustomConfig, table: Mapping[str, Any], env: Mapping[str, str]
) -> Adapter:
    import importlib

    module_name, _, attr = conf.adapter.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"adapter {conf.adapter!r} cannot be imported: {e}") from None
    limits = set(_System.__struct_fields__)
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key in limits or key == "adapter":
            continue
        if key.endswith("_env"):
            if not isinstance(value, str):
                raise ConfigError(f"{key} must name an environment variable")
            secret_value = _secret(env, value, key)
            options[key[: -len("_env")]] = None if secret_value is None else secret_value.reveal()
        else:
            options[key] = value
    try:
        adapter = cls(conf.url, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"adapter {conf.adapter}: {e}") from None
    if not isinstance(adapter, Adapter) or getattr(adapter, "system", None) != name:
        raise ConfigError(
            f"adapter {conf.adapter} must implement the Adapter protocol with system = {name!r}"
        )
    return adapter


def _adapter(
    name: str, conf: SystemConfig, env: Mapping[str, str], table: Mapping[str, Any]
) -> Adapter:
    if isinstance(conf, CustomConfig):
        return _custom(name, conf, table, env)
    if isinstance(conf, PerscomConfig):
        token = _secret(env, conf.token_env, "token_env")
        assert token is not None
        return PerscomAdapter(
            conf.url,
            token,
            version=conf.version,
            tenant=conf.tenant,
            notifications=conf.notifications,
        )
    if isinstance(conf, MaxsightConfig):
        key = _secret(env, conf.api_key_env, "api_key_env")
        assert key is not None
        return MaxsightAdapter(conf.url, key, assigned_by=conf.assigned_by)
    if isinstance(conf, KintoneConfig):
        tokens: list[str | Secret] | None = None
        joined = _secret(env, conf.api_token_env, "api_token_env")
        if joined is not None:
            tokens = [Secret(t.strip()) for t in joined.reveal().split(",") if t.strip()]
        per_app: dict[int, str | Secret | list[str | Secret]] = {}
        for app_id, var in conf.app_tokens_env.items():
            value = _secret(env, var, f"app_tokens_env.{app_id}")
            assert value is not None
            per_app[int(app_id)] = value
        return KintoneAdapter(
            conf.url,
            app_tokens=per_app or None,
            api_token=tokens,
            login=conf.login,
            password=_secret(env, conf.password_env, "password_env"),
            app=conf.app,
            space=conf.space,
        )
    if isinstance(conf, SuperOfficeConfig):
        return SuperOfficeAdapter(
            conf.url,
            token=_secret(env, conf.token_env, "token_env"),
            user=conf.user,
            password=_secret(env, conf.password_env, "password_env"),
            ticket=_secret(env, conf.ticket_env, "ticket_env"),
            app_token=_secret(env, conf.app_token_env, "app_token_env"),
            if_unmodified_since=conf.if_unmodified_since,
        )
    assert isinstance(conf, FindableConfig)
    token = _secret(env, conf.token_env, "token_env")
    assert token is not None
    return FindableAdapter(conf.url, token)


def _where(message: str) -> str:
    """msgspec's "Object contains unknown field `x` - at `$.systems.kintone`" made plain."""
    reason, sep, where = message.rpartition(" - at `$")
    if not sep:
        return message
    path = where.rstrip("`").lstrip(".")
    return f"{path}: {reason}" if path else reason
