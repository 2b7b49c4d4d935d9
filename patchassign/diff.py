"""Diff two JSON documents into a small, readable RFC 6902 patch.

``make_patch`` emits only ``add``, ``remove``, ``replace`` (and ``test`` with
``guard=True``), never ``move`` or ``copy``, so its patches suit servers that accept no
more (SuperOffice). Array indices are right as the patch applies in order.

Unchanged subtrees are skipped without walking them in Python: identity first, then
Python's ``==`` (C speed; unequal there means unequal as JSON), then equal msgspec
encodings, which prove JSON equality while telling ``true`` from ``1``. The patch's values
are the target document's own subtrees, shared, not copied.
"""

from __future__ import annotations

from itertools import compress
from operator import ne
from typing import Any, Final

import msgspec

from patchassign.errors import LimitExceeded
from patchassign.patch import Add, JsonPatch, Operation, Remove, Replace, Test
from patchassign.pointer import escape as _escape
from patchassign.pointer import refuse_non_string_names

__all__ = ["make_patch"]

# msgpack, not JSON: no float formatting, and true, 1 and 1.0 still encode apart.
_encode: Final = msgspec.msgpack.Encoder().encode
_MISSING: Final = object()
_NUMBERS: Final = (int, float)


def make_patch(src: Any, dst: Any, *, guard: bool = False) -> JsonPatch:
    """Return a JSON Patch that turns ``src`` into ``dst``.

    Args:
        src: The current document.
        dst: The wanted document.
        guard: Put a ``test`` of the old value before every ``replace`` and ``remove``,
            so that a server that runs ``test`` refuses the patch if the record changed
            since ``src`` was read (optimistic concurrency).

    Returns:
        A patch ``p`` with ``apply_patch(src, p) == dst`` (JSON equality). Its values are
        ``dst``'s own subtrees (shared, not copied).

    Raises:
        LimitExceeded: The documents are nested deeper than Python's recursion limit.
        NotRepresentable: An object in them has a member whose name is not a string (a
            Python ``int`` key, say): no path can name it.
    """
    ops: list[Operation] = []
    try:
        if type(src) is dict and type(dst) is dict:
            if src is not dst:  # the walk skips what is equal anyway, member by member
                _diff_dict(src, dst, "", ops, guard)
        elif not _same(src, dst):
            _differ(src, dst, "", ops, guard)
    except RecursionError:
        raise LimitExceeded() from None
    except TypeError:
        refuse_non_string_names(src, dst)
        raise
    return JsonPatch._trusted(tuple(ops))


def _same(x: Any, y: Any) -> bool:
    """Fast, conservative JSON equality: True only if equal; False may be a false alarm.

    A false ``False`` (objects in another key order, ``1`` vs ``1.0`` inside a container)
    only costs a walk: the caller diffs the two and finds nothing to do.
    """
    if x is y:
        return True
    tx = type(x)
    ty = type(y)
    if tx is not ty:
        return tx in _NUMBERS and ty in _NUMBERS and x == y
    if tx is dict or tx is list:
        if x != y:
            return False
        try:
            return _encode(x) == _encode(y)
        except (TypeError, OverflowError, msgspec.EncodeError):
            return False
    return bool(x == y)


def _key(x: Any) -> Any:
    """A hashable stand-in for a value, equal for equal values (for alignment)."""
    try:
        return _encode(x)
    except (TypeError, OverflowError, msgspec.EncodeError):
        return object()  # never equal to anything else


# The differ is plain functions over (ops, guard), not an object: on small documents
# the per-call cost of an instance and of attribute lookups was a third of a diff.


def _differ(a: Any, b: Any, path: str, ops: list[Operation], guard: bool) -> None:
    """Diff two values already known not to be :func:`_same`."""
    ta = type(a)
    if ta is type(b):
        if ta is dict:
            _diff_dict(a, b, path, ops, guard)
            return
        if ta is list:
            _diff_list(a, b, path, ops, guard)
            return
    if guard:
        ops.append(Test(path, a))
    ops.append(Replace(path, b))


def _diff(a: Any, b: Any, path: str, ops: list[Operation], guard: bool) -> None:
    if not _same(a, b):
        _differ(a, b, path, ops, guard)


def _remove(path: str, old: Any, ops: list[Operation], guard: bool) -> None:
    if guard:
        ops.append(Test(path, old))
    ops.append(Remove(path))


def _diff_dict(
    a: dict[str, Any], b: dict[str, Any], path: str, ops: list[Operation], guard: bool
) -> None:
    mark = len(ops)
    removed = 0  # members of a not in b (counted, not those in both: the rare case)
    get = b.get
    for k, va in a.items():
        vb = get(k, _MISSING)
        if va is vb:
            continue
        if vb is _MISSING:
            _remove(path + "/" + (_escape(k) if "~" in k or "/" in k else k), va, ops, guard)
            removed += 1
            continue
        t = type(va)
        if t is not type(vb):
            if not (t in _NUMBERS and type(vb) in _NUMBERS and va == vb):
                p = path + "/" + (_escape(k) if "~" in k or "/" in k else k)
                if guard:
                    ops.append(Test(p, va))
                ops.append(Replace(p, vb))
        elif t is dict or t is list:
            # _same(), inlined: this runs for every nested object and array.
            if va == vb:
                try:
                    if _encode(va) == _encode(vb):
                        continue
                except (TypeError, OverflowError, msgspec.EncodeError):
                    pass
            p = path + "/" + (_escape(k) if "~" in k or "/" in k else k)
            if t is dict:
                _diff_dict(va, vb, p, ops, guard)
            else:
                _diff_list(va, vb, p, ops, guard)
        elif va != vb:
            p = path + "/" + (_escape(k) if "~" in k or "/" in k else k)
            if guard:
                ops.append(Test(p, va))
            ops.append(Replace(p, vb))
    common = len(a) - removed
    if not common and a and b:
        # Nothing in common: one op reads better than many.
        del ops[mark:]
        if guard:
            ops.append(Test(path, a))
        ops.append(Replace(path, b))
        return
    if common < len(b):
        for k, vb in b.items():
            if k not in a:
                ops.append(Add(path + "/" + (_escape(k) if "~" in k or "/" in k else k), vb))


