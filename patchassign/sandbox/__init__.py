"""Faithful local fake servers of the target systems, with fault injection.

The five vendors' systems, and "helpdesk": an in-house ticket system that speaks plain
HTTP and JSON standards, driven by the generic REST adapter (``systems.rest``).
``async with Sandbox() as sb:`` starts all six on free ports of 127.0.0.1::

    async with Sandbox(demo=100, faults={"kintone": {"throttle": 0.05}}) as sb:
        sb.kintone.url, sb.kintone.token, sb.kintone.records, sb.kintone.stats

Each server keeps its records in memory (seed them from Python or a JSON file), speaks its
system's API as the vendor documents it (see each module), and counts what it received.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..errors import ConfigError
from ._server import FakeServer, Stats
from .data import (
    demo_change,
    demo_mismatches,
    demo_plan,
    demo_records,
    move_elsewhere,
    moved_elsewhere,
)
from .faults import Faults, FaultsSpec
from .findable import FindableServer
from .helpdesk import HelpdeskServer
from .kintone import KintoneServer
from .maxsight import MaxsightServer
from .perscom import PerscomServer
from .superoffice import SuperOfficeServer

if TYPE_CHECKING:
    from ..systems import BaseAdapter

__all__ = [
    "SYSTEMS",
    "FakeServer",
    "Faults",
    "FindableServer",
    "HelpdeskServer",
    "KintoneServer",
    "MaxsightServer",
    "PerscomServer",
    "Sandbox",
    "Stats",
    "SuperOfficeServer",
    "demo_change",
    "demo_mismatches",
    "demo_plan",
    "demo_records",
    "exact_faults",
    "move_elsewhere",
    "moved_elsewhere",
]

SERVERS: dict[str, type[FakeServer]] = {
    "perscom": PerscomServer,
    "maxsight": MaxsightServer,
    "kintone": KintoneServer,
    "superoffice": SuperOfficeServer,
    "findable": FindableServer,
    "helpdesk": HelpdeskServer,
}
SYSTEMS = tuple(SERVERS)
#: The most demo records a sandbox seeds per system.
MAX_DEMO = 1_000_000
_S = TypeVar("_S", bound=FakeServer)


def _names(systems: object) -> list[str]:
    if not isinstance(systems, Iterable) or isinstance(systems, (bytes, Mapping)):
        raise ConfigError(f"systems must be system names, got {type(systems).__name__}")
    names = list(systems)
    bad = [s for s in names if not isinstance(s, str)]
    if bad:
        raise ConfigError(f"systems must be system names, got {bad[0]!r}")
    return names


def _seed(server: FakeServer, name: str, i: int, record: object) -> None:
    """Seed one user-given record; a record the server cannot take is a ConfigError that
    says which and why, not the server's ``KeyError``."""
    where = f"sandbox records for {name}, record {i + 1}"
    if not isinstance(record, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(record).__name__}")
    try:
        server.seed([record])
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except KeyError as e:
        raise ConfigError(f"{where}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{where}: not a record this system holds ({e})") from None


