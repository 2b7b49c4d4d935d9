"""The generic REST adapter: its configuration, then each write on bytes, then the real
dispatcher against the Helpdesk fake with faults on."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import aiohttp
import pytest

from patchassign.changes import Assign, Delegate, Merge, Patch, SetFields, Unassign
from patchassign.config import parse_config
from patchassign.dispatch import Dispatcher, RetryPolicy
from patchassign.errors import ConfigError, InvalidChange
from patchassign.sandbox import (
    Faults,
    HelpdeskServer,
    Sandbox,
    demo_mismatches,
    demo_plan,
    move_elsewhere,
    moved_elsewhere,
)
from patchassign.systems import (
    Applied,
    Conflict,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    RestAdapter,
    Retry,
    Unchanged,
)

TICKET = {"id": "T1", "title": "x", "assignee": "ada", "queue": "a", "rev": 7}
ETAG = {"ETag": '"3"'}


def rest(**kw: Any) -> RestAdapter:
    opts: dict[str, Any] = {"system": "helpdesk", "record": "/tickets/{id}", "token": "s3cret"}
    return RestAdapter("https://hd.example/api", **{**opts, **kw})


def assign(to: Any = "eve", **kw: Any) -> Assign:
    return Assign(system="helpdesk", record=kw.pop("record", "T1"), to=to, **kw)


def read(adapter: RestAdapter, record: Any = TICKET, headers: Any = ETAG) -> Current:
    got = adapter.current(assign(), HttpResponse.from_json(200, record, headers))
    assert isinstance(got, Current), got
    return got


def sent(step: Any) -> tuple[str, dict[str, str], Any]:
    assert isinstance(step, HttpRequest), step
    return step.method, step.headers, json.loads(step.body or b"null")


# -- configuration -------------------------------------------------------------------------


def table(**kw: Any) -> dict[str, Any]:
    return {"adapter": "rest", "url": "https://hd.example/api", "record": "/t/{id}", **kw}


def test_a_table_with_adapter_rest_builds_the_system_under_its_own_name() -> None:
    config = parse_config(
        {"systems": {"helpdesk": table(token_env="HD", concurrency=4, write="put")}},
        env={"HD": "tok"},
    )
    adapter = config.adapters["helpdesk"]
    assert isinstance(adapter, RestAdapter)
    assert adapter.system == "helpdesk"
    assert adapter.write == "put"
    assert config.limits["helpdesk"].concurrency == 4
    assert "tok" not in repr(adapter)
    assert config.scrub("echo tok") == "echo ********"
    req = adapter.read(assign(record="a/b?c"))
    assert req.url == "https://hd.example/api/t/a%2Fb%3Fc"
    assert req.headers["Authorization"] == "Bearer tok"
    assert "tok" not in repr(req)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"record": "/t/"}, "hold {id} once"),
        ({"record": "t/{id}"}, "start with '/'"),
        ({"record": "/t/{id}/{id}"}, "hold {id} once"),
        ({"read": "/t?id={id}"}, "belongs in the path"),
        ({"write": "post"}, "write"),
        ({"assignee": ""}, "assignee must point into the record"),
        ({"assignee": "/a~2"}, "not a JSON Pointer"),
        ({"version": ""}, "version"),
        # a near miss of a keyword would be a field no record holds: every change failed
        ({"version": "etga"}, "is neither 'etag' nor 'none' (did you mean 'etag'?)"),
        ({"version": "non"}, "(did you mean 'none'?); a field's JSON Pointer starts with '/'"),
        ({"auth_header": "X Bad"}, "not a header name"),
        ({"colour": 1}, "unknown field `colour`"),
        ({"conflict_status": [200]}, "conflict_status"),
        ({"token_env": "NOT_SET"}, "NOT_SET is not set"),
        ({"headers": {"X-A": "a\r\nb"}}, "control character"),
    ],
)
def test_a_bad_table_is_a_config_error_naming_the_setting(
    extra: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError, match=r"systems\.helpdesk") as e:
        parse_config({"systems": {"helpdesk": table(**extra)}}, env={})
    assert needle in str(e.value)


@pytest.mark.parametrize(
    ("version", "etag", "versioned", "field"),
    [
        ("ETag", True, True, ()),  # was a pointer to a field named "ETag"
        ("None", False, False, ()),
        ("updated_at", False, True, ("updated_at",)),  # the slash stays optional
        ("/etag", False, True, ("etag",)),  # a field that happens to be named so
    ],
)
def test_version_keywords_ignore_case_and_pointers_stay_pointers(
    version: str, etag: bool, versioned: bool, field: tuple[str, ...]
) -> None:
    adapter = parse_config(
        {"systems": {"helpdesk": table(token_env="HD", version=version)}}, env={"HD": "tok"}
    ).adapters["helpdesk"]
    assert isinstance(adapter, RestAdapter)
    assert (adapter._etag, adapter.versioned, adapter._version) == (etag, versioned, field)


def test_the_sandboxs_helpdesk_table_round_trips_through_the_configuration() -> None:
    server = HelpdeskServer()
    tab, env = server.settings()
    assert tab["adapter"] == "rest"
    assert "Bearer" not in json.dumps(tab)
    assert server.token not in json.dumps(tab)
    assert env == {tab["token_env"]: server.token}


# -- reads and versions ----------------------------------------------------------------------


def test_etag_mode_needs_an_etag_and_sends_it_in_if_match() -> None:
    a = rest()
    cur = read(a)
    assert cur.version == '"3"'
    method, headers, body = sent(a.prepare(assign(), cur))
    assert (method, body) == ("PATCH", {"assignee": "eve"})
    assert headers["If-Match"] == '"3"'
    assert headers["Content-Type"] == "application/merge-patch+json"
    no_tag = a.current(assign(), HttpResponse.from_json(200, TICKET))
    assert isinstance(no_tag, Failed)
    assert "sent no ETag" in no_tag.reason


def test_a_version_field_is_sent_back_in_each_write_shape() -> None:
    for write, expect in [
        ("merge-patch", {"assignee": "eve", "rev": 7}),
        ("put", {**TICKET, "assignee": "eve"}),
        (
            "json-patch",
            [
                {"op": "test", "path": "/rev", "value": 7},
                {"op": "replace", "path": "/assignee", "value": "eve"},
            ],
        ),
    ]:
        a = rest(write=write, version="/rev")
        cur = read(a, headers={})
        assert cur.version == "7"
        method, headers, body = sent(a.prepare(assign(), cur))
        assert body == expect, write
        assert "If-Match" not in headers
        assert method == ("PUT" if write == "put" else "PATCH")


def test_a_nested_version_in_a_merge_patch_does_not_touch_the_record_read() -> None:
    a = rest(version="/meta/rev")
    record = {"id": "T1", "assignee": "ada", "meta": {"rev": 2, "by": "x"}}
    cur = read(a, record, {})
    _, _, body = sent(
        a.prepare(
            SetFields(system="helpdesk", record="T1", state={"meta": {"rev": 2, "by": "y"}}), cur
        )
    )
    assert body == {"meta": {"by": "y", "rev": 2}}
    assert record == {"id": "T1", "assignee": "ada", "meta": {"rev": 2, "by": "x"}}


def test_version_none_guards_a_json_patch_with_the_old_values() -> None:
    a = rest(write="json-patch", version="none")
    assert a.versioned is False
    assert rest().versioned is True
    cur = read(a, headers={})
    assert cur.version is None
    _, headers, body = sent(a.prepare(assign(), cur))
    assert body == [
        {"op": "test", "path": "/assignee", "value": "ada"},
        {"op": "replace", "path": "/assignee", "value": "eve"},
    ]
    assert "If-Match" not in headers


def test_data_names_the_record_inside_an_envelope() -> None:
    a = rest(data="/data")
    cur = read(a, {"data": TICKET, "meta": {}})
    assert cur.record == TICKET
    assert isinstance(a.current(assign(), HttpResponse.from_json(200, TICKET)), Retry)


def test_a_read_that_is_not_the_record_is_retried_not_believed() -> None:
    page = HttpResponse(200, {"Content-Type": "text/html"}, b"<html>maintenance</html>")
    got = rest().current(assign(), page)
    assert isinstance(got, Retry)
    assert got.ambiguous


# -- the actions -----------------------------------------------------------------------------


def test_assign_with_expect_already_done_or_held_by_someone_else() -> None:
    a = rest()
    cur = read(a)
    assert isinstance(a.prepare(assign("ada"), cur), Unchanged)
    other = a.prepare(assign("eve", expect="bob"), cur)
    assert isinstance(other, Conflict)
    assert not other.recoverable
    _, _, body = sent(a.prepare(assign(["eve", "fay"], expect="ada"), cur))
    assert body == {"assignee": ["eve", "fay"]}
    done = read(a, {**TICKET, "assignee": "eve"})
    assert isinstance(a.prepare(assign("eve", expect="ada"), done), Unchanged)


def test_unassign_is_null_in_every_write_shape() -> None:
    change = Unassign(system="helpdesk", record="T1", expect="ada")
    for write, expect in [
        ("merge-patch", {"assignee": None}),
        ("put", {**TICKET, "assignee": None}),
        ("json-patch", [{"op": "replace", "path": "/assignee", "value": None}]),
    ]:
        a = rest(write=write)
        _, _, body = sent(a.prepare(change, read(a)))
        assert body == expect, write
    unassigned = read(rest(), {k: v for k, v in TICKET.items() if k != "assignee"})
    assert isinstance(rest().prepare(change, unassigned), Unchanged)
    assert rest().holder(unassigned.record) == {"to": None}


def test_merge_patch_and_set_on_each_write_shape() -> None:
    merge = Merge(system="helpdesk", record="T1", merge={"queue": "b", "title": None})
    a = rest(write="json-patch")
    _, _, body = sent(a.prepare(merge, read(a)))
    assert sorted(body, key=lambda op: op["path"]) == [
        {"op": "replace", "path": "/queue", "value": "b"},
        {"op": "remove", "path": "/title"},
    ]
    put = rest(write="put")
    _, _, body = sent(put.prepare(merge, read(put)))
    assert body == {"id": "T1", "assignee": "ada", "queue": "b", "rev": 7}
    setting = SetFields(system="helpdesk", record="T1", state={"Queue": "b"})
    _, _, body = sent(rest().prepare(setting, read(rest())))
    assert body == {"queue": "b"}  # paths are case-insensitive, the record's spelling wins
    cant = rest().prepare(
        SetFields(system="helpdesk", record="T1", state={"queue": None}), read(rest())
    )
    assert isinstance(cant, Failed)
    assert "merge patches" in cant.reason


def test_a_patch_whose_tests_fail_is_a_conflict_unless_already_in_place() -> None:
    ops = [
        {"op": "test", "path": "/queue", "value": "a"},
        {"op": "replace", "path": "/queue", "value": "b"},
    ]
    change = Patch(system="helpdesk", record="T1", patch=ops)
    a = rest(write="json-patch")
    _, _, body = sent(a.prepare(change, read(a)))
    assert body == ops
    assert isinstance(a.prepare(change, read(a, {**TICKET, "queue": "b"})), Unchanged)
    moved = a.prepare(change, read(a, {**TICKET, "queue": "z"}))
    assert isinstance(moved, Conflict)
    assert not moved.recoverable


def test_check_refuses_what_the_table_cannot_do() -> None:
    with pytest.raises(InvalidChange, match="to_type"):
        rest().check(assign(to_type="team"))
    delegate = Delegate(system="helpdesk", record="T1", to="eve")
    with pytest.raises(InvalidChange, match="does not support 'delegate'"):
        rest().check(delegate)
    with pytest.raises(InvalidChange, match="blank"):
        rest().check(assign(record=" "))


# -- outcomes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (200, {**TICKET, "assignee": "eve"}, {"ETag": '"4"'}, Applied),
        (204, None, {"ETag": '"4"'}, Applied),
        (412, {"error": {"message": "stale"}}, {}, Conflict),
        (409, {"error": {"message": "stale"}}, {}, Conflict),
        (428, {"error": {"message": "need If-Match"}}, {}, Failed),
        (422, {"error": {"message": "assignee has the wrong type"}}, {}, Failed),
        (401, {"error": {"message": "who"}}, {}, Failed),
        (429, {}, {"Retry-After": "2"}, Retry),
        (503, {}, {}, Retry),
    ],
)
def test_write_answers(status: int, body: Any, headers: dict[str, str], kind: type) -> None:
    a = rest()
    response = (
        HttpResponse(status, headers)
        if body is None
        else HttpResponse.from_json(status, body, headers)
    )
    got = a.outcome(assign(), response)
    assert isinstance(got, kind), got
    if isinstance(got, Applied):
        assert got.version == '"4"'
    if status == 422:
        assert isinstance(got, Failed)
        assert got.reason == "assignee has the wrong type"
    if status == 429:
        assert isinstance(got, Retry)
        assert got.after == 2
        assert got.throttled
    if status == 401:
        assert isinstance(got, Failed)
        assert got.auth


def test_an_html_200_to_a_write_is_read_back_not_believed() -> None:
    page = HttpResponse(200, {"Content-Type": "text/html"}, b"<html>maintenance</html>")
    got = rest().outcome(assign(), page)
    assert isinstance(got, Retry)
    assert got.ambiguous


# -- end to end: the real dispatcher, the Helpdesk fake, faults on ---------------------------

FAULTS = Faults(throttle=0.05, retry_after=1, unavailable=0.05, drop=0.04, editor=0.15, seed=23)
# Six editor strikes in a row on one ticket (0.15**6 per change) would exhaust the default
# five re-reads about once in 150 runs: the bound is not what this tests.
POLICY = RetryPolicy(base=0.05, cap=1.0, timeout=3.0, attempts=10, settle=0.5, conflicts=20)


@pytest.mark.parametrize("write", ["merge-patch", "json-patch", "put"])
@pytest.mark.parametrize("version", ["etag", "/version"])
async def test_every_write_shape_moves_every_ticket_once_with_faults_on(
    write: str, version: str
) -> None:
    n = 300
    async with Sandbox(demo=n, systems=["helpdesk"], faults=FAULTS) as sb:
        moved = [i for i in range(1, n + 1) if moved_elsewhere(i)]
        for i in moved:
            move_elsewhere(sb, i)
        adapter = sb.helpdesk.adapter(write=write, version=version)
        async with Dispatcher({"helpdesk": adapter}, retry=POLICY) as d:
            results = [r async for r in d.run(demo_plan(n, ["helpdesk"]))]
        server = sb.helpdesk
        assert len(results) == n  # every change has one outcome
        # the moved tickets with an expect (odd ids) are conflicts; nothing else fails
        assert Counter(r.status for r in results) == {
            "applied": n - len(moved),
            "conflict": len(moved),
        }
        assert max(server.stats.writes.values()) == 1  # 0 duplicates
        assert demo_mismatches(sb, n, skip=set(moved)) == []  # 0 lost
        assert sum(server.stats.dropped.values()) > 5
        assert sum(server.stats.edits.values()) > 20
        assert server.stats.count(status=412) + server.stats.count(status=409) > 0


async def test_an_unversioned_system_with_json_patch_never_overwrites_an_editor() -> None:
    """version = "none": the JSON Patch's tests on the old values are the only guard."""
    n = 100
    faults = Faults(editor=0.3, seed=4)
    async with Sandbox(demo=n, systems=["helpdesk"], faults=faults) as sb:
        sb.helpdesk.require_precondition = False
        adapter = sb.helpdesk.adapter(write="json-patch", version="none")
        async with Dispatcher({"helpdesk": adapter}, retry=POLICY) as d:
            results = await d.send_all(demo_plan(n, ["helpdesk"]))
        assert {r.status for r in results} == {"applied"}
        assert demo_mismatches(sb, n) == []
        assert all(
            rec["notes"] == "" or rec["notes"].startswith("edited")
            for rec in sb.helpdesk.records.values()
        )
        assert sum(sb.helpdesk.stats.edits.values()) > 10


