"""Property tests: our apply against jsonpatch's diff as an independent oracle."""

from __future__ import annotations

from typing import Any

import json_merge_patch
import jsonpatch
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from patchassign import (
    NotRepresentable,
    PatchConflict,
    Test,
    apply_merge_patch,
    apply_patch,
    json_patch_to_merge,
    make_merge_patch,
    make_patch,
    merge_to_json_patch,
)
from tests.helpers import canon, json_pairs, json_values, same_json, snapshot


def _jsonpatch_diff(a: Any, b: Any) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = jsonpatch.make_patch(a, b).patch
    # jsonpatch's own diff treats True == 1 (python-json-patch #90): when its patch
    # does not even reproduce b under its own apply, it is not an oracle for us.
    assume(same_json(jsonpatch.apply_patch(a, ops), b))
    return ops


@given(json_pairs())
def test_applying_jsonpatch_diff_gives_target_and_leaves_input(pair: tuple[Any, Any]) -> None:
    a, b = pair
    ops = _jsonpatch_diff(a, b)
    before, patch_before = snapshot(a), snapshot(ops)
    assert same_json(apply_patch(a, ops), b)
    assert same_json(a, before)
    assert canon(ops) == canon(patch_before), "the patch was mutated"


@given(json_pairs())
def test_in_place_apply_matches_non_mutating_apply(pair: tuple[Any, Any]) -> None:
    a, b = pair
    ops = _jsonpatch_diff(a, b)
    expected = apply_patch(a, ops)
    assert same_json(apply_patch(snapshot(a), ops, in_place=True), expected)


# Keys that differ by more than case, within and across documents: each casefold
# class has one spelling, so exact and case-insensitive lookups always agree.
_ci_keys = st.sampled_from(
    ["Alpha", "beta", "GAMMA", "dElTa", "x/Y", "t~N", "", "0", "-", "Straße"]
)


@given(json_pairs(_ci_keys))
def test_case_insensitive_apply_of_exact_paths_gives_target(pair: tuple[Any, Any]) -> None:
    a, b = pair
    ops = _jsonpatch_diff(a, b)
    before = snapshot(a)
    assert same_json(apply_patch(a, ops, case_insensitive=True), b)
    assert same_json(a, before)


def _leaf_paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(doc, dict) and doc:
        return [p for k, v in doc.items() for p in _leaf_paths(v, (*prefix, k))]
    if isinstance(doc, list) and doc:
        return [p for i, v in enumerate(doc) for p in _leaf_paths(v, (*prefix, str(i)))]
    return [prefix]


def _set(doc: Any, tokens: tuple[str, ...], value: Any) -> Any:
    if not tokens:
        return value
    head, rest = tokens[0], tokens[1:]
    if isinstance(doc, list):
        i = int(head)
        return [*doc[:i], _set(doc[i], rest, value), *doc[i + 1 :]]
    return {**doc, head: _set(doc[head], rest, value)}


@given(json_values(_ci_keys), st.data())
def test_case_insensitive_recased_paths_update_existing_keys(doc: Any, data: st.DataObject) -> None:
    """Re-cased paths without the leading slash replace under the existing spelling."""
    tokens = data.draw(st.sampled_from(_leaf_paths(doc)))
    assume(tokens)
    escaped = [t.replace("~", "~0").replace("/", "~1") for t in tokens]
    recased = "/".join(t.swapcase() if data.draw(st.booleans()) else t for t in escaped)
    # Without its slash, "" would be the whole document: the empty key keeps its "/".
    path = recased if tokens[0] and data.draw(st.booleans()) else "/" + recased
    before = snapshot(doc)
    out = apply_patch(doc, [{"op": "replace", "path": path, "value": "NEW"}], case_insensitive=True)
    assert same_json(out, _set(doc, tokens, "NEW"))
    assert same_json(doc, before)


@given(json_values(), json_values(), st.data())
def test_failed_patch_never_half_applies(a: Any, b: Any, data: st.DataObject) -> None:
    """A patch whose last op fails leaves the input as it was, in both modes."""
    ops = [
        *jsonpatch.make_patch(a, b).patch,
        {"op": "test", "path": "", "value": {"never": "equal"}},
    ]
    assume(not same_json(b, {"never": "equal"}))
    doc = snapshot(a)
    in_place = data.draw(st.booleans())
    try:
        apply_patch(doc, ops, in_place=in_place)
    except PatchConflict:
        pass
    else:
        raise AssertionError("the final test should have failed")
    assert same_json(doc, a)


# --------------------------------------------------------------------------- diff


@given(json_pairs())
def test_make_patch_round_trips_with_our_apply_and_jsonpatch(pair: tuple[Any, Any]) -> None:
    a, b = pair
    before_a, before_b = snapshot(a), snapshot(b)
    p = make_patch(a, b)
    assert same_json(apply_patch(a, p), b)
    assert same_json(jsonpatch.apply_patch(a, p.to_list()), b)
    assert same_json(apply_patch(a, p.to_json()), b), "the encoded patch applies too"
    assert same_json(a, before_a)
    assert same_json(b, before_b)


@given(json_pairs())
def test_guarded_make_patch_applies_to_its_base(pair: tuple[Any, Any]) -> None:
    a, b = pair
    guarded = make_patch(a, b, guard=True)
    assert same_json(apply_patch(a, guarded), b)
    assert [op for op in guarded if not isinstance(op, Test)] == list(make_patch(a, b))