class Sandbox:
    """The fake servers, started and stopped together.

    Args:
        faults: One fault setting for every server (a ``Faults`` or a mapping of its
            fields), or a mapping from system name to its setting.
        records: System name -> records to seed (each system's seed shape).
        demo: Seed this many demo records per system (see ``data.demo_records``).
        systems: Start only these systems (default: all of ``SERVERS``).
        seed: Base of the servers' fault seeds when ``faults`` gives none.

    Raises:
        ConfigError: Unknown system names, fault settings out of range, a ``demo`` that is
            not a count from 0 to 1,000,000.
    """

    def __init__(
        self,
        *,
        faults: FaultsSpec = None,
        records: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
        demo: int = 0,
        systems: Iterable[str] = SYSTEMS,
        seed: int = 0,
    ) -> None:
        chosen = [systems] if isinstance(systems, str) else _names(systems)
        if records is not None and not isinstance(records, Mapping):
            raise ConfigError(
                f"records must map system names to lists of records, got {type(records).__name__}"
            )
        unknown = [s for s in [*chosen, *(records or {})] if s not in SERVERS]
        if unknown:
            raise ConfigError(
                f"unknown system {unknown[0]!r}; expected one of {', '.join(SYSTEMS)}"
            )
        if type(demo) is not int or not 0 <= demo <= MAX_DEMO:
            raise ConfigError(
                f"demo must be a number of records from 0 to {MAX_DEMO:,}, got {demo!r}"
            )
        per_system = _split_faults(faults)
        self.servers: dict[str, FakeServer] = {}
        for i, name in enumerate(chosen):
            spec = per_system.get(name)
            if spec is None:
                spec = Faults(seed=seed + i)
            try:
                self.servers[name] = SERVERS[name](faults=spec)
            except ConfigError as e:
                if faults is spec:  # the same settings for every system: no name to add
                    raise
                raise ConfigError(f"{name}: {e}") from None
        self._demo = demo
        self._records: dict[str, list[Mapping[str, Any]]] = {}
        for name, rows in (records or {}).items():
            if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
                raise ConfigError(
                    f"records for {name}: expected a list of records, got {type(rows).__name__}"
                )
            self._records[name] = list(rows)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Sandbox:
        """A sandbox seeded from a JSON file ``{"<system>": [records...], ...}``.

        Raises:
            ConfigError: The file is not such a JSON object.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read sandbox records from {path}: {e}") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ConfigError(
                f"{path}: expected an object mapping system names to lists of records"
            )
        return cls(records=data, **kwargs)

    def __iter__(self) -> Iterator[FakeServer]:
        return iter(self.servers.values())

    def __repr__(self) -> str:
        urls = " ".join(f"{n}={s.url or 'stopped'}" for n, s in self.servers.items())
        return f"<Sandbox {urls}>"

    @property
    def perscom(self) -> PerscomServer:
        return self._get("perscom", PerscomServer)

    @property
    def maxsight(self) -> MaxsightServer:
        return self._get("maxsight", MaxsightServer)

    @property
    def kintone(self) -> KintoneServer:
        return self._get("kintone", KintoneServer)

    @property
    def superoffice(self) -> SuperOfficeServer:
        return self._get("superoffice", SuperOfficeServer)

    @property
    def findable(self) -> FindableServer:
        return self._get("findable", FindableServer)

    @property
    def helpdesk(self) -> HelpdeskServer:
        return self._get("helpdesk", HelpdeskServer)

    def _get(self, name: str, kind: type[_S]) -> _S:
        server = self.servers.get(name)
        if not isinstance(server, kind):
            raise AttributeError(f"this sandbox was started without {name}")
        return server

    async def start(self) -> None:
        """Start every server, then seed them (seeds may embed their own URLs)."""
        try:
            for server in self.servers.values():
                await server.start()
            for name, server in self.servers.items():
                if self._demo:
                    server.seed(demo_records(name, self._demo))
                for i, record in enumerate(self._records.get(name, ())):
                    _seed(server, name, i, record)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for server in self.servers.values():
            await server.close()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def adapters(self) -> dict[str, BaseAdapter]:
        """An adapter for each running server, with the sandbox's credentials."""
        made: dict[str, BaseAdapter] = {}
        for name, server in self.servers.items():
            if not server.url:
                raise RuntimeError("the sandbox is not started")
            made[name] = server.adapter()
        return made

    def describe(self) -> dict[str, dict[str, Any]]:
        """System -> ``{"url", "token"}`` (the sandbox's own throwaway credentials); for
        Kintone also ``"app_tokens"``: app id (text) -> that app's API token."""
        out: dict[str, dict[str, Any]] = {}
        for name, server in self.servers.items():
            out[name] = {"url": server.url, "token": server.token}
            if isinstance(server, KintoneServer):
                out[name]["app_tokens"] = {str(a): server.token_for(a) for a in server.apps}
        return out


def exact_faults(faults: Faults) -> dict[str, Faults]:
    """``faults`` for every system, except that Findable gets no concurrent editor.

    A Findable delegate lost before it landed, on an original that an editor touched
    before the re-read, cannot be proven unsent (its ``_etag`` changed): it ends
    "unknown, not resent" for a person, by design. Runs that must end exactly as planned
    (the demo, the end-to-end tests, the chaos benchmark) use this; the other faults
    still hit Findable.
    """
    out = dict.fromkeys(SERVERS, faults)
    out["findable"] = msgspec.structs.replace(faults, editor=0.0)
    return out


def _split_faults(faults: FaultsSpec) -> dict[str, FaultsSpec]:
    if faults is None:
        return {}
    if isinstance(faults, Faults):
        return dict.fromkeys(SERVERS, faults)
    if not isinstance(faults, Mapping):
        raise ConfigError(
            f"invalid fault settings: expected Faults or a mapping, got {type(faults).__name__}"
        )
    named = [k for k in faults if k in SERVERS]
    if named and len(named) == len(faults):
        return dict(faults)
    stray = [k for k in faults if k not in SERVERS]
    if named or any(isinstance(faults[k], Mapping) for k in stray):
        # Settings per system, one of them not a system's name (a typo, or settings for
        # every system mixed in: those go in each system's own).
        odd = next((k for k in stray if isinstance(faults[k], Mapping)), stray[0])
        raise ConfigError(
            f"invalid fault settings: {odd!r} is not a system (systems: "
            f"{', '.join(SERVERS)}); give settings for every system without names, or "
            "each system's under its name"
        )
    return dict.fromkeys(SERVERS, faults)
