"""Hostile input to the core, the plan decoder, the adapters and the CLI.

Every outcome must be a typed error or a correct result: no other exception, no hang, no
blow-up. The limits these tests pin are documented in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import patchassign as pa
from patchassign.changes import Change, decode_change
from patchassign.errors import InvalidChange
from patchassign.plan import MAX_LINE, iter_plan
from patchassign.pointer import Pointer
from patchassign.systems import (
    ADAPTERS,
    SYSTEM_NAMES,
    BaseAdapter,
    Conflict,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    RestAdapter,
    Unchanged,
)

DEEP = 100_000

#: JSON's scalars, numbers past 64 bits included.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["", "a", "A", "__proto__", "~0", "/", "-"]), inner, max_size=4
        )
    ),
    max_leaves=20,
)

HOSTILE_TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"9" * 5000,
    b"-" + b"9" * 400,
    b'"\\ud800"',
    b'"\xff\xfe"',
    b"[" * DEEP + b"]" * DEEP,
    b"{" * 5000,
    b'{"a":1,"a":2}',
    b'{"__proto__":{"polluted":true}}',
    b'"' + b"k" * 2_000_000 + b'"',
    b"",
    b"\x00",
]


def typed_patch(data: bytes | str) -> None:
    try:
        patch = pa.JsonPatch.from_json(data)
    except pa.InvalidPatch:
        return
    docs: tuple[Any, ...] = ({}, [], {"a": {"b": [1, 2]}}, None)
    for doc in docs:
        with contextlib.suppress(pa.PatchConflict, pa.InvalidPatch, pa.LimitExceeded):
            pa.apply_patch(doc, patch)


@pytest.mark.parametrize("token", HOSTILE_TOKENS, ids=lambda t: repr(t[:12]))
def test_hostile_values_in_a_patch_are_typed(token: bytes) -> None:
    typed_patch(b'[{"op": "add", "path": "/a", "value": ' + token + b"}]")
    typed_patch(b'[{"op": "add", "path": ' + token + b', "value": 1}]')
    typed_patch(token)


@pytest.mark.parametrize("token", HOSTILE_TOKENS, ids=lambda t: repr(t[:12]))
def test_hostile_values_in_a_plan_line_are_typed(token: bytes) -> None:
    lines = [
        b'{"system": "superoffice", "record": 1, "action": "merge", "merge": {"a": '
        + token
        + b"}}",
        b'{"system": "kintone", "record": ' + token + b', "action": "assign", "to": "eve"}',
        b'{"system": "perscom", "record": 1, "action": "assign", "to": ' + token + b"}",
        token,
    ]
    for number, item in iter_plan(lines):
        if isinstance(item, InvalidChange):
            assert item.line == number
            continue
        check_with_adapter(item)


#: The generic adapter in each of its shapes, as the system "helpdesk".
GENERIC = [
    RestAdapter("https://x.example", system="helpdesk", record="/t/{id}", write=w, version=v)
    for w in ("merge-patch", "json-patch", "put")
    for v in ("etag", "/v", "none")
]


def adapters_of(system: str) -> list[BaseAdapter]:
    """The built-in adapter of ``system`` (the generic one in each shape for "helpdesk");
    none for a name of no built-in system (validation against a config refuses it)."""
    if system == "helpdesk":
        return list(GENERIC)
    if system not in ADAPTERS:
        return []
    return [ADAPTERS[system]("https://x.example", **_creds(system))]


def check_with_adapter(change: Change) -> None:
    for adapter in adapters_of(change.system):
        check_with(adapter, change)


def check_with(adapter: BaseAdapter, change: Change) -> None:
    try:
        adapter.check(change)
    except InvalidChange:
        return
    for record in ({}, {"a": None}, {"assignees": [1, {}], "$revision": 3}):
        current = Current(record, "v1")
        step = adapter.prepare(change, current)
        assert isinstance(step, HttpRequest | Unchanged | Conflict | Failed)
        if isinstance(step, HttpRequest):
            assert "\r" not in step.url
            assert "\n" not in step.url
            for status in (200, 201, 400, 409, 412, 429, 500, 503):
                out = adapter.outcome(change, HttpResponse(status, {}, b'{"x": [}'))
                assert out is not None


def _creds(system: str) -> dict[str, Any]:
    if system == "kintone":
        return {"api_token": "t"}
    if system == "superoffice":
        return {"token": "t"}
    if system == "maxsight":
        return {"api_key": "k", "assigned_by": "me"}
    return {"token": "t"}


def test_deep_nesting_is_refused_with_a_typed_error_everywhere() -> None:
    deep: list[Any] = []
    cur = deep
    for _ in range(DEEP):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    with pytest.raises(pa.LimitExceeded):
        pa.make_patch({"a": deep}, {"a": [deep]})
    with pytest.raises(pa.LimitExceeded):
        pa.apply_patch({"a": deep}, [{"op": "test", "path": "/a", "value": [[1]]}])
    with pytest.raises(pa.LimitExceeded):
        pa.apply_patch({"a": deep}, [], independent=True)
    with pytest.raises(pa.LimitExceeded):
        pa.make_merge_patch({"a": deep}, {"a": [deep]})
    with pytest.raises(pa.InvalidPatch, match="nested too deeply"):
        pa.JsonPatch.from_json(
            b'[{"op":"add","path":"/a","value":' + b"[" * DEEP + b"]" * DEEP + b"}]"
        )
    with pytest.raises(InvalidChange, match="nested too deeply"):
        decode_change(
            b'{"system":"superoffice","record":1,"action":"merge","merge":{"a":'
            + b"[" * DEEP
            + b"]" * DEEP
            + b"}}"
        )
    # shallow work on a deep document that does not descend into it is fine
    assert pa.apply_patch({"a": deep}, [{"op": "add", "path": "/b", "value": 1}])["b"] == 1


def test_keys_with_special_meaning_elsewhere_are_plain_keys_here() -> None:
    doc: dict[str, Any] = {}
    for key in ("__proto__", "constructor", "prototype", "__class__", "-", ""):
        path = "/" + key.replace("~", "~0").replace("/", "~1")
        doc = pa.apply_patch(doc, [{"op": "add", "path": path, "value": {"polluted": True}}])
    assert set(doc) == {"__proto__", "constructor", "prototype", "__class__", "-", ""}
    assert pa.apply_merge_patch({}, {"__proto__": {"x": 1}}) == {"__proto__": {"x": 1}}
    assert type(doc) is dict
    assert not hasattr({}, "polluted")


def test_empty_and_root_paths() -> None:
    assert pa.apply_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]
    assert pa.apply_patch({"": 5}, [{"op": "replace", "path": "/", "value": 6}]) == {"": 6}
    with pytest.raises(pa.InvalidPatch, match="cannot remove the whole document"):
        pa.apply_patch({"a": 1}, [{"op": "remove", "path": ""}])
    with pytest.raises(pa.InvalidPatch):
        pa.apply_patch({"a": 1}, [{"op": "add", "path": "a", "value": 1}])  # strict mode


def test_duplicate_members_in_a_plan_line_are_refused() -> None:
    line = b'{"system": "perscom", "system": "kintone", "record": "1:1", "action": "assign", "to": "x"}'
    with pytest.raises(InvalidChange, match="appears twice"):
        decode_change(line)
    nested = b'{"system": "superoffice", "record": 1, "action": "merge", "merge": {"a": 1, "a": 2}}'
    with pytest.raises(InvalidChange, match="'a' appears twice"):
        decode_change(nested)
    # a member name inside a string value is not a duplicate
    ok = b'{"system": "kintone", "record": "1:1", "action": "assign", "to": "x", "comment": "\\"system\\""}'
    assert decode_change(ok).system == "kintone"


def test_a_line_past_the_limit_is_refused_not_read() -> None:
    big = (
        b'{"system": "kintone", "record": "1:1", "action": "assign", "to": "'
        + b"x" * MAX_LINE
        + b'"}'
    )
    [(_number, item)] = list(iter_plan([big]))
    assert isinstance(item, InvalidChange)
    assert "longer than" in str(item)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_as_a_patch_are_typed(data: bytes) -> None:
    typed_patch(data)


@settings(max_examples=300)
@given(st.text(max_size=40), json_values)
def test_random_pointers_are_typed(text: str, doc: Any) -> None:
    for ci in (False, True):
        try:
            pointer = Pointer.parse(text, case_insensitive=ci)
        except pa.InvalidPointer:
            continue
        with contextlib.suppress(pa.PatchConflict):
            pointer.resolve(doc)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "system": st.sampled_from([*SYSTEM_NAMES, "helpdesk", "jira", ""]),
            "record": st.one_of(
                st.text(max_size=12), st.integers(), st.none(), st.just("../admin")
            ),
            "action": st.sampled_from(
                ["assign", "unassign", "delegate", "merge", "patch", "set", "x"]
            ),
        },
        optional={
            "to": st.one_of(
                st.text(max_size=12), st.lists(st.text(max_size=5), max_size=3), st.integers()
            ),
            "expect": st.one_of(st.text(max_size=12), st.none()),
            "merge": json_values,
            "state": json_values,
            "patch": st.lists(
                st.fixed_dictionaries(
                    {
                        "op": st.sampled_from(["add", "remove", "replace", "test", "move", "copy"]),
                        "path": st.text(max_size=8),
                    },
                    optional={"value": json_values, "from": st.text(max_size=8)},
                ),
                max_size=3,
            ),
            "guard": st.booleans(),
            "to_type": st.sampled_from(["user", "team", "x"]),
            "comment": st.text(max_size=10),
        },
    )
)
def test_random_plan_lines_are_typed_end_to_end(obj: dict[str, Any]) -> None:
    line = json.dumps(obj).encode()
    [(_, item)] = list(iter_plan([line]))
    if isinstance(item, InvalidChange):
        return
    check_with_adapter(item)


#: What Python code puts in a change: JSON's values and what JSON cannot carry as it is.
python_values = st.recursive(
    _scalars
    | st.floats()  # NaN and infinities
    | st.binary(max_size=4)
    | st.dates()
    | st.sets(st.integers(), max_size=2)
    | st.just(object()),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
    ),
    max_leaves=10,
)
_KINDS = [pa.Assign, pa.Unassign, pa.Delegate, pa.MovePerson, pa.Merge, pa.Patch, pa.SetFields]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_KINDS),
    st.sampled_from(SYSTEM_NAMES),
    st.data(),
)
def test_a_change_built_in_python_is_checked_as_a_plan_line_is(
    kind: type[Any], system: str, data: st.DataObject
) -> None:
    """msgspec does not check a struct built in Python: the change types do, so that
    ``Assign(to=None)`` or a NaN in a merge fails where it is written (typed), not deep
    in an adapter or as ``null`` on a server."""
    fields = {}
    for f in msgspec.structs.fields(kind):
        if f.name != "system" and (f.required or data.draw(st.booleans(), label=f.name)):
            fields[f.name] = data.draw(python_values, label=f.name)
    try:
        change = kind(system=system, **fields)
    except InvalidChange:
        return
    # Built: exactly what its JSON says (nothing lost or turned to null on the way).
    assert decode_change(msgspec.json.encode(change)) == change
    check_with_adapter(change)


@pytest.mark.parametrize(
    ("build", "field", "says"),
    [
        (lambda: pa.Assign(system="perscom", record=1, to=None), "to", "got `null`"),  # type: ignore[arg-type]
        (lambda: pa.Assign(system="perscom", record=1.5, to="2"), "record", "got `float`"),  # type: ignore[arg-type]
        (lambda: pa.Assign(system="perscom", record=True, to="2"), "record", "got `bool`"),
        (lambda: pa.Assign(system="perscom", record=2**63, to="2"), "record", "<= 92233"),
        (lambda: pa.Assign(system="PERSCOM", record=1, to="2"), "system", "matching regex"),
        (
            lambda: pa.Assign(system="perscom", record=1, to="2", to_type="x"),  # type: ignore[arg-type]
            "to_type",
            "enum value 'x'",
        ),
        (
            lambda: pa.Merge(system="superoffice", record=1, merge={"a": float("nan")}),
            "merge",
            "nan is not a JSON value",
        ),
        (lambda: pa.Merge(system="superoffice", record=1, merge={1: "a"}), "merge", "the key 1"),  # type: ignore[dict-item]
        (lambda: pa.SetFields(system="superoffice", record=1, state={"a": {2}}), "state", "{2}"),
        (lambda: pa.MovePerson(system="perscom", record=1, to={"unit_id": b"1"}), "to", "b'1'"),
        (
            lambda: pa.Patch(system="superoffice", record=1, patch=[{"op": "x"}]),
            "patch",
            "unknown op",
        ),
    ],
)
def test_a_bad_member_is_named_when_the_change_is_built(build: Any, field: str, says: str) -> None:
    with pytest.raises(InvalidChange) as e:
        build()
    assert e.value.field == field
    assert says in str(e.value)


def test_other_libraries_numbers_become_pythons_own_when_exact() -> None:
    class Count(int):
        pass

    change = pa.SetFields(
        system="superoffice", record=Count(7), state={"n": Count(3), "x": Fraction(3, 2)}
    )
    assert (type(change.record), change.record) == (int, 7)
    assert change.state == {"n": 3, "x": 1.5}
    assert type(change.state["n"]) is int
    with pytest.raises(InvalidChange, match="Fraction"):
        pa.SetFields(system="superoffice", record=1, state={"x": Fraction(1, 3)})


class _Scalar:
    """What numpy's scalars look like to the check (numpy is not a test dependency)."""

    __module__ = "numpy"
    ndim = 0

    def __init__(self, value: Any) -> None:
        self.value = value

    def item(self) -> Any:
        return self.value


