from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

import patchassign as pa
from patchassign import (
    Add,
    Copy,
    InvalidPatch,
    InvalidPointer,
    JsonPatch,
    Move,
    PatchConflict,
    Remove,
    Replace,
    Test,
    apply_patch,
)
from tests.helpers import same_json, snapshot

# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("raw", "index", "op", "field", "message"),
    [
        (b'[{"op": "spam", "path": "/a"}]', 0, None, "op", "unknown op 'spam'"),
        (b'[{"path": "/a"}]', 0, None, "op", "missing required member 'op'"),
        (b'[{"op": 1, "path": "/a"}]', 0, None, "op", "expected a string"),
        (
            b'[{"op": "test", "path": "/a", "value": 1}, {"op": "add", "path": "/a"}]',
            1,
            "add",
            "value",
            "missing required member 'value'",
        ),
        (b'[{"op": "replace", "path": "/a"}]', 0, "replace", "value", "missing"),
        (b'[{"op": "test", "path": "/a"}]', 0, "test", "value", "missing"),
        (b'[{"op": "move", "path": "/a"}]', 0, "move", "from", "missing required member 'from'"),
        (b'[{"op": "copy", "path": "/a"}]', 0, "copy", "from", "missing"),
        (b'[{"op": "copy", "from": "/a"}]', 0, "copy", "path", "missing required member 'path'"),
        (b'[{"op": "remove"}]', 0, "remove", "path", "missing"),
        (
            b'[{"op": "add", "path": null, "value": 1}]',
            0,
            "add",
            "path",
            "expected a string, got null",
        ),
        (
            b'[{"op": "add", "path": 5, "value": 1}]',
            0,
            "add",
            "path",
            "expected a string, got a number",
        ),
        (b'[{"op": "move", "from": 5, "path": "/a"}]', 0, "move", "from", "expected a string"),
        (b'[{"op": "add", "path": "a", "value": 1}]', 0, "add", "path", "start with '/'"),
        (b'[{"op": "add", "path": "/a~2", "value": 1}]', 0, "add", "path", "'~' must be followed"),
        (
            b'[{"op": "copy", "from": "/a~", "path": "/b"}]',
            0,
            "copy",
            "from",
            "'~' must be followed",
        ),
        (b'[{"op": "move", "from": "a", "path": "/b"}]', 0, "move", "from", "start with '/'"),
        (
            b'[{"op": "move", "from": "/a", "path": "/a/b"}]',
            0,
            "move",
            "from",
            "into its own child",
        ),
        (b'[{"op": "remove", "path": ""}]', 0, "remove", "path", "whole document"),
        (b"[1]", 0, None, None, "must be a JSON object, got a number"),
        (b'{"op": "add"}', None, None, None, "must be a JSON array"),
        (b'[{"op": "add",', None, None, None, "not valid JSON"),
        (b"", None, None, None, "not valid JSON"),
    ],
)
def test_invalid_documents_name_operation_member_and_reason(
    raw: bytes, index: int | None, op: str | None, field: str | None, message: str
) -> None:
    for source in (raw, raw.decode()):
        with pytest.raises(InvalidPatch, match=message) as info:
            JsonPatch.from_json(source)
        assert (info.value.index, info.value.op, info.value.field) == (index, op, field)
        assert isinstance(info.value, ValueError)
        if index is not None:
            assert f"operation {index}" in str(info.value)


def test_python_lists_are_validated_like_json() -> None:
    with pytest.raises(InvalidPatch, match="missing required member 'value'") as info:
        JsonPatch([{"op": "add", "path": "/a", "value": 1}, {"op": "add", "path": "/b"}])
    assert info.value.index == 1
    with pytest.raises(InvalidPatch, match="must be a JSON object, got a string"):
        JsonPatch(["add"])  # type: ignore[list-item]
    with pytest.raises(InvalidPatch, match="expected a string"):
        apply_patch({}, [{"op": "add", "path": ["a"], "value": 1}])
    with pytest.raises(InvalidPatch, match="member 'op'"):
        apply_patch({}, [{"op": ["add"], "path": "/a", "value": 1}])
    with pytest.raises(InvalidPatch, match="member 'from'"):
        apply_patch({}, [{"op": "copy", "from": None, "path": "/a"}])


