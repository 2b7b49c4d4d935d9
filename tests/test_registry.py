"""Adding a system: one adapter module, one fake module, one registry line each.

The test builds "Acme Tickets" that way (an adapter with its own configuration table, a
fake with its own seed data) and runs it through the configuration, the sandbox and the
dispatcher, with no other change anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import pytest

from patchassign import systems
from patchassign.changes import Assign, Change
from patchassign.config import parse_config
from patchassign.dispatch import Dispatcher
from patchassign.errors import ConfigError
from patchassign.flow import RetryPolicy
from patchassign.sandbox import SERVERS, Sandbox, demo_mismatches, demo_plan
from patchassign.sandbox._server import FakeServer
from patchassign.systems import (
    Applied,
    BaseAdapter,
    Conflict,
    Credentials,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    Outcome,
    Prepared,
    Retry,
    Secret,
    SystemConfig,
    Unchanged,
    segment,
)
from patchassign.systems._base import EnvVar, read_config

if TYPE_CHECKING:
    from aiohttp import web

# -- the adapter module ------------------------------------------------------------------


class AcmeConfig(SystemConfig, kw_only=True, forbid_unknown_fields=True):
    token_env: EnvVar
    queue: str = "main"


class AcmeAdapter(BaseAdapter):
    system: ClassVar[str] = "acme"
    versioned: ClassVar[bool] = True
    actions: ClassVar[frozenset[str]] = frozenset({"assign"})
    config: ClassVar[type[SystemConfig]] = AcmeConfig

    @classmethod
    def from_config(cls, table: Mapping[str, Any], credentials: Credentials) -> AcmeAdapter:
        conf = read_config(AcmeConfig, table)
        return cls(conf.url, credentials.need(conf.token_env, "token_env"), queue=conf.queue)

    def __init__(self, url: str, token: str | Secret, *, queue: str = "main") -> None:
        super().__init__(url, {"Accept": "application/json"})
        self._token = token if isinstance(token, Secret) else Secret(token)
        self.queue = queue

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.reveal()}"}

    def check(self, change: Change) -> None:
        self.check_action(change)

    def needs_read(self, change: Change) -> bool:
        return True

    def read(self, change: Change) -> HttpRequest:
        return self.get(f"/{self.queue}/tickets/{segment(change.record)}")

    def current(self, change: Change, response: HttpResponse) -> Current | Retry | Failed:
        if response.status == 200:
            ticket = response.json()
            return Current(ticket, ticket["etag"])
        return self.classify(response, self.error_message(response))

    def prepare(self, change: Change, current: Current | None) -> Prepared:
        assert isinstance(change, Assign)
        assert current is not None
        if current.record["owner"] == change.to:
            return Unchanged(current.version)
        path = f"/{self.queue}/tickets/{segment(change.record)}"
        etag = str(current.version)
        return self.json_request("PUT", path, {"owner": change.to}, {"If-Match": etag})

    def outcome(self, change: Change, response: HttpResponse) -> Outcome:
        if response.status == 200:
            ticket = response.json()
            return Applied(ticket["etag"], ticket)
        if response.status == 412:
            return Conflict("changed since read", 412)
        return self.classify(response, self.error_message(response))


# -- the fake module ---------------------------------------------------------------------


class AcmeServer(FakeServer):
    system: ClassVar[str] = "acme"
    write_endpoints: ClassVar[frozenset[str]] = frozenset({"put"})
    editor_field: ClassVar[str] = "note"

    def adapter(self) -> AcmeAdapter:
        return AcmeAdapter(self.url, self.token)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/main/tickets/{id}", self._get, name="get")
        router.add_put("/main/tickets/{id}", self._put, name="put")

    def credential(self, request: web.Request) -> str | None:
        ok = request.headers.get("Authorization") == f"Bearer {self.token}"
        return self.token if ok else None

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        return self.json({"message": message, **extra}, status)

    @classmethod
    def demo_record(cls, i: int) -> dict[str, Any]:
        return {"id": f"T-{i}", "owner": "ada"}

    @classmethod
    def demo_change(cls, i: int) -> Change:
        return Assign(system="acme", record=f"T-{i}", to="eve")

    def demo_mismatches(self, ids: Iterable[int]) -> Iterator[tuple[int, str]]:
        for i in ids:
            if self.records[f"T-{i}"]["owner"] != "eve":
                yield i, f"owner is {self.records[f'T-{i}']['owner']}"

    def move_elsewhere(self, i: int) -> None:
        self.records[f"T-{i}"]["owner"] = "zed"

    def seed(self, records: Iterable[Mapping[str, Any]]) -> None:
        for r in records:
            self.records[r["id"]] = {"id": r["id"], "owner": r["owner"], "etag": "1", "note": ""}

    def edit(self, key: str) -> None:
        rec = self.records[key]
        self.records[key] = {**rec, "note": "edited", "etag": str(int(rec["etag"]) + 1)}

    async def _get(self, request: web.Request) -> web.Response:
        key = request.match_info["id"]
        if key not in self.records:
            return self.error(404, "no such ticket")
        resp = self.json(self.records[key])
        self.after_read(key)
        return resp

    async def _put(self, request: web.Request) -> web.Response:
        key = request.match_info["id"]
        rec = self.records.get(key)
        if rec is None:
            return self.error(404, "no such ticket")
        if request.headers.get("If-Match") != rec["etag"]:
            return self.error(412, "stale etag")
        body = msgspec.json.decode(await request.read())
        self.records[key] = rec = {**rec, "owner": body["owner"], "etag": str(int(rec["etag"]) + 1)}
        self.stats.writes[key] += 1
        return self.json(rec)


# -- the registry lines ------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(systems.ADAPTERS, "acme", AcmeAdapter)
    monkeypatch.setitem(SERVERS, "acme", AcmeServer)


@pytest.mark.usefixtures("registered")
async def test_a_system_added_by_its_modules_and_registry_lines_runs_everywhere() -> None:
    async with Sandbox(systems=["acme"], demo=20, faults={"editor": 0.3}) as sb:
        server = sb.servers["acme"]
        table, env = server.settings()
        config = parse_config({"systems": {"acme": {**table, "queue": "main"}}}, env=env)
        adapter = config.adapters["acme"]
        assert isinstance(adapter, AcmeAdapter)
        assert config.limits["acme"].concurrency == AcmeAdapter.limits.concurrency
        assert server.token not in repr(adapter)
        # conflicts=20: six editor strikes in a row (0.3**6) are not what this tests
        async with Dispatcher(config.adapters, retry=RetryPolicy(conflicts=20)) as d:
            results = await d.send_all(demo_plan(20, ["acme"]))
        assert {r.status for r in results} == {"applied"}
        assert sum(server.stats.edits.values()) > 0  # conflicts were recovered
        assert demo_mismatches(sb, 20) == []
        assert max(server.stats.writes.values()) == 1


@pytest.mark.usefixtures("registered")
def test_the_registry_reads_the_systems_own_table() -> None:
    with pytest.raises(ConfigError, match=r"systems\.acme: .*unknown field `colour`"):
        parse_config(
            {"systems": {"acme": {"url": "https://a.example", "token_env": "T", "colour": 1}}},
            env={"T": "t"},
        )
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        parse_config({"systems": {"acme": {"url": "https://a.example", "token_env": "NOPE"}}})


def test_an_unregistered_system_needs_an_adapter_class() -> None:
    with pytest.raises(ConfigError, match="not a built-in system"):
        parse_config({"systems": {"acme": {"url": "https://a.example"}}}, env={})
