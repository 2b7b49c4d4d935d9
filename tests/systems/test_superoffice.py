"""SuperOffice adapter: unit tests on bytes, then end to end against the sandbox."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from patchassign.changes import Assign, Merge, Patch, SetFields
from patchassign.errors import ConfigError, InvalidChange
from patchassign.systems import (
    Applied,
    Conflict,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    Retry,
    SuperOfficeAdapter,
    Unchanged,
)
from patchassign.systems.superoffice import if_unmodified_since

from .helpers import drive

if TYPE_CHECKING:
    import aiohttp

    from patchassign.sandbox import Sandbox

REC: dict[str, Any] = {
    "ProjectmemberId": 7,
    "PersonId": 100,
    "Comment": "",
    "ContactDepartment": "A",
    "Updated": "2026-11-23T05:06:41.0538930+01:00",
}


def adapter(url: str = "https://online.superoffice.com/Cust1", **auth: Any) -> SuperOfficeAdapter:
    return SuperOfficeAdapter(url, **(auth or {"token": "tok"}))


def ops(req: Any) -> Any:
    assert isinstance(req, HttpRequest)
    assert req.body is not None
    return json.loads(req.body)


UPDATED = {"op": "test", "path": "/Updated", "value": REC["Updated"]}


def test_assign_is_a_json_patch_guarded_by_a_test_of_updated() -> None:
    change = Assign(system="superoffice", record=7, to="105")
    req = adapter().prepare(change, Current(REC, REC["Updated"]))
    assert isinstance(req, HttpRequest)
    assert (req.method, req.url) == (
        "PATCH",
        "https://online.superoffice.com/Cust1/api/v1/ProjectMember/7",
    )
    assert req.headers["Authorization"] == "Bearer tok"
    # what SuperOffice documents exactly: a failed test is 409
    assert ops(req) == [UPDATED, {"op": "replace", "path": "/PersonId", "value": 105}]
    assert "If-Unmodified-Since" not in req.headers  # its precision is not documented
    asked = adapter(token="tok", if_unmodified_since=True).prepare(
        change, Current(REC, REC["Updated"])
    )
    assert isinstance(asked, HttpRequest)
    assert asked.headers["If-Unmodified-Since"] == "Mon, 23 Nov 2026 04:06:41 GMT"


def test_merge_set_and_patch_become_guarded_json_patches() -> None:
    a = adapter()
    cur = Current(REC, REC["Updated"])
    merged = ops(
        a.prepare(
            Merge(
                system="superoffice",
                record=7,
                merge={"comment": "x", "contactdepartment": "B"},
                guard=True,
            ),
            cur,
        )
    )
    assert merged == [
        UPDATED,
        {"op": "test", "path": "/Comment", "value": ""},
        {"op": "replace", "path": "/Comment", "value": "x"},
        {"op": "test", "path": "/ContactDepartment", "value": "A"},
        {"op": "replace", "path": "/ContactDepartment", "value": "B"},
    ]
    assert all(o["op"] in ("add", "replace", "remove", "test") for o in merged)
    assert ops(
        a.prepare(SetFields(system="superoffice", record=7, state={"personid": 9}), cur)
    ) == [UPDATED, {"op": "replace", "path": "/PersonId", "value": 9}]
    assert isinstance(
        a.prepare(SetFields(system="superoffice", record=7, state={"PersonId": 100}), cur),
        Unchanged,
    )
    own = [
        {"op": "test", "path": "comment", "value": ""},
        {"op": "replace", "path": "comment", "value": "y"},
    ]
    sent = ops(a.prepare(Patch(system="superoffice", record=7, patch=own, guard=True), cur))
    assert sent == [UPDATED, {"op": "test", "path": "/Comment", "value": ""}, *own]
    failing = a.prepare(
        Patch(
            system="superoffice", record=7, patch=[{"op": "test", "path": "/PersonId", "value": 1}]
        ),
        cur,
    )
    assert isinstance(failing, Conflict)
    assert not failing.recoverable


def test_refused_before_sending() -> None:
    a = adapter()
    with pytest.raises(InvalidChange) as e:
        a.check(
            Patch(
                system="superoffice", record=7, patch=[{"op": "move", "from": "/a", "path": "/b"}]
            )
        )
    assert e.value.field == "patch"
    with pytest.raises(InvalidChange):
        a.check(Assign(system="superoffice", record=7, to="eve"))
    with pytest.raises(InvalidChange):
        a.check(Assign(system="superoffice", record="../x", to="1"))
    with pytest.raises(ConfigError):
        SuperOfficeAdapter("https://x")
    soticket = adapter(ticket="t", app_token="app")
    assert soticket.auth_headers() == {"Authorization": "SOTicket t", "SO-AppToken": "app"}
    assert adapter(user="u", password="p").auth_headers()["Authorization"].startswith("Basic ")


def test_if_unmodified_since_from_updated() -> None:
    assert (
        if_unmodified_since("2005-05-26T02:30:53.0692723+02:00") == "Thu, 26 May 2005 00:30:53 GMT"
    )
    assert if_unmodified_since("2005-05-26T00:30:53Z") == "Thu, 26 May 2005 00:30:53 GMT"
    assert if_unmodified_since("2005-05-26T00:30:53") == "Thu, 26 May 2005 00:30:53 GMT"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, Applied),
        (409, Conflict),
        (412, Conflict),
        (400, Failed),
        (401, Failed),
        (404, Failed),
        (429, Retry),
        (503, Retry),
    ],
)
def test_response_classification(status: int, kind: type) -> None:
    payload = (
        REC
        if status == 200
        else {"Error": True, "ErrorType": "X", "ErrorMessage": f"msg {status}", "ErrorSource": "s"}
    )
    out = adapter().outcome(
        Assign(system="superoffice", record=7, to="1"),
        HttpResponse(status, {}, json.dumps(payload).encode()),
    )
    assert isinstance(out, kind)
    if status != 200:
        assert f"msg {status}" in out.reason  # type: ignore[union-attr]
    if isinstance(out, Conflict):
        assert out.recoverable


async def test_end_to_end_every_change_kind_and_recovery(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    s = sandbox.superoffice
    a = adapter(s.url, token=s.token)
    out, _ = await drive(
        a,
        Assign(system="superoffice", record=1, to="104", expect=str(s.records["1"]["PersonId"])),
        session,
    )
    assert isinstance(out, Applied)
    assert s.records["1"]["PersonId"] == 104
    out, _ = await drive(
        a,
        Merge(system="superoffice", record=2, merge={"contactdepartment": "Team B"}, guard=True),
        session,
    )
    assert isinstance(out, Applied)
    assert s.records["2"]["ContactDepartment"] == "Team B"
    out, _ = await drive(
        a, SetFields(system="superoffice", record=3, state={"Comment": "set"}), session
    )
    assert isinstance(out, Applied)
    assert s.records["3"]["Comment"] == "set"
    out, _ = await drive(
        a,
        Patch(
            system="superoffice",
            record=4,
            patch=[{"op": "replace", "path": "mrmrs", "value": "Dr"}],
        ),
        session,
    )
    assert isinstance(out, Applied)
    assert s.records["4"]["Mrmrs"] == "Dr"

    # a concurrent edit that leaves Updated as it was is caught by the guard's tests
    def sneak(n: int) -> None:
        if n == 0:
            s.records["5"] = {**s.records["5"], "Comment": "someone else"}

    out, writes = await drive(
        a,
        Merge(system="superoffice", record=5, merge={"Comment": "mine"}, guard=True),
        session,
        between=sneak,
    )
    assert isinstance(out, Applied)
    assert len(writes) == 2
    assert s.stats.count("update", 409) == 1
    assert s.records["5"]["Comment"] == "mine"
    # an edit that moves Updated: the test of Updated fails (409), re-read, resend
    out, writes = await drive(
        a,
        Assign(system="superoffice", record=6, to="107"),
        session,
        between=lambda n: _age(s, "6") if n == 0 else None,
    )
    assert isinstance(out, Applied)
    assert s.stats.count("update", 409) == 2
    assert s.records["6"]["PersonId"] == 107
    assert s.stats.writes["6"] == 1


def _age(server: Any, key: str) -> None:
    """Make the stored record look as if it was read long ago and changed since."""
    rec = server.records[key]
    server.records[key] = {
        **rec,
        "Phone": "changed",
        "Updated": "2099-01-01T00:00:00.0000000+01:00",
    }


def test_if_unmodified_since_is_asked_for_in_the_configuration() -> None:
    from patchassign.config import parse_config

    def built(extra: dict[str, Any]) -> Any:
        data = {
            "systems": {"superoffice": {"url": "https://so.example", "token_env": "T", **extra}}
        }
        return parse_config(data, env={"T": "x"}).adapters["superoffice"]

    assert built({}).if_unmodified_since is False
    assert built({"if_unmodified_since": True}).if_unmodified_since is True