def test_numpy_like_scalars_become_pythons_own() -> None:
    change = pa.Merge(
        system="superoffice",
        record=_Scalar(5),  # type: ignore[arg-type]
        merge={"a": _Scalar(1.5), "b": _Scalar(True), "c": [_Scalar("x")]},
    )
    assert change.record == 5
    assert change.merge == {"a": 1.5, "b": True, "c": ["x"]}
    assert type(change.record) is int
    with pytest.raises(InvalidChange, match="nan"):
        pa.Merge(system="superoffice", record=1, merge={"a": _Scalar(float("nan"))})


def test_numpy_scalars_from_a_data_frame_are_taken() -> None:
    np = pytest.importorskip("numpy")
    change = pa.Merge(
        system="superoffice",
        record=np.int64(5),
        merge={"a": np.float32(1.5), "b": np.bool_(True), "c": [np.int8(1)], "d": np.str_("x")},
    )
    assert change.record == 5
    assert change.merge == {"a": 1.5, "b": True, "c": [1], "d": "x"}
    assert [type(v) for v in change.merge.values()] == [float, bool, list, str]
    with pytest.raises(InvalidChange, match="nan"):  # pandas' missing value
        pa.Merge(system="superoffice", record=1, merge={"a": np.float64("nan")})
    with pytest.raises(InvalidChange, match=r"numpy\.ndarray"):
        pa.Merge(system="superoffice", record=1, merge={"a": np.array([1, 2])})