def _diff_list(a: list[Any], b: list[Any], path: str, ops: list[Operation], guard: bool) -> None:
    n, m = len(a), len(b)
    lim = min(n, m)
    i = 0
    while i < lim and _same(a[i], b[i]):
        i += 1
    j = 0
    while j < lim - i and _same(a[n - 1 - j], b[m - 1 - j]):
        j += 1
    mid_a = a[i : n - j]
    mid_b = b[i : m - j]
    if not mid_a or not mid_b:
        for x in mid_a:
            _remove(f"{path}/{i}", x, ops, guard)
        for k, y in enumerate(mid_b):
            ops.append(Add(f"{path}/{i + k}", y))
        return
    keys_a = list(map(_key, mid_a))
    keys_b = list(map(_key, mid_b))
    if (
        len(mid_a) == n
        and len(mid_b) == m
        and not (n == 1 and m == 1)
        and set(keys_a).isdisjoint(keys_b)
    ):
        if guard:  # nothing survives: one op beats a cascade
            ops.append(Test(path, a))
        ops.append(Replace(path, b))
        return
    if len(mid_a) == len(mid_b):
        mismatched = sum(map(ne, keys_a, keys_b))
        if mismatched * 2 > len(mid_a) and len(mid_a) > 2:
            # Items may have shifted rather than changed: keep the alignment if it
            # needs fewer ops than pairing by position (at least one per mismatch).
            mark = len(ops)
            _align(mid_a, mid_b, keys_a, keys_b, path, i, ops, guard)
            if sum(1 for op in ops[mark:] if type(op) is not Test) <= mismatched:
                return
            del ops[mark:]
        # Edits in place: pair by position, diff the pairs that differ.
        for k in compress(range(len(mid_a)), map(ne, keys_a, keys_b)):
            _diff(mid_a[k], mid_b[k], f"{path}/{i + k}", ops, guard)
        return
    _align(mid_a, mid_b, keys_a, keys_b, path, i, ops, guard)


def _align(
    a: list[Any],
    b: list[Any],
    keys_a: list[Any],
    keys_b: list[Any],
    path: str,
    at: int,
    ops: list[Operation],
    guard: bool,
) -> None:
    """Walk both arrays; skip equal runs, and at each mismatch insert, delete or edit.

    Equal runs are found by galloping with slice comparisons (C speed). At a mismatch,
    an item of one side that occurs (once, on both sides) further on in the other side
    marks insertions or deletions up to there; otherwise the two items are a change in
    place. Greedy, so not always minimal, but linear.
    """
    n, m = len(a), len(b)
    first_b = dict(zip(reversed(keys_b), range(m - 1, -1, -1), strict=True))
    last_b = dict(zip(keys_b, range(m), strict=True))
    first_a = dict(zip(reversed(keys_a), range(n - 1, -1, -1), strict=True))
    last_a = dict(zip(keys_a, range(n), strict=True))
    i = j = 0
    idx = at  # where a[i] sits in the array as patched so far
    while i < n and j < m:
        if keys_a[i] == keys_b[j]:
            run = _run(keys_a, keys_b, i, j)
            i += run
            j += run
            idx += run
            continue
        ka, kb = keys_a[i], keys_b[j]
        ja = first_b.get(ka, -1)
        ja = ja if ja > j and ja == last_b[ka] and first_a[ka] == last_a[ka] else -1
        ib = first_a.get(kb, -1)
        ib = ib if ib > i and ib == last_a[kb] and first_b[kb] == last_b[kb] else -1
        if ja >= 0 and (ib < 0 or ja - j <= ib - i):
            for y in b[j:ja]:  # b[j:ja] are new, a[i] follows them
                ops.append(Add(f"{path}/{idx}", y))
                idx += 1
            j = ja
        elif ib >= 0:
            for x in a[i:ib]:  # a[i:ib] are gone, b[j] was a[ib]
                _remove(f"{path}/{idx}", x, ops, guard)
            i = ib
        else:
            _diff(a[i], b[j], f"{path}/{idx}", ops, guard)
            i += 1
            j += 1
            idx += 1
    for x in a[i:]:
        _remove(f"{path}/{idx}", x, ops, guard)
    for y in b[j:]:
        ops.append(Add(f"{path}/{idx}", y))
        idx += 1


def _run(ka: list[Any], kb: list[Any], i: int, j: int) -> int:
    """Length of the equal run of ``ka[i:]`` and ``kb[j:]`` (at least 1 is known)."""
    limit = min(len(ka) - i, len(kb) - j)
    lo, step = 1, 2  # ka[i:i+lo] == kb[j:j+lo] holds
    while step <= limit and ka[i + lo : i + step] == kb[j + lo : j + step]:
        lo, step = step, step * 2
    hi = min(step, limit + 1)  # the run is shorter than hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ka[i + lo : i + mid] == kb[j + lo : j + mid]:
            lo = mid
        else:
            hi = mid
    return lo