def test_unknown_members_are_ignored_as_rfc6902_requires() -> None:
    p = JsonPatch.from_json(b'[{"op": "remove", "path": "/a", "value": 3, "x-note": "hi"}]')
    assert p.operations == (Remove(path="/a"),)


def test_allowed_ops_refuse_before_anything_is_sent() -> None:
    raw = (
        b'[{"op": "replace", "path": "/a", "value": 1}, {"op": "move", "from": "/a", "path": "/b"}]'
    )
    with pytest.raises(InvalidPatch, match="'move' is not allowed here") as info:
        JsonPatch.from_json(raw, allowed_ops={"add", "remove", "replace", "test"})
    assert (info.value.index, info.value.op, info.value.field) == (1, "move", "op")
    JsonPatch.from_json(raw).ensure_allowed({"replace", "move"})
    with pytest.raises(ValueError, match="unknown operation names"):
        JsonPatch.from_json(raw, allowed_ops={"replace", "mvoe"})


def test_round_trips_through_json_and_lists() -> None:
    raw = (
        b'[{"op":"add","path":"/a","value":{"x":[1,true,null]}},{"op":"remove","path":"/b"},'
        b'{"op":"replace","path":"/c","value":1.5},{"op":"move","from":"/d","path":"/e"},'
        b'{"op":"copy","from":"/e","path":"/f"},{"op":"test","path":"/f","value":"s"}]'
    )
    p = JsonPatch.from_json(raw)
    assert p.to_json() == raw
    assert JsonPatch(p.to_list()) == p
    assert type(p.to_list()) is list
    assert JsonPatch(list(p)) == p
    assert p.to_list()[3] == {"op": "move", "from": "/d", "path": "/e"}
    assert [type(o) for o in p] == [Add, Remove, Replace, Move, Copy, Test]
    assert len(p) == 6
    assert p[0] == Add(path="/a", value={"x": [1, True, None]})
    assert p[1:3] == JsonPatch([Remove(path="/b"), Replace(path="/c", value=1.5)])
    assert p[:2] + p[2:] == p
    assert "Move(from_='/d', path='/e')" in repr(p)


def test_equality_uses_json_types() -> None:
    assert JsonPatch([Test(path="/a", value=1)]) == JsonPatch([Test(path="/a", value=1.0)])
    assert JsonPatch([Test(path="/a", value=1)]) != JsonPatch([Test(path="/a", value=True)])
    assert JsonPatch([Test(path="/a", value=1)]) != JsonPatch([])
    assert JsonPatch([]) != [1]
    with pytest.raises(TypeError):
        hash(JsonPatch([]))


def test_accepts_jsonpatch_objects() -> None:
    theirs = jsonpatch.JsonPatch([{"op": "add", "path": "/a", "value": 1}])
    assert apply_patch({}, theirs) == {"a": 1}
    assert JsonPatch.coerce(theirs) == JsonPatch([Add(path="/a", value=1)])


# --------------------------------------------------------------------------- applying


def test_input_is_not_mutated_and_unchanged_subtrees_are_shared() -> None:
    doc: dict[str, Any] = {
        "users": [{"name": "ada"}, {"name": "bob"}],
        "meta": {"rev": 1},
        "tags": ["x"],
    }
    before = snapshot(doc)
    out = apply_patch(doc, [{"op": "replace", "path": "/users/1/name", "value": "cyd"}])
    assert doc == before
    assert out["users"][1]["name"] == "cyd"
    assert out["meta"] is doc["meta"]
    assert out["tags"] is doc["tags"]
    assert out["users"][0] is doc["users"][0]
    assert out["users"] is not doc["users"]


def test_each_container_is_copied_once_per_patch() -> None:
    """Many operations under one object reuse the copy made by the first one."""
    doc = {"a": {"x": 1}}
    out = apply_patch(doc, [{"op": "add", "path": f"/a/k{i}", "value": i} for i in range(5)])
    assert out["a"] == {"x": 1, "k0": 0, "k1": 1, "k2": 2, "k3": 3, "k4": 4}
    assert doc == {"a": {"x": 1}}


