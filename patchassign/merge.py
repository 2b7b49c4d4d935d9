"""JSON Merge Patch (RFC 7396): apply, create, and convert to and from JSON Patch.

A merge patch is a partial document: its members replace the target's, ``null`` deletes
a member, nested objects merge recursively, and anything that is not an object (arrays
included) replaces the target value whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from patchassign._json import json_equal
from patchassign.errors import InvalidPatch, NotRepresentable, PatchConflict, depth_limited
from patchassign.patch import (
    Add,
    Copy,
    JsonPatch,
    Move,
    Operation,
    PatchLike,
    Remove,
    Replace,
    Test,
)
from patchassign.pointer import (
    array_index,
    escape,
    find_key,
    format_tokens,
    parse_tokens,
    refuse_non_string_names,
)

__all__ = [
    "apply_merge_patch",
    "json_patch_to_merge",
    "make_merge_patch",
    "merge_to_json_patch",
]


@depth_limited
def apply_merge_patch(doc: Any, merge: Any, *, case_insensitive: bool = False) -> Any:
    """Apply an RFC 7396 merge patch and return the result; ``doc`` is not mutated.

    Only the objects the patch changes are copied; unchanged subtrees are shared with
    ``doc`` and values from ``merge`` (other than objects) are shared with it: treat
    both as immutable.

    Args:
        doc: The target document.
        merge: The merge patch (a JSON value; an object merges, anything else replaces).
        case_insensitive: Match member names case-insensitively (exact match first);
            an existing member is updated under its existing spelling.

    Objects may be any ``Mapping`` (an ``OrderedDict`` from ``object_pairs_hook``...);
    the objects the patch changes come back as plain ``dict``.

    Raises:
        PatchConflict: In case-insensitive mode, a name matches two members.
        InvalidPatch: In case-insensitive mode, two members of one merge object name the
            same member (``{"a": 1, "A": 2}``): which one wins would be a guess.
        NotRepresentable: In case-insensitive mode, an object has a member whose name
            is not a string (a Python ``int`` key): it has no case to fold.
    """
    try:
        return _merge(doc, merge, case_insensitive)
    except (TypeError, AttributeError):
        refuse_non_string_names(merge, doc)
        raise


def _merge(doc: Any, merge: Any, case_insensitive: bool) -> Any:
    # The recursion stays below the public, depth-guarded entry point: a guard per
    # nested object doubled the cost of a merge.
    # Inline, not _is_object(): this runs once per member of the merge patch.
    tm = type(merge)
    if tm is not dict:
        if tm in _NOT_OBJECTS or not isinstance(merge, Mapping):
            return merge
        merge = dict(merge)
    td = type(doc)
    if td is not dict:
        if td in _NOT_OBJECTS or not isinstance(doc, Mapping):
            return _strip_nulls(merge, case_insensitive)
        doc = dict(doc)
    if case_insensitive and len(merge) > 1:
        _refuse_case_twins(merge)
    out: dict[str, Any] | None = None
    for name, value in merge.items():
        key = name
        if name not in doc and case_insensitive:
            key = find_key(doc, name) or name
        if value is None:
            if key in doc:
                if out is None:
                    out = dict(doc)
                del out[key]
            continue
        old = doc.get(key)
        new = _merge(old, value, case_insensitive)
        if key in doc and new is old:
            continue
        if out is None:
            out = dict(doc)
        out[key] = new
    return doc if out is None else out


#: Plain JSON types that are not objects: no Mapping check (an ABC check) for them.
_NOT_OBJECTS = frozenset({str, int, float, bool, list, type(None)})


def _is_object(value: Any) -> bool:
    """A JSON object: a ``dict`` (fast), or any other ``Mapping`` (an OrderedDict...)."""
    t = type(value)
    return t is dict or (t not in _NOT_OBJECTS and isinstance(value, Mapping))


def _strip_nulls(
    merge: Mapping[str, Any], case_insensitive: bool = False, path: str | None = None
) -> dict[str, Any]:
    """What a merge object becomes where the target has no object: nulls removed. In
    case-insensitive mode its members are merged into an empty object one by one, so two
    that name the same member are as ambiguous there as anywhere: refused."""
    if case_insensitive and len(merge) > 1:
        _refuse_case_twins(merge, path)
    return {
        k: _strip_nulls(v, case_insensitive, None if path is None else f"{path}/{escape(k)}")
        if _is_object(v)
        else v
        for k, v in merge.items()
        if v is not None
    }


def _refuse_case_twins(merge: Mapping[Any, Any], path: str | None = None) -> None:
    """Two members of one merge object that name the same member case-insensitively."""
    seen: dict[Any, Any] = {}
    for name in merge:
        folded = name.casefold() if isinstance(name, str) else name
        other = seen.get(folded)
        if other is not None:
            where = "" if path is None else f" (in the object at {path or '/'!r})"
            raise InvalidPatch(
                f"the merge patch's members {other!r} and {name!r} name the same member "
                f"case-insensitively{where}; which one wins would be a guess"
            )
        seen[folded] = name


@depth_limited
def make_merge_patch(src: Any, dst: Any) -> Any:
    """Return a merge patch that turns ``src`` into ``dst``.

    The patch's values are ``dst``'s own subtrees (shared, not copied).

    Raises:
        NotRepresentable: ``dst`` has an object member whose value is ``null`` where the
            patch would have to set it (RFC 7396 reads ``null`` as "delete"), or an
            object member whose name is not a string (a Python ``int`` key, say).
    """
    try:
        if type(dst) is not dict:
            return dst
        if type(src) is not dict:
            _check_no_nulls(dst, "")
            return dst
        return _merge_diff(src, dst, "")
    except TypeError:
        refuse_non_string_names(src, dst)
        raise


def _merge_diff(src: dict[str, Any], dst: dict[str, Any], path: str) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for k in src:
        if k not in dst:
            if type(k) is not str:
                raise TypeError(k)  # said as NotRepresentable, with where, above
            patch[k] = None
    for k, v in dst.items():
        p = path + "/" + escape(k)
        if k in src:
            old = src[k]
            if old is v:
                continue
            if type(v) is dict and type(old) is dict:
                sub = _merge_diff(old, v, p)
                if sub:
                    patch[k] = sub
                continue
            if json_equal(old, v):
                continue
        if v is None:
            raise NotRepresentable(
                "a merge patch cannot set a member to null (RFC 7396 reads null as delete)", path=p
            )
        if type(v) is dict:
            _check_no_nulls(v, p)
        patch[k] = v
    return patch


def _check_no_nulls(value: dict[str, Any], path: str) -> None:
    for k, v in value.items():
        p = path + "/" + escape(k)
        if v is None:
            raise NotRepresentable(
                "a merge patch cannot set a member to null (RFC 7396 reads null as delete)", path=p
            )
        if type(v) is dict:
            _check_no_nulls(v, p)


@depth_limited
def merge_to_json_patch(
    merge: Any, base: Any = None, *, case_insensitive: bool = False
) -> JsonPatch:
    """Convert a merge patch into the JSON Patch operations a converting server runs.

    With ``base`` (the current document) the conversion is exact: applying the result to
    ``base`` gives ``apply_merge_patch(base, merge)``; ``add`` for new members,
    ``replace`` for existing ones, ``remove`` only for members that exist, and in
    case-insensitive mode paths use the existing spelling.

    Without ``base`` the conversion is structural: ``add`` for every non-null member (it
    creates or replaces), ``remove`` for every null one, and nested objects become paths
    into them. That equals the merge only where every removed member exists and every
    nested object exists as an object; pass ``base`` when that is not known. (``None``
    means "no base", so a document that is ``null`` cannot serve as one.)

    Raises:
        PatchConflict: In case-insensitive mode, a name matches two members of ``base``.
        NotRepresentable: An object has a member whose name is not a string (a Python
            ``int`` key): no path can name it.
    """
    ops: list[Operation] = []
    try:
        if base is None:
            _structural(merge, "", ops, case_insensitive)
        else:
            _exact(merge, base, "", ops, case_insensitive)
    except (TypeError, AttributeError):
        refuse_non_string_names(merge, base)
        raise
    return JsonPatch._new(tuple(ops), trusted=True)


def _structural(merge: Any, path: str, ops: list[Operation], ci: bool) -> None:
    if not _is_object(merge):
        ops.append(Replace(path, merge))
        return
    if ci and len(merge) > 1:
        _refuse_case_twins(merge, path)
    for k, v in merge.items():
        p = path + "/" + escape(k)
        if v is None:
            ops.append(Remove(p))
        elif _is_object(v):
            _structural(v, p, ops, ci)
        else:
            ops.append(Add(p, v))


def _exact(merge: Any, base: Any, path: str, ops: list[Operation], ci: bool) -> None:
    if not _is_object(merge):
        if not json_equal(merge, base):
            ops.append(Replace(path, merge))
        return
    if type(base) is not dict:
        if not _is_object(base):
            ops.append(Replace(path, _strip_nulls(merge, ci, path)))
            return
        base = dict(base)
    if ci and len(merge) > 1:
        _refuse_case_twins(merge, path)
    for name, v in merge.items():
        key = name
        if name not in base and ci:
            key = find_key(base, name, parse_tokens(path)) or name
        p = path + "/" + escape(key)
        exists = key in base
        if v is None:
            if exists:
                ops.append(Remove(p))
        elif not exists:
            ops.append(Add(p, _strip_nulls(v, ci, p) if _is_object(v) else v))
        elif _is_object(v):
            _exact(v, base[key], p, ops, ci)
        elif not json_equal(base[key], v):
            ops.append(Replace(p, v))


@depth_limited
def json_patch_to_merge(patch: PatchLike) -> Any:
    """Return the merge patch with the same effect as a JSON Patch.

    The effect is the same on every document the JSON Patch applies to, with one
    exception no merge patch can avoid: an empty JSON Patch gives ``{}``, which leaves
    objects alone but turns any other document into ``{}`` (RFC 7396).

    Raises:
        NotRepresentable: Naming the first operation that has no merge-patch form:
            ``move``, ``copy``, ``test``; a path that may address an array element (a
            token that is a number or ``-``: without the document it cannot be told
            from an object key, so it is refused); an ``add``/``replace`` of ``null``
            (null means delete) or of an object (a merge would keep the target's
            other members, which ``replace`` drops); operations that contradict each
            other (a path inside a member removed or set to a non-object earlier).
    """
    p = JsonPatch.coerce(patch)
    merge: Any = {}
    for index, op in enumerate(p):
        name = type(op).__name__.lower()

        def fail(
            detail: str, *, index: int = index, op: Operation = op, name: str = name
        ) -> NotRepresentable:
            return NotRepresentable(detail, path=op.path, index=index, op=name)

        if isinstance(op, Move | Copy | Test):
            raise fail(f"a merge patch has no {name!r} operation")
        tokens = p._steps[index][2]
        for t in tokens:
            if t == "-" or _is_index(t):
                raise fail(
                    f"{t!r} may be an array index, and a merge patch cannot address array elements"
                )
        if isinstance(op, Remove):
            value: Any = None
        else:
            value = op.value
            if value is None:
                raise fail(
                    "a merge patch cannot set a value to null (RFC 7396 reads null as delete)"
                )
            if type(value) is dict:
                raise fail(
                    "a merge patch would merge this object into the existing value, not replace it"
                )
        if not tokens:
            if isinstance(op, Remove):
                raise fail("cannot remove the whole document")
            merge = value
            continue
        if type(merge) is not dict:
            raise fail("this operation changes inside a document an earlier operation replaced")
        node = merge
        for depth, t in enumerate(tokens[:-1]):
            child = node.setdefault(t, {})
            if type(child) is not dict:
                raise fail(
                    f"{format_tokens(tokens[: depth + 1])!r} was removed or set to a non-object earlier in the patch"
                )
            node = child
        node[tokens[-1]] = value
    return merge


def _is_index(token: str) -> bool:
    try:
        array_index(token, 1 << 62, (), end_ok=False)
    except PatchConflict:
        return False
    return True
