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

from patchassign.errors import depth_limited
from patchassign.patch import Add, JsonPatch, Operation, Remove, Replace, Test
from patchassign.pointer import escape

__all__ = ["make_patch"]

# msgpack, not JSON: no float formatting, and true, 1 and 1.0 still encode apart.
_encode: Final = msgspec.msgpack.Encoder().encode
_MISSING: Final = object()
_NUMBERS: Final = (int, float)


@depth_limited
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
    """
    ops: list[Operation] = []
    _Differ(ops, guard).diff(src, dst, "")
    return JsonPatch._new(tuple(ops), trusted=True)


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


class _Differ:
    __slots__ = ("guard", "ops")

    def __init__(self, ops: list[Operation], guard: bool) -> None:
        self.ops = ops
        self.guard = guard

    def diff(self, a: Any, b: Any, path: str) -> None:
        if _same(a, b):
            return
        ta = type(a)
        if ta is type(b):
            if ta is dict:
                self.diff_dict(a, b, path)
                return
            if ta is list:
                self.diff_list(a, b, path)
                return
        self.replace(path, a, b)

    def replace(self, path: str, old: Any, new: Any) -> None:
        if self.guard:
            self.ops.append(Test(path, old))
        self.ops.append(Replace(path, new))

    def remove(self, path: str, old: Any) -> None:
        if self.guard:
            self.ops.append(Test(path, old))
        self.ops.append(Remove(path))

    def diff_dict(self, a: dict[str, Any], b: dict[str, Any], path: str) -> None:
        if a and b and next(iter(a)) not in b and a.keys().isdisjoint(b.keys()):
            self.replace(path, a, b)  # nothing in common: one op reads better than many
            return
        common = 0
        for k, va in a.items():
            vb = b.get(k, _MISSING)
            if va is vb:
                common += 1
                continue
            if vb is _MISSING:
                self.remove(path + "/" + _esc(k), va)
                continue
            common += 1
            t = type(va)
            if t is type(vb) and t is not dict and t is not list:
                if va != vb:
                    self.replace(path + "/" + _esc(k), va, vb)
            elif not _same(va, vb):
                self.diff(va, vb, path + "/" + _esc(k))
        if common < len(b):
            for k, vb in b.items():
                if k not in a:
                    self.ops.append(Add(path + "/" + _esc(k), vb))

    def diff_list(self, a: list[Any], b: list[Any], path: str) -> None:
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
                self.remove(f"{path}/{i}", x)
            for k, y in enumerate(mid_b):
                self.ops.append(Add(f"{path}/{i + k}", y))
            return
        keys_a = list(map(_key, mid_a))
        keys_b = list(map(_key, mid_b))
        if (
            len(mid_a) == n
            and len(mid_b) == m
            and not (n == 1 and m == 1)
            and set(keys_a).isdisjoint(keys_b)
        ):
            self.replace(path, a, b)  # nothing survives: one op beats a cascade
            return
        if len(mid_a) == len(mid_b):
            mismatched = sum(map(ne, keys_a, keys_b))
            if mismatched * 2 > len(mid_a) and len(mid_a) > 2:
                # Items may have shifted rather than changed: keep the alignment if it
                # needs fewer ops than pairing by position (at least one per mismatch).
                mark = len(self.ops)
                self.align(mid_a, mid_b, keys_a, keys_b, path, i)
                if sum(1 for op in self.ops[mark:] if type(op) is not Test) <= mismatched:
                    return
                del self.ops[mark:]
            # Edits in place: pair by position, diff the pairs that differ.
            for k in compress(range(len(mid_a)), map(ne, keys_a, keys_b)):
                self.diff(mid_a[k], mid_b[k], f"{path}/{i + k}")
            return
        self.align(mid_a, mid_b, keys_a, keys_b, path, i)

    def align(
        self, a: list[Any], b: list[Any], keys_a: list[Any], keys_b: list[Any], path: str, at: int
    ) -> None:
        """Walk both arrays; skip equal runs, and at each mismatch insert, delete or edit.

        Equal runs are found by galloping with slice comparisons (C speed). At a
        mismatch, an item of one side that occurs (once, on both sides) further on in
        the other side marks insertions or deletions up to there; otherwise the two
        items are a change in place. Greedy, so not always minimal, but linear.
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
                    self.ops.append(Add(f"{path}/{idx}", y))
                    idx += 1
                j = ja
            elif ib >= 0:
                for x in a[i:ib]:  # a[i:ib] are gone, b[j] was a[ib]
                    self.remove(f"{path}/{idx}", x)
                i = ib
            else:
                self.diff(a[i], b[j], f"{path}/{idx}")
                i += 1
                j += 1
                idx += 1
        for x in a[i:]:
            self.remove(f"{path}/{idx}", x)
        for y in b[j:]:
            self.ops.append(Add(f"{path}/{idx}", y))
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


def _esc(key: str) -> str:
    return escape(key) if "~" in key or "/" in key else key