def test_patch_values_are_never_mutated_by_later_operations() -> None:
    patch = JsonPatch(
        [
            Add(path="/a", value={"list": [1]}),
            Add(path="/a/list/-", value=2),
            Add(path="/a/k", value=3),
        ]
    )
    for in_place in (False, True):
        out = patch.apply({}, in_place=in_place)
        assert out == {"a": {"list": [1, 2], "k": 3}}
        assert patch[0] == Add(path="/a", value={"list": [1]})
    # The patch can be reused on many documents (bulk runs do).
    assert patch.apply({"b": 0}) == {"b": 0, "a": {"list": [1, 2], "k": 3}}


@pytest.mark.parametrize("in_place", [False, True])
def test_copy_then_edit_does_not_alias(in_place: bool) -> None:
    doc = {"src": {"v": [1]}}
    out = apply_patch(
        doc,
        [
            {"op": "add", "path": "/src/w", "value": 0},  # the copy-on-write run now owns /src
            {"op": "copy", "from": "/src", "path": "/dst"},
            {"op": "add", "path": "/dst/v/-", "value": 2},
            {"op": "replace", "path": "/src/w", "value": 9},
        ],
        in_place=in_place,
    )
    assert out == {"src": {"v": [1], "w": 9}, "dst": {"v": [1, 2], "w": 0}}
    if not in_place:
        assert doc == {"src": {"v": [1]}}


def test_independent_results_share_nothing() -> None:
    value = {"deep": [1]}
    doc = {"keep": {"x": [1]}}
    out = apply_patch(doc, [{"op": "add", "path": "/new", "value": value}], independent=True)
    assert out == {"keep": {"x": [1]}, "new": {"deep": [1]}}
    assert out["keep"] is not doc["keep"]
    assert out["keep"]["x"] is not doc["keep"]["x"]
    assert out["new"] is not value


@pytest.mark.parametrize(
    "patch",
    [
        [{"op": "add", "path": "/new", "value": 1}, {"op": "test", "path": "/new", "value": 2}],
        [{"op": "replace", "path": "/obj/k", "value": "v2"}, {"op": "remove", "path": "/missing"}],
        [{"op": "remove", "path": "/obj/k"}, {"op": "add", "path": "/arr/9", "value": 0}],
        [
            {"op": "add", "path": "/arr/0", "value": "first"},
            {"op": "remove", "path": "/arr/1"},
            {"op": "replace", "path": "/arr/0", "value": "z"},
            {"op": "test", "path": "/arr/0", "value": "q"},
        ],
        [
            {"op": "move", "from": "/obj/k", "path": "/arr/-"},
            {"op": "copy", "from": "/arr", "path": "/c"},
            {"op": "remove", "path": "/arr/-"},
        ],
        [
            {"op": "replace", "path": "", "value": [1]},
            {"op": "add", "path": "/-", "value": 2},
            {"op": "remove", "path": "/5"},
        ],
    ],
)
def test_in_place_failure_leaves_document_exactly_as_it_was(patch: list[dict[str, Any]]) -> None:
    doc = {"obj": {"k": "v", "none": None}, "arr": [1, 2, 3]}
    before = snapshot(doc)
    ids = (id(doc["obj"]), id(doc["arr"]))
    with pytest.raises(PatchConflict):
        apply_patch(doc, patch, in_place=True)
    assert same_json(doc, before)
    assert list(doc) == list(before), "key order changed"
    assert (id(doc["obj"]), id(doc["arr"])) == ids


def test_in_place_success_mutates_the_input() -> None:
    doc = {"a": [1], "b": {"c": 1}}
    out = apply_patch(
        doc,
        [{"op": "add", "path": "/a/-", "value": 2}, {"op": "remove", "path": "/b/c"}],
        in_place=True,
    )
    assert out is doc
    assert doc == {"a": [1, 2], "b": {}}


@pytest.mark.parametrize(
    ("doc", "value", "equal"),
    [
        (1, 1.0, True),
        (1.0, 1, True),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (0, False, False),
        (None, False, False),
        ("1", 1, False),
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ({"a": None}, {"b": None}, False),
        ([1, 2], [2, 1], False),
        ([True], [1], False),
        ({"x": [0]}, {"x": [False]}, False),
        ([], {}, False),
    ],
)
def test_test_compares_with_json_types(doc: Any, value: Any, equal: bool) -> None:
    patch = [{"op": "test", "path": "/v", "value": value}]
    if equal:
        assert apply_patch({"v": doc}, patch) == {"v": doc}
    else:
        with pytest.raises(PatchConflict) as info:
            apply_patch({"v": doc}, patch)
        assert info.value.reason == "test-failed"
        assert (info.value.expected, info.value.actual) == (value, doc)