def test_tuples_in_a_built_change_become_lists() -> None:
    change = pa.Assign(system="kintone", record="1:1", to=("ada", "eve"))  # type: ignore[arg-type]
    assert change.to == ["ada", "eve"]
    merge = {"a": ("x", {"b": (1,)})}
    built = pa.Merge(system="superoffice", record=1, merge=merge)
    assert built.merge == {"a": ["x", {"b": [1]}]}
    assert merge == {"a": ("x", {"b": (1,)})}  # the caller's mapping is left as it was


@settings(max_examples=200)
@given(json_values, json_values)
def test_random_documents_round_trip_or_raise_typed(a: Any, b: Any) -> None:
    patch = pa.make_patch(a, b)
    assert msgspec_equal(pa.apply_patch(a, patch), b)
    merge = pa.make_merge_patch(a, b) if not _has_null_member(b) else None
    if merge is not None:
        with contextlib.suppress(pa.PatchError):
            pa.apply_merge_patch(a, merge)


def _has_null_member(v: Any) -> bool:
    if isinstance(v, dict):
        return any(x is None or _has_null_member(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_null_member(x) for x in v)
    return False


def msgspec_equal(x: Any, y: Any) -> bool:
    from patchassign._json import json_equal

    return json_equal(x, y)


def test_the_cli_never_shows_a_traceback_for_hostile_files(tmp_path: Path) -> None:
    files = {
        "deep.json": b"[" * DEEP + b"]" * DEEP,
        "nan.json": b'[{"op":"add","path":"/a","value":NaN}]',
        "utf8.json": b'[{"op":"add","path":"/\xff","value":1}]',
        "plan.jsonl": b"\n".join(
            [
                b'{"system":"perscom","system":"kintone","record":"1:1","action":"assign","to":"x"}',
                b"[" * DEEP,
                b'{"system":"kintone","record":"\xff","action":"assign","to":"x"}',
                b"\x00\x01\x02",
            ]
        ),
    }
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        for args in (
            ["validate", str(path)],
            ["apply", str(path), str(path)],
            ["diff", str(path), str(path)],
        ):
            r = subprocess.run(
                [sys.executable, "-m", "patchassign", *args],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert r.returncode in (0, 1, 2), (args, r.stderr)
            assert "Traceback" not in r.stderr, (args, r.stderr)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"", "the text is empty"),
        (b" \n\t", "the text is empty"),
        (b'{"op": "add"', "the text ends before its JSON value does"),
        # msgspec calls a lone surrogate escape "truncated" input
        (b'{"op": "\\ud800"}', r"\ud800 at character 8 is half of a surrogate pair alone"),
        (b'{"op": "add", "path": "/\\uDBFFx"}', r"\uDBFF at character 24 is half"),
    ],
)
def test_why_a_text_is_not_json_is_said_plainly(text: bytes, says: str) -> None:
    with pytest.raises(InvalidChange, match=re.escape(says)):
        decode_change(text)
    if text.strip():  # the same in a patch document: one character further in
        text = text.replace(b"{", b"[{", 1)
        says = re.sub(r"character (\d+)", lambda m: f"character {int(m[1]) + 1}", says)
    with pytest.raises(pa.InvalidPatch, match=re.escape(says)):
        pa.JsonPatch.from_json(text)


