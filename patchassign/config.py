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
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from ._scrub import Scrubber as _Scrubber
from .dispatch import Limits, RetryPolicy
from .errors import ConfigError
from .systems import ADAPTERS, Adapter, BaseAdapter, Credentials, Secret, SystemConfig
from .systems._base import keyword_options, plain, read_config, unknown_hint
from .systems.rest import RestAdapter

__all__ = ["Config", "SystemConfig", "load_config", "parse_config"]

#: The built-in adapter classes and their base (whose ``from_config`` a class of your
#: own does not inherit).
_BUILT = frozenset([*ADAPTERS.values(), BaseAdapter])
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Limits(SystemConfig, kw_only=True, forbid_unknown_fields=False):
    """The limits every system table may set (the rest is the adapter's to read)."""


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
        cut message leaves of a key). A credential of 1-3 characters (a test token) is
        masked where it stands alone, not inside words.
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
        raise ConfigError(f"{source}: {plain(str(e))}{_file_hint(str(e))}") from None
    env = os.environ if env is None else env
    adapters: dict[str, Adapter] = {}
    limits: dict[str, Limits] = {}
    read: list[Secret] = []
    broken: dict[str, str] = {}
    credentials = Credentials(env)
    for name, table in file.systems.items():
        try:
            conf = msgspec.convert(table, _Limits)
            built_in = ADAPTERS.get(name)
            # The table's shape is checked now; credentials when the system is used.
            if table.get("adapter") == "rest":
                read_config(RestAdapter.config or SystemConfig, _without_adapter(table))
            elif "adapter" not in table and built_in is not None and built_in.config is not None:
                read_config(built_in.config, table)
        except msgspec.ValidationError as e:
            raise ConfigError(f"{source}: systems.{name}: {plain(str(e))}") from None
        except ConfigError as e:
            raise ConfigError(f"{source}: systems.{name}: {e}") from None
        try:
            adapters[name] = _adapter(name, table, credentials)
            read += _secrets_of(table, env)
        except ConfigError as e:
            adapters.pop(name, None)
            if lazy:
                broken[name] = f"{source}: systems.{name}: {e}"
                continue
            raise ConfigError(f"{source}: systems.{name}: {e}") from None
        base = adapters[name].limits
        chosen = {
            "concurrency": conf.concurrency or base.concurrency,
            "rate": (conf.rate or None) if conf.rate is not None else base.rate,
            "burst": conf.burst or base.burst,
            "batch": conf.batch if conf.batch is not None else base.batch,
            "linger": conf.linger if conf.linger is not None else base.linger,
        }
        try:  # converted, not built: ``Limits(...)`` would not check the bounds
            limits[name] = msgspec.convert(chosen, Limits)
        except msgspec.ValidationError as e:
            raise ConfigError(f"{source}: systems.{name}: {plain(str(e))}") from None
    if not adapters and not broken:
        raise ConfigError(f"{source}: no systems configured (add a [systems.<name>] table)")
    return Config(
        adapters, limits, file.retry, file.concurrency, file.verify_tls, tuple(read), broken
    )


def _file_hint(message: str) -> str:
    """What the file's top level or its ``[retry]`` table takes, for an unknown key."""
    unknown = re.search(r"unknown field `([^`]*)`", message)
    if unknown is not None and unknown.group(1) in ADAPTERS and " - at `$." not in message:
        return f" (a system's settings go in a [systems.{unknown.group(1)}] table)"
    if message.endswith(" - at `$.retry`"):
        return unknown_hint(message.removesuffix(" - at `$.retry`"), RetryPolicy)
    return unknown_hint(message, _File)


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


def _adapter(name: str, table: Mapping[str, Any], credentials: Credentials) -> Adapter:
    """The adapter of one ``[systems.<name>]`` table: a built-in system's, or the class
    its ``adapter = "module:Class"`` names; either way through ``from_config``."""
    spec = table.get("adapter")
    if spec == "rest":  # the generic adapter: an in-house system described by its table
        return RestAdapter.for_system(name, table, credentials)
    if spec is None:
        cls = ADAPTERS.get(name)
        if cls is None:
            raise ConfigError(
                f"{name!r} is not a built-in system ({', '.join(ADAPTERS)}): give "
                "adapter = 'rest' (an in-house REST system, described by its table) or "
                "adapter = 'package.module:AdapterClass'"
            )
    else:
        cls = _import(spec)
        table = {k: v for k, v in table.items() if k != "adapter"}
    # A class of your own reads its table with its own `from_config` where it defines
    # one (a subclass of a built-in adapter does not inherit the built-in's table);
    # otherwise by the keyword-argument convention (BaseAdapter.from_config).
    own = spec is None or any("from_config" in vars(k) for k in cls.__mro__ if k not in _BUILT)
    if own:
        adapter: Any = cls.from_config(table, credentials)
    else:
        adapter = keyword_options(cls, table, credentials)
    if not isinstance(adapter, Adapter) or getattr(adapter, "system", None) != name:
        raise ConfigError(
            f"adapter {spec or cls.__name__} must implement the Adapter protocol with "
            f"system = {name!r}"
        )
    return adapter


def _without_adapter(table: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k != "adapter"}


def _import(spec: Any) -> type[Any]:
    import importlib

    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise ConfigError(f"adapter: expected 'package.module:AdapterClass', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"adapter {spec!r} cannot be imported: {e}") from None
    if not isinstance(cls, type):
        raise ConfigError(f"adapter {spec!r} is not a class")
    return cls