def test_errors_name_the_operation_by_index_op_and_path() -> None:
    patch = [{"op": "test", "path": f"/k{i}", "value": i} for i in range(500)]
    doc = {f"k{i}": i for i in range(500)}
    doc["k321"] = -1
    with pytest.raises(PatchConflict) as info:
        apply_patch(doc, patch)
    e = info.value
    assert (e.index, e.op, e.path, e.expected, e.actual) == (321, "test", "/k321", 321, -1)
    assert str(e) == "operation 321 (test /k321): test failed: expected 321, found -1"


def test_a_failed_test_shows_nan_and_infinities_as_themselves_not_as_null() -> None:
    # Not JSON, but Python documents hold them; "expected null, found null" told nothing.
    with pytest.raises(PatchConflict) as info:
        apply_patch({"a": [1, float("nan")]}, [{"op": "test", "path": "/a", "value": None}])
    assert str(info.value).endswith("test failed: expected null, found [1,NaN]")
    with pytest.raises(PatchConflict, match="found -Infinity"):
        apply_patch({"a": float("-inf")}, [{"op": "test", "path": "/a", "value": 0}])


@pytest.mark.parametrize(
    ("patch", "reason", "path", "message"),
    [
        ({"op": "remove", "path": "/a/zz"}, "missing", "/a/zz", "'/a/zz' does not exist"),
        ({"op": "replace", "path": "/q/x", "value": 1}, "missing", "/q/x", "'/q' does not exist"),
        ({"op": "add", "path": "/q/x", "value": 1}, "missing", "/q/x", "no member 'q'"),
        ({"op": "move", "from": "/zz", "path": "/b"}, "missing", "/zz", "'/zz' does not exist"),
        ({"op": "copy", "from": "/l/7", "path": "/b"}, "bad-index", "/l/7", "out of range"),
        (
            {"op": "add", "path": "/l/3", "value": 1},
            "bad-index",
            "/l/3",
            "out of range for the array of length 2",
        ),
        ({"op": "add", "path": "/l/01", "value": 1}, "bad-index", "/l/01", "not an array index"),
        (
            {"op": "replace", "path": "/l/-", "value": 1},
            "bad-index",
            "/l/-",
            "only 'add' may use it",
        ),
        ({"op": "remove", "path": "/l/-"}, "bad-index", "/l/-", "only 'add'"),
        ({"op": "test", "path": "/l/-", "value": 1}, "bad-index", "/l/-", "only 'add'"),
        (
            {"op": "add", "path": "/s/x", "value": 1},
            "not-a-container",
            "/s/x",
            "in the string at '/s'",
        ),
        (
            {"op": "add", "path": "/n/x/y", "value": 1},
            "not-a-container",
            "/n/x/y",
            "in the null at '/n'",
        ),
        ({"op": "add", "path": "/l/x", "value": 1}, "bad-index", "/l/x", "not an array index"),
    ],
)
def test_conflicts_say_which_path_and_why(
    patch: dict[str, Any], reason: str, path: str, message: str
) -> None:
    doc = {"a": {"b": 1}, "l": [1, 2], "s": "str", "n": None}
    with pytest.raises(PatchConflict, match=message) as info:
        apply_patch(doc, [{"op": "test", "path": "/a/b", "value": 1}, patch])
    assert (info.value.index, info.value.op, info.value.reason, info.value.path) == (
        1,
        patch["op"],
        reason,
        path,
    )