def test_surrogate_pairs_and_escaped_backslashes_are_not_lone_surrogates() -> None:
    # A pair of escapes is one character, and an escaped backslash before "ud800" is text.
    pair = pa.JsonPatch.from_json(b'[{"op": "add", "path": "/\\ud83d\\ude00", "value": 1}]')
    assert pair.apply({}) == {"\U0001f600": 1}
    text = pa.JsonPatch.from_json(b'[{"op": "add", "path": "/\\\\ud800", "value": 1}]')
    assert text.apply({}) == {"\\ud800": 1}


def test_a_diff_no_merge_patch_can_say_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text('{"a": {"b": 1}}')
    b.write_text('{"a": null}')  # a member set to null: a merge patch would delete it
    r = subprocess.run(
        [sys.executable, "-m", "patchassign", "diff", "--merge", str(a), str(b)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "patchassign diff: at '/a': a merge patch cannot set a member to null" in r.stderr


def test_the_cli_says_an_empty_file_is_empty(tmp_path: Path) -> None:
    empty = tmp_path / "doc.json"
    empty.write_bytes(b"")
    r = subprocess.run(
        [sys.executable, "-m", "patchassign", "apply", str(empty), str(empty)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert f"{empty}: not JSON: the text is empty" in r.stderr


#: One change per system that its adapter accepts, blind and read-first.
_ANSWERED = [
    ("perscom", pa.Assign(system="perscom", record=1, to="7")),
    ("perscom", pa.Assign(system="perscom", record=1, to="7", expect="3")),
    ("perscom", pa.SetFields(system="perscom", record=1, state={"unit_id": 4})),
    ("maxsight", pa.Assign(system="maxsight", record="task-1", to="u1", expect="u0")),
    ("maxsight", pa.Unassign(system="maxsight", record="task-1")),
    ("kintone", pa.Assign(system="kintone", record="1:5", to="eve", expect="ada")),
    ("kintone", pa.Assign(system="kintone", record="1:5", to=["eve", "fay"])),
    ("superoffice", pa.Assign(system="superoffice", record=1, to="104", expect="101")),
    ("superoffice", pa.Merge(system="superoffice", record=1, merge={"a": 1}, guard=True)),
    ("findable", pa.Delegate(system="findable", record="asg-1", to="eve@example.com")),
    ("helpdesk", pa.Merge(system="helpdesk", record="t1", merge={"owner": "eve"})),
]

#: Members the adapters read in answers, so that random bodies meet their code paths.
_ANSWER_KEYS = [
    "code", "message", "errors", "messages", "error", "ErrorMessage", "data", "id",
    "record", "records", "revision", "$revision", "value", "type", "assignees",
    "user_id", "updated_at", "Updated", "_etag", "assignee", "owner", "v", "items",
    "results", "delegate", "ProjectMember", "PersonId", "Person", "odata.error",
]  # fmt: skip
_answer_bodies = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.fixed_dictionaries({}, optional=dict.fromkeys(_ANSWER_KEYS, inner))
    ),
    max_leaves=25,
)
_answers = st.tuples(
    st.sampled_from([200, 201, 204, 207, 304, 400, 401, 403, 404, 409, 412, 422, 429, 500, 503])
    | st.integers(min_value=100, max_value=599),
    st.one_of(
        # Mostly an object, as the systems answer, with their members at any depth.
        st.fixed_dictionaries({}, optional=dict.fromkeys(_ANSWER_KEYS, _answer_bodies)).map(
            lambda b: json.dumps(b).encode()
        ),
        _answer_bodies.map(lambda b: json.dumps(b).encode()),
        st.binary(max_size=40),
    ),
    st.dictionaries(
        st.sampled_from(["ETag", "Retry-After", "Content-Type", "Location", "X-Ms-Request-Id"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=16),
        max_size=3,
    ),
)


@settings(
    max_examples=int(os.environ.get("HOSTILE_EXAMPLES", 300)),
    suppress_health_check=[HealthCheck.too_slow],
    deadline=None,
)
@given(st.sampled_from(_ANSWERED), st.lists(_answers, min_size=1, max_size=6))
def test_any_answer_of_a_server_gives_each_change_a_next_step(
    case: tuple[str, Change], answers: list[tuple[int, bytes, dict[str, str]]]
) -> None:
    """Whatever a server answers (any status, any JSON or none, odd headers), the
    adapters classify it and the change goes on or ends with an outcome: an exception
    here would fail the change as a bug in the adapter, and stop its system when three
    records in a row met it."""
    import random

    from patchassign.flow import Done, Flow, RetryPolicy, Send, Wait

    system, change = case
    for adapter in adapters_of(system):
        flow = Flow(adapter, change, policy=RetryPolicy(), rng=random.Random(1), now=0.0)
        step = flow.start(0.0)
        now = 0.0
        for status, body, headers in answers:
            if isinstance(step, Wait):
                now += step.seconds
                step = flow.on_timer(now)
            if not isinstance(step, Send):
                break
            now += 0.01
            step = flow.on_response(HttpResponse(status, headers, body), now)
            assert isinstance(step, Send | Wait | Done)
            # The flow turns what an adapter raises into a failed change: ours never may.
            assert flow.signal != "adapter", repr(flow.raised)


@pytest.mark.parametrize(("system", "change"), _ANSWERED, ids=lambda v: getattr(v, "key", v))
def test_a_servers_message_cannot_rewrite_the_terminal(system: str, change: Change) -> None:
    """A message with a terminal's escape sequence (clear the screen, a hidden link) or a
    line break is shown escaped, in the result and so in the report and the logs."""
    import random

    from patchassign.flow import Done, Flow, RetryPolicy

    body = {
        "code": "CB_VA01\x1b[31m",
        "message": "bad\x1b[2J\x1b]8;;https://evil.example\x07here\nline",
        "errors": {"to": {"messages": ["no\x1b[0m"]}},
    }
    for adapter in adapters_of(system):
        flow = Flow(adapter, change, policy=RetryPolicy(), rng=random.Random(1), now=0.0)
        flow.start(0.0)
        done = flow.on_response(HttpResponse.from_json(400, body), 0.1)
        assert isinstance(done, Done)
        error = done.result.error
        assert error is not None
        assert "bad" in error, error
        assert error.isprintable(), error
        assert "\\x1b[2J" in error