async def test_a_weak_etag_fails_clearly_before_any_write() -> None:
    """Express and compressing proxies send weak ETags; If-Match compares strongly, so a
    weak tag sent back could only get 412 after 412. The change fails at the read with a
    reason that says what to change, and nothing is written."""
    n = 4
    async with Sandbox(demo=n, systems=["helpdesk"]) as sb:
        sb.helpdesk.weak_etags = True
        async with Dispatcher({"helpdesk": sb.helpdesk.adapter()}, retry=POLICY) as d:
            results = await d.send_all(demo_plan(n, ["helpdesk"]))
        assert {r.status for r in results} == {"failed"}
        assert all("weak ETag" in (r.error or "") for r in results)
        assert all(r.attempts == 1 for r in results)  # one read each, no write
        assert sum(sb.helpdesk.stats.writes.values()) == 0
        # the fake, like RFC 9110, never matches a weak tag in If-Match
        rec = sb.helpdesk.records["HD-000001"]
        async with (
            aiohttp.ClientSession() as s,
            s.patch(
                f"{sb.helpdesk.url}/api/tickets/HD-000001",
                data=b'{"assignee": "eve"}',
                headers={
                    "Authorization": f"Bearer {sb.helpdesk.token}",
                    "Content-Type": "application/merge-patch+json",
                    "If-Match": f'W/"{rec["version"]}"',
                },
            ) as r,
        ):
            assert r.status == 412