def test_root_operations() -> None:
    assert apply_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]
    assert apply_patch("foo", [{"op": "replace", "path": "", "value": "bar"}]) == "bar"
    assert apply_patch({"a": 1}, [{"op": "add", "path": "", "value": {"b": 2}}]) == {"b": 2}
    assert apply_patch({"a": 1}, [{"op": "test", "path": "", "value": {"a": 1.0}}]) == {"a": 1}
    assert apply_patch({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": ""}]) == {"b": 1}
    assert apply_patch({"a": 1}, [{"op": "move", "from": "", "path": ""}]) == {"a": 1}
    assert apply_patch({"a": 1}, [{"op": "copy", "from": "", "path": "/b"}]) == {
        "a": 1,
        "b": {"a": 1},
    }
    with pytest.raises(PatchConflict, match="in the number at the document root"):
        apply_patch(3, [{"op": "add", "path": "/a", "value": 1}])


def test_move_onto_itself_still_requires_the_source() -> None:
    assert apply_patch({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}]) == {"a": 1}
    with pytest.raises(PatchConflict):
        apply_patch({"a": 1}, [{"op": "move", "from": "/b", "path": "/b"}])


def test_array_edits() -> None:
    doc = {"l": ["a", "b", "c"]}
    assert apply_patch(doc, [{"op": "add", "path": "/l/0", "value": "z"}])["l"] == [
        "z",
        "a",
        "b",
        "c",
    ]
    assert apply_patch(doc, [{"op": "add", "path": "/l/3", "value": "z"}])["l"] == [
        "a",
        "b",
        "c",
        "z",
    ]
    assert apply_patch(doc, [{"op": "add", "path": "/l/-", "value": "z"}])["l"] == [
        "a",
        "b",
        "c",
        "z",
    ]
    assert apply_patch(doc, [{"op": "remove", "path": "/l/1"}])["l"] == ["a", "c"]
    assert apply_patch(doc, [{"op": "move", "from": "/l/0", "path": "/l/2"}])["l"] == [
        "b",
        "c",
        "a",
    ]
    assert doc == {"l": ["a", "b", "c"]}


# --------------------------------------------------------------------------- case-insensitive


def test_case_insensitive_add_and_replace_keep_the_existing_spelling() -> None:
    doc = {"Department": "Sales", "Owner": {"Name": "ada"}}
    out = apply_patch(
        doc,
        [
            {"op": "add", "path": "/department", "value": "Ops"},
            {"op": "replace", "path": "owner/name", "value": "bob"},
            {"op": "test", "path": "OWNER/NAME", "value": "bob"},
            {"op": "add", "path": "NewKey", "value": 1},
        ],
        case_insensitive=True,
    )
    assert out == {"Department": "Ops", "Owner": {"Name": "bob"}, "NewKey": 1}
    assert list(out) == ["Department", "Owner", "NewKey"]


def test_case_insensitive_remove_move_copy() -> None:
    doc = {"Members": [{"Role": "x"}], "Old": 1}
    out = apply_patch(
        doc,
        [
            {"op": "remove", "path": "members/0/role"},
            {"op": "move", "from": "old", "path": "/Members/0/Was"},
            {"op": "copy", "from": "MEMBERS/0", "path": "/Copy"},
        ],
        case_insensitive=True,
    )
    assert out == {"Members": [{"Was": 1}], "Copy": {"Was": 1}}


def test_case_insensitive_ambiguity_is_a_conflict_naming_both() -> None:
    with pytest.raises(PatchConflict, match="'Name' and 'name'") as info:
        apply_patch(
            {"Name": 1, "name": 2},
            [{"op": "replace", "path": "/NAME", "value": 3}],
            case_insensitive=True,
        )
    assert (info.value.reason, info.value.index) == ("ambiguous", 0)


def test_strict_mode_is_rfc6901() -> None:
    """The suite requires that ``add /FOO`` on ``{"foo": ...}`` makes a second key."""
    assert apply_patch({"foo": 1}, [{"op": "add", "path": "/FOO", "value": 2}]) == {
        "foo": 1,
        "FOO": 2,
    }
    with pytest.raises(InvalidPointer, match="start with '/'"):
        apply_patch({"foo": 1}, [{"op": "add", "path": "foo", "value": 2}])


def test_patch_parsed_for_case_insensitive_paths_refuses_strict_apply() -> None:
    p = JsonPatch.from_json(
        b'[{"op": "replace", "path": "department", "value": 1}]', case_insensitive=True
    )
    assert p.apply({"Department": 0}, case_insensitive=True) == {"Department": 1}
    with pytest.raises(InvalidPointer) as info:
        p.apply({"Department": 0})
    assert info.value.index == 0


# -- typed errors for what is not a patch (issue: the last typed-error holes) -------------


@pytest.mark.parametrize(
    ("patch", "said"),
    [
        (None, "got null"),
        (5, "got a number"),
        (1.5, "got a number"),
        (True, "got a boolean"),
        ({}, "got an object (an RFC 7396 merge patch?"),
        ({"op": "add", "path": "/a", "value": 1}, "one operation? put it in a list"),
        (object(), "got object"),
    ],
)
def test_a_patch_that_is_not_an_array_is_refused_saying_what_it_is(patch: Any, said: str) -> None:
    with pytest.raises(pa.InvalidPatch, match="a JSON Patch is an array of operations") as e:
        pa.apply_patch({"a": 1}, patch)
    assert said in str(e.value)
    with pytest.raises(pa.InvalidPatch):
        pa.JsonPatch(patch)


def test_a_lone_surrogate_in_an_op_name_is_an_invalid_patch() -> None:
    import json

    ops = json.loads('[{"op": "add", "path": "/a", "value": 1}, {"op": "\\ud800", "path": "/a"}]')
    with pytest.raises(pa.InvalidPatch, match="lone surrogate") as e:
        pa.apply_patch({}, ops)
    assert e.value.index == 1


@pytest.mark.parametrize("member", ["op", "path", "from", "value"])
def test_a_member_named_twice_in_an_operation_is_refused(member: str) -> None:
    """RFC 6902 A.13; msgspec alone would keep the last one silently."""
    ops = {
        "op": '"op": "move", "from": "/a", "path": "/b", "op": "remove"',
        "path": '"op": "move", "from": "/a", "path": "/b", "path": "/c"',
        "from": '"op": "move", "from": "/a", "path": "/b", "from": "/c"',
        "value": '"op": "add", "path": "/b", "value": 1, "value": 2',
    }[member]
    text = f'[{{"op": "test", "path": "/a", "value": 1}}, {{{ops}}}]'
    with pytest.raises(pa.InvalidPatch, match="appears twice") as e:
        pa.JsonPatch.from_json(text)
    assert e.value.index == 1
    assert e.value.field == member


def test_members_named_twice_inside_a_value_are_the_values_business() -> None:
    patch = pa.JsonPatch.from_json(b'[{"op": "add", "path": "/a", "value": {"k": 1, "k": 2}}]')
    assert pa.apply_patch({}, patch) == {"a": {"k": 2}}


def test_an_ordered_dict_document_is_an_object() -> None:
    import json
    from collections import OrderedDict

    doc = json.loads('{"a": {"x": 1}, "l": [1]}', object_pairs_hook=OrderedDict)
    ops = [{"op": "replace", "path": "/a/x", "value": 2}, {"op": "add", "path": "/l/-", "value": 3}]
    assert pa.apply_patch(doc, ops) == {"a": {"x": 2}, "l": [1, 3]}
    assert doc == {"a": {"x": 1}, "l": [1]}  # not mutated
    with pytest.raises(pa.PatchConflict, match="in_place needs plain dicts and lists"):
        pa.apply_patch(doc, ops, in_place=True)
    nested = [OrderedDict(x=1)]  # a JSON array of objects read with object_pairs_hook
    assert pa.apply_patch(nested, [{"op": "add", "path": "/0/y", "value": 2}]) == [{"x": 1, "y": 2}]
    assert nested == [{"x": 1}]
    with pytest.raises(pa.PatchConflict, match="in_place needs plain dicts and lists"):
        pa.apply_patch(nested, [{"op": "add", "path": "/0/y", "value": 2}], in_place=True)
    assert nested == [{"x": 1}]  # rolled back


def test_a_value_nested_too_deeply_is_refused_on_the_way_in() -> None:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    for make in (
        lambda: pa.JsonPatch([{"op": "add", "path": "/a", "value": value}]),
        lambda: pa.JsonPatch([pa.Add("/a", value)]),
        lambda: pa.apply_patch({}, [{"op": "add", "path": "/a", "value": value}]),
    ):
        with pytest.raises(pa.LimitExceeded, match="operation 0"):
            make()