@given(json_pairs(), json_values(max_leaves=3))
def test_guarded_patch_fails_when_the_base_changed(pair: tuple[Any, Any], other: Any) -> None:
    a, b = pair
    guarded = make_patch(a, b, guard=True)
    assume(len(guarded) and isinstance(guarded[0], Test))
    first = guarded[0]
    assert isinstance(first, Test)
    assume(not same_json(first.value, other))
    changed = apply_patch(a, [{"op": "replace", "path": first.path, "value": other}])
    with pytest.raises(PatchConflict) as info:
        apply_patch(changed, guarded)
    assert info.value.reason == "test-failed"
    assert info.value.index == 0


# --------------------------------------------------------------------------- merge


@given(json_values(), json_values())
def test_apply_merge_patch_matches_json_merge_patch(doc: Any, merge: Any) -> None:
    before, merge_before = snapshot(doc), snapshot(merge)
    ours = apply_merge_patch(doc, merge)
    theirs = json_merge_patch.merge(snapshot(doc), snapshot(merge))
    assert same_json(ours, theirs)
    assert same_json(doc, before)
    assert same_json(merge, merge_before)


@given(json_pairs())
def test_make_merge_patch_round_trips_where_representable(pair: tuple[Any, Any]) -> None:
    a, b = pair
    if _has_null_member(b):
        try:
            merge = make_merge_patch(a, b)
        except NotRepresentable:
            return
    else:
        merge = make_merge_patch(a, b)  # must not be refused: nothing to set to null
    assert same_json(apply_merge_patch(a, merge), b)
    assert same_json(json_merge_patch.merge(snapshot(a), snapshot(merge)), b)


def _has_null_member(doc: Any) -> bool:
    if isinstance(doc, dict):
        return any(v is None or _has_null_member(v) for v in doc.values())
    if isinstance(doc, list):
        return any(_has_null_member(v) for v in doc)
    return False


@given(json_values(), json_values())
def test_merge_to_json_patch_with_base_is_exact(base: Any, merge: Any) -> None:
    assume(base is not None)  # None means "no base" (the structural conversion)
    p = merge_to_json_patch(merge, base)
    assert same_json(apply_patch(base, p), apply_merge_patch(base, merge))


@given(json_values(), json_values())
def test_json_patch_to_merge_has_the_same_effect(a: Any, b: Any) -> None:
    p = make_patch(a, b)
    try:
        merge = json_patch_to_merge(p)
    except NotRepresentable:
        return
    # No merge patch leaves every document alone: {} turns a non-object into {}.
    assume(len(p) or isinstance(a, dict))
    assert same_json(apply_merge_patch(a, merge), b)


# -- the last typed-error holes: case twins, non-list patches, dict subclasses -------------

_twin_keys = st.sampled_from(["a", "A", "b", "B", "Straße", "STRASSE"])
_twin_objects = st.dictionaries(_twin_keys, st.none() | st.integers(0, 3), max_size=4)


@given(_twin_objects | st.none() | st.integers(0, 3), _twin_objects)
def test_case_insensitive_merge_either_refuses_twins_or_agrees_with_its_conversion(
    doc: Any, merge: dict[str, Any]
) -> None:
    """Two merge members naming one member case-insensitively are refused, by apply and
    by the conversion alike, with a base or without, whether the target holds an object
    or not (a merge object builds one member by member); otherwise the conversion is
    exact, as documented."""
    from patchassign import InvalidPatch

    folded = [k.casefold() for k in merge]
    twins = len(set(folded)) != len(folded)
    try:
        applied = apply_merge_patch(doc, merge, case_insensitive=True)
    except InvalidPatch:
        assert twins
        with pytest.raises(InvalidPatch):
            merge_to_json_patch(merge, doc, case_insensitive=True)
        with pytest.raises(InvalidPatch):  # the structural conversion, without a base
            merge_to_json_patch(merge, case_insensitive=True)
        return
    except PatchConflict:  # the document itself holds case twins: refusing is right
        return
    assert not twins
    if doc is None:  # None is "no base": the structural conversion, exact only on objects
        return
    converted = merge_to_json_patch(merge, doc, case_insensitive=True)
    assert same_json(apply_patch(doc, converted, case_insensitive=True), applied)


@given(st.none() | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.text())
def test_a_patch_that_is_not_an_array_is_always_an_invalid_patch(patch: Any) -> None:
    from patchassign import InvalidPatch

    with pytest.raises(InvalidPatch):
        apply_patch({"a": 1}, patch)


@given(json_pairs())
def test_ordered_dicts_are_objects_like_dicts(pair: tuple[Any, Any]) -> None:
    """A document and a merge patch made of OrderedDicts (json's object_pairs_hook)
    give what the same made of dicts give."""
    import json
    from collections import OrderedDict

    a, b = pair
    ordered_a = json.loads(json.dumps(a), object_pairs_hook=OrderedDict)
    merge = b  # any JSON value is a merge patch
    ordered_merge = json.loads(json.dumps(merge), object_pairs_hook=OrderedDict)
    assert same_json(apply_merge_patch(ordered_a, ordered_merge), apply_merge_patch(a, merge))
    ops = make_patch(a, b)
    assert same_json(apply_patch(ordered_a, ops), apply_patch(a, ops))
