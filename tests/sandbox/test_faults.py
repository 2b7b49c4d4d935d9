"""Fault injection: each mode on its own, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from patchassign.errors import ConfigError
from patchassign.sandbox import Faults, Sandbox
from patchassign.sandbox.faults import parse_faults

from .conftest import call

UPDATE = {"update": {"assigned_by_id": "a", "assigned_to_id": "eve", "assigned_to_type": "USER"}}


def maxsight(sb: Sandbox) -> tuple[str, dict[str, str]]:
    return sb.maxsight.url, {"apikey": sb.maxsight.token}


async def test_throttle_answers_429_with_retry_after_and_stores_nothing(
    session: aiohttp.ClientSession,
) -> None:
    async with Sandbox(demo=2, faults={"throttle": 1.0, "retry_after": 7}) as sb:
        p = sb.perscom
        a = await call(
            session,
            "PATCH",
            f"{p.url}/v2/assignment-records/1",
            json={"user_id": 5},
            headers={"Authorization": f"Bearer {p.token}"},
        )
        assert a.status == 429
        assert a.headers["Retry-After"] == "7"
        assert a.body["error"]["type"] == "ThrottleRequestsException"
        url, h = maxsight(sb)
        m = await call(session, "GET", f"{url}/v5/tasks/task-000001", headers=h)
        assert m.status == 429
        assert m.headers["X-RateLimit-Retry-Secs"] == "7"
        assert "Retry-After" not in m.headers
        assert p.records["1"]["user_id"] != 5
        assert sum(p.stats.writes.values()) == 0


async def test_unavailable_answers_503(session: aiohttp.ClientSession) -> None:
    async with Sandbox(demo=1, systems=["findable"], faults={"unavailable": 1.0}) as sb:
        f = sb.findable
        a = await call(
            session,
            "POST",
            f"{f.url}/assignments/asg-000001/delegate",
            json={"toUpn": "e@x.io"},
            headers={"Authorization": f"Bearer {f.token}"},
        )
        assert a.status == 503
        assert a.body["error"]["code"] == "ServiceUnavailable"
        assert f.records["asg-000001"]["status"] in ("pending", "in_progress")


async def test_dropped_connections_before_or_after_applying() -> None:
    async with (
        Sandbox(demo=40, systems=["kintone"], faults={"drop": 1.0, "seed": 3}) as sb,
        aiohttp.ClientSession() as session,
    ):
        # aiohttp resends an idempotent method (PUT) once after a disconnect, on its own;
        # its test client turns that off the same way. Here we count what one send does.
        session._retry_connection = False
        k = sb.kintone
        for i in range(1, 41):
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await call(
                    session,
                    "PUT",
                    f"{k.url}/k/v1/record/assignees.json",
                    json={"app": 1, "id": i, "assignees": ["eve"]},
                    headers={"X-Cybozu-API-Token": k.token_for(1)},
                )
        before, after = k.stats.dropped["before"], k.stats.dropped["after"]
        assert before + after == 40
        assert before > 5
        assert after > 5
        applied = [key for key, rec in k.records.items() if rec["assignees"] == ["eve"]]
        assert len(applied) == after == sum(k.stats.writes.values())


async def test_latency_jitter_and_spikes_delay_answers(session: aiohttp.ClientSession) -> None:
    async with Sandbox(
        demo=1, systems=["perscom"], faults={"latency": 0.2, "spikes": 1.0, "spike": 0.1}
    ) as sb:
        p = sb.perscom
        t = time.perf_counter()
        a = await call(
            session,
            "GET",
            f"{p.url}/v2/assignment-records/1",
            headers={"Authorization": f"Bearer {p.token}"},
        )
        assert a.status == 200
        assert time.perf_counter() - t >= 0.3


async def test_rate_limit_per_credential(session: aiohttp.ClientSession) -> None:
    async with Sandbox(demo=1, systems=["superoffice"], faults={"rate_limit": 2, "burst": 3}) as sb:
        s = sb.superoffice
        url = f"{s.url}/api/v1/ProjectMember/1"
        answers = [
            await call(session, "GET", url, headers={"Authorization": f"Bearer {s.token}"})
            for _ in range(6)
        ]
        statuses = [a.status for a in answers]
        assert statuses[:3] == [200, 200, 200]
        assert 429 in statuses[3:]
        throttled = next(a for a in answers if a.status == 429)
        assert int(throttled.headers["Retry-After"]) >= 1
        await asyncio.sleep(0.6)
        assert (
            await call(session, "GET", url, headers={"Authorization": f"Bearer {s.token}"})
        ).status == 200


async def test_concurrent_editor_makes_a_fresh_version_stale(
    session: aiohttp.ClientSession,
) -> None:
    async with Sandbox(demo=1, systems=["maxsight", "kintone"], faults={"editor": 1.0}) as sb:
        url, h = maxsight(sb)
        task = (await call(session, "GET", f"{url}/v5/tasks/task-000001", headers=h)).body
        a = await call(
            session,
            "PUT",
            f"{url}/v5/tasks/task-000001/update-assignment",
            json=UPDATE,
            headers={**h, "If-Match": task["updated_at"]},
        )
        assert a.status == 409
        assert sb.maxsight.stats.edits["task-000001"] == 1
        assert sb.maxsight.records["task-000001"]["custom_metadata"]["edited_by_someone_else"] == 1
        assert (
            sb.maxsight.records["task-000001"]["assignment"] == task["assignment"]
        )  # not an assignment change
        k = sb.kintone
        rec = (
            await call(
                session,
                "GET",
                f"{k.url}/k/v1/record.json?app=1&id=1",
                headers={"X-Cybozu-API-Token": k.token_for(1)},
            )
        ).body
        put = await call(
            session,
            "PUT",
            f"{k.url}/k/v1/record/assignees.json",
            json={
                "app": 1,
                "id": 1,
                "assignees": ["eve"],
                "revision": rec["record"]["$revision"]["value"],
            },
            headers={"X-Cybozu-API-Token": k.token_for(1)},
        )
        assert (put.status, put.body["code"]) == (409, "GAIA_CO02")


async def test_writes_only_spares_reads(session: aiohttp.ClientSession) -> None:
    async with Sandbox(
        demo=1, systems=["maxsight"], faults={"unavailable": 1.0, "writes_only": True}
    ) as sb:
        url, h = maxsight(sb)
        task = await call(session, "GET", f"{url}/v5/tasks/task-000001", headers=h)
        assert task.status == 200
        w = await call(
            session,
            "PUT",
            f"{url}/v5/tasks/task-000001/update-assignment",
            json=UPDATE,
            headers={**h, "If-Match": task.body["updated_at"]},
        )
        assert w.status == 503


async def statuses(faults: dict[str, Any], n: int, session: aiohttp.ClientSession) -> list[int]:
    async with Sandbox(demo=1, systems=["perscom"], faults=faults) as sb:
        p = sb.perscom
        return [
            (
                await call(
                    session,
                    "GET",
                    f"{p.url}/v2/assignment-records/1",
                    headers={"Authorization": f"Bearer {p.token}"},
                )
            ).status
            for _ in range(n)
        ]


async def test_faults_are_deterministic_for_a_seed(session: aiohttp.ClientSession) -> None:
    spec = {"throttle": 0.3, "unavailable": 0.3, "retry_after": 0, "seed": 11}
    first = await statuses(spec, 40, session)
    assert first == await statuses(spec, 40, session)
    assert {200, 429, 503} == set(first)
    assert first != await statuses({**spec, "seed": 12}, 40, session)


async def test_outage_refuses_connections_then_recovers(session: aiohttp.ClientSession) -> None:
    async with Sandbox(demo=1, systems=["perscom"]) as sb:
        p = sb.perscom
        url, h = f"{p.url}/v2/assignment-records/1", {"Authorization": f"Bearer {p.token}"}
        assert (await call(session, "GET", url, headers=h)).status == 200
        await p.go_down()
        with pytest.raises(aiohttp.ClientConnectionError):
            await call(session, "GET", url, headers=h)
        await p.come_back()
        assert (await call(session, "GET", url, headers=h)).status == 200


@pytest.mark.parametrize(
    ("faults", "says"),
    [
        ({"throttl": 0.1}, "unknown field `throttl` (known: burst, drop, "),
        ({"throttle": 2}, "invalid fault settings: throttle: Expected `float` <= 1.0"),
        ({"kintone": {"latncy": 0.1}}, "kintone: invalid fault settings: Object contains "),
        ({"kintonee": {"latency": 0.1}}, "'kintonee' is not a system (systems: perscom, "),
        ({"kintone": {"latency": 0.1}, "throttle": 0.1}, "'throttle' is not a system"),
    ],
)
def test_a_wrong_fault_setting_is_named_with_what_is_known(
    faults: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigError) as e:
        Sandbox(faults=faults)
    assert says in str(e.value)


def test_fault_settings_are_validated() -> None:
    assert parse_faults(None) == Faults()
    assert parse_faults({"throttle": 0.5}).throttle == 0.5
    for bad in ({"throttle": 2}, {"nope": 1}, {"latency": -1}, {"burst": 0}):
        with pytest.raises(ValueError, match="invalid fault settings"):
            parse_faults(bad)
