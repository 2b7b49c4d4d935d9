"""Kintone adapter: unit tests on bytes, then end to end against the sandbox."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import pytest

from patchassign.changes import Assign, Unassign
from patchassign.errors import ConfigError, InvalidChange
from patchassign.sandbox import Sandbox
from patchassign.systems import (
    Applied,
    Conflict,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    KintoneAdapter,
    Retry,
    Unchanged,
)

from .helpers import drive

if TYPE_CHECKING:
    import aiohttp


def record(codes: list[str], revision: str = "7") -> dict[str, Any]:
    return {
        "$revision": {"type": "__REVISION__", "value": revision},
        "作業者": {"type": "STATUS_ASSIGNEE", "value": [{"code": c, "name": c} for c in codes]},
    }


def adapter(url: str = "https://acme.kintone.com", token: str = "t1", **kw: Any) -> KintoneAdapter:
    return KintoneAdapter(url, api_token=token, **kw)


def test_read_and_write_requests() -> None:
    a = adapter(space=4)
    change = Assign(system="kintone", record="12:34", to=["eve", "fay"])
    a.check(change)
    read = a.read(change)
    assert read.url == "https://acme.kintone.com/k/guest/4/v1/record.json?app=12&id=34"
    assert read.headers["X-Cybozu-API-Token"] == "t1"
    cur = a.current(change, HttpResponse(200, {}, json.dumps({"record": record(["ada"])}).encode()))
    assert cur == Current(record(["ada"]), "7")
    req = a.prepare(change, cur)
    assert isinstance(req, HttpRequest)
    assert (req.method, req.url) == (
        "PUT",
        "https://acme.kintone.com/k/guest/4/v1/record/assignees.json",
    )
    assert req.body is not None
    assert json.loads(req.body) == {
        "app": 12,
        "id": 34,
        "assignees": ["eve", "fay"],
        "revision": "7",
    }


def test_unchanged_expect_and_unassign() -> None:
    a = adapter(app=3)
    cur = Current(record(["fay", "eve"]), "2")
    assert isinstance(
        a.prepare(Assign(system="kintone", record=5, to=["eve", "fay"]), cur), Unchanged
    )
    out = a.prepare(Assign(system="kintone", record=5, to="gus", expect="ada"), cur)
    assert isinstance(out, Conflict)
    assert not out.recoverable
    req = a.prepare(Unassign(system="kintone", record="5"), cur)
    assert isinstance(req, HttpRequest)
    assert req.body is not None
    assert json.loads(req.body)["assignees"] == []
    assert isinstance(
        a.prepare(Unassign(system="kintone", record=5), Current(record([]), "2")), Unchanged
    )
    assert isinstance(
        a.prepare(Unassign(system="kintone", record=5), Current({"$revision": {}}, None)), Failed
    )


def test_auth_options() -> None:
    multi = KintoneAdapter("https://a.kintone.com", api_token=["t1", "t2"])
    assert multi.auth_headers() == {"X-Cybozu-API-Token": "t1,t2"}
    pw = KintoneAdapter("https://a.kintone.com", login="admin", password="pw")
    assert base64.b64decode(pw.auth_headers()["X-Cybozu-Authorization"]) == b"admin:pw"
    assert "pw" not in repr(pw.__dict__)
    with pytest.raises(ConfigError):
        KintoneAdapter("https://a.kintone.com")
    with pytest.raises(ConfigError):
        KintoneAdapter("https://a.kintone.com", api_token=[f"t{i}" for i in range(10)])


def test_each_request_carries_the_token_of_its_own_app() -> None:
    a = KintoneAdapter("https://a.kintone.com", app_tokens={1: "tok-one", 7: ["tok-7a", "tok-7b"]})
    one = Assign(system="kintone", record="1:5", to="eve")
    seven = Assign(system="kintone", record="7:5", to="eve")
    assert a.read(one).headers["X-Cybozu-API-Token"] == "tok-one"
    write = a.prepare(seven, Current(record(["ada"]), "3"))
    assert isinstance(write, HttpRequest)
    assert write.headers["X-Cybozu-API-Token"] == "tok-7a,tok-7b"
    assert write.headers["Content-Type"] == "application/json"
    # a request that spans apps (a bulk request) carries their tokens combined
    assert a.app_auth(1, 7) == {"X-Cybozu-API-Token": "tok-one,tok-7a,tok-7b"}
    # every credential, for masking what a server echoes
    assert a.auth_headers() == {"X-Cybozu-API-Token": "tok-one,tok-7a,tok-7b"}
    # an app without a token is refused before anything is sent, saying which
    with pytest.raises(InvalidChange, match="no API token for kintone app 9"):
        a.check(Assign(system="kintone", record="9:5", to="eve"))
    # ...unless a token for every other app (or a password) is given
    shared = KintoneAdapter("https://a.kintone.com", app_tokens={1: "tok-one"}, api_token="t-all")
    assert shared.read(Assign(system="kintone", record="9:5", to="eve")).headers == {
        "Accept": "application/json",
        "X-Cybozu-API-Token": "t-all",
    }
    assert a.probe().url.endswith("app=1&id=1")
    with pytest.raises(ConfigError, match="app ids are integers"):
        KintoneAdapter("https://a.kintone.com", app_tokens={"1": "t"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (Assign(system="kintone", record="1:2", to=[f"u{i}" for i in range(101)]), "to"),
        (Assign(system="kintone", record="1:2", to="eve", to_type="team"), "to_type"),
        (Assign(system="kintone", record="1:2", to="eve", comment="hi"), "comment"),
        (Assign(system="kintone", record="2", to="eve"), "record"),
        (Assign(system="kintone", record="x:2", to="eve"), "record"),
        (Assign(system="kintone", record="1:-2", to="eve"), "record"),
    ],
)
def test_refused_before_sending(change: Any, field: str) -> None:
    with pytest.raises(InvalidChange) as e:
        adapter().check(change)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("status", "payload", "kind", "recoverable"),
    [
        (200, {"revision": "8"}, Applied, None),
        (409, {"id": "x", "code": "GAIA_CO02", "message": "stale"}, Conflict, True),
        (
            520,
            {"id": "x", "code": "GAIA_CO02", "message": "stale"},
            Conflict,
            True,
        ),  # code wins over status
        (
            400,
            {
                "id": "x",
                "code": "CB_VA01",
                "message": "bad",
                "errors": {"assignees": {"messages": ["Up to 100"]}},
            },
            Failed,
            None,
        ),
        (520, {"id": "x", "code": "GAIA_IA02", "message": "token"}, Failed, None),
        (401, {"id": "x", "code": "CB_WA01", "message": "pw"}, Failed, None),
        (403, {"id": "x", "code": "GAIA_NO01", "message": "perm"}, Failed, None),
        (404, {"id": "x", "code": "GAIA_RE01", "message": "nf"}, Failed, None),
        (429, {"id": "x", "code": "GAIA_TO04", "message": "busy"}, Retry, None),
        (503, {}, Retry, None),
    ],
)
def test_errors_are_classified_by_code(
    status: int, payload: Any, kind: type, recoverable: bool | None
) -> None:
    out = adapter().outcome(
        Assign(system="kintone", record="1:2", to="e"),
        HttpResponse(status, {}, json.dumps(payload).encode()),
    )
    assert isinstance(out, kind), out
    if recoverable is not None:
        assert isinstance(out, Conflict)
        assert out.recoverable is recoverable
    if payload.get("code") == "CB_VA01":
        assert isinstance(out, Failed)
        assert "Up to 100" in out.reason
    if isinstance(out, Applied):
        assert out.version == "8"


async def test_end_to_end_assign_unassign_and_stale_revision(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    k = sandbox.kintone
    a = KintoneAdapter(k.url, app_tokens={1: k.token_for(1)})
    out, _ = await drive(a, Assign(system="kintone", record="1:1", to=["eve", "fay"]), session)
    assert isinstance(out, Applied)
    assert k.records["1:1"]["assignees"] == ["eve", "fay"]
    assert out.version == str(k.records["1:1"]["revision"])
    out, writes = await drive(
        a,
        Assign(system="kintone", record="1:2", to="gus", expect=k.records["1:2"]["assignees"]),
        session,
        between=lambda n: k.edit("1:2") if n == 0 else None,
    )
    assert isinstance(out, Applied)
    assert len(writes) == 2
    assert k.stats.count("update", 409) == 1
    assert k.stats.writes["1:2"] == 1
    assert k.records["1:2"]["assignees"] == ["gus"]
    out, _ = await drive(a, Unassign(system="kintone", record="1:3"), session)
    assert isinstance(out, Applied)
    assert k.records["1:3"]["assignees"] == []
    nf, _ = await drive(a, Unassign(system="kintone", record="1:999"), session)
    assert isinstance(nf, Failed)
    assert "GAIA_RE01" in nf.reason


async def test_a_token_of_another_app_is_refused_as_kintone_does(
    session: aiohttp.ClientSession,
) -> None:
    records: dict[str, list[dict[str, Any]]] = {
        "kintone": [{"app": 1, "id": 1, "assignees": ["ada"]}, {"app": 2, "id": 1}]
    }
    async with Sandbox(records=records, systems=["kintone"]) as sb:
        k = sb.kintone
        swapped = KintoneAdapter(k.url, app_tokens={1: k.token_for(2), 2: k.token_for(1)})
        out, writes = await drive(
            swapped, Assign(system="kintone", record="1:1", to="eve"), session
        )
        assert isinstance(out, Failed)
        assert out.auth
        assert out.reason.startswith("GAIA_IA02")
        assert writes == []
        viewer = KintoneAdapter(k.url, app_tokens={1: k.add_token(1, ["view"])})
        out, writes = await drive(viewer, Assign(system="kintone", record="1:1", to="eve"), session)
        assert isinstance(out, Failed)
        assert out.auth
        assert out.reason.startswith("GAIA_NO01")
        assert len(writes) == 1
        assert k.stats.writes["1:1"] == 0
