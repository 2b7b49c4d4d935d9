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

from bisect import bisect_left
from typing import Any, Final

import msgspec

from patchassign.patch import Add, JsonPatch, Operation, Remove, Replace, Test
from patchassign.pointer import escape

__all__ = ["make_patch"]

_encode: Final = msgspec.json.Encoder().encode
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
    """
    ops: list[Operation] = []
    _Differ(ops, guard).diff(src, dst, "")
    return JsonPatch._new(tuple(ops))


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
        except (TypeError, msgspec.EncodeError):
            return False
    return bool(x == y)


def _key(x: Any) -> Any:
    """A hashable stand-in for a value, equal for equal values (for alignment)."""
    try:
        return _encode(x)
    except (TypeError, msgspec.EncodeError):
        return object()  # never equal to anything else


def _lis(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Longest subsequence of ``pairs`` (sorted by second item) increasing in the first."""
    tails: list[int] = []  # tails[k]: smallest first-item ending an increasing run of k+1
    tail_at: list[int] = []
    back: list[int] = [-1] * len(pairs)
    for n, (i, _) in enumerate(pairs):
        k = bisect_left(tails, i)
        if k == len(tails):
            tails.append(i)
            tail_at.append(n)
        else:
            tails[k] = i
            tail_at[k] = n
        back[n] = tail_at[k - 1] if k else -1
    out: list[tuple[int, int]] = []
    n = tail_at[-1] if tail_at else -1
    while n >= 0:
        out.append(pairs[n])
        n = back[n]
    out.reverse()
    return out


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
        if a and b and a.keys().isdisjoint(b.keys()):
            self.replace(path, a, b)  # nothing in common: one op reads better than many
            return
        for k, va in a.items():
            p = path + "/" + (escape(k) if "~" in k or "/" in k else k)
            if k in b:
                vb = b[k]
                if va is not vb and not _same(va, vb):
                    self.diff(va, vb, p)
            else:
                self.remove(p, va)
        for k, vb in b.items():
            if k not in a:
                self.ops.append(Add(path + "/" + (escape(k) if "~" in k or "/" in k else k), vb))

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
        if not mid_a and not mid_b:
            return
        if mid_a and mid_b and not self._worth_keeping(a, b, mid_a, mid_b):
            self.replace(path, a, b)
            return
        self.script(mid_a, mid_b, path, i)

    @staticmethod
    def _worth_keeping(a: list[Any], b: list[Any], mid_a: list[Any], mid_b: list[Any]) -> bool:
        """False when nothing of ``a`` survives: one ``replace`` beats a cascade."""
        if len(mid_a) < len(a) or len(mid_b) < len(b):
            return True
        if len(a) == 1 and len(b) == 1:
            return True  # "/0" is as short as "" and says more
        return not set(map(_key, mid_a)).isdisjoint(map(_key, mid_b))

    def script(self, a: list[Any], b: list[Any], path: str, at: int) -> None:
        """Emit ops turning ``a`` into ``b``, the slice of the array starting at ``at``."""
        if len(a) == len(b):
            mismatched = sum(1 for x, y in zip(a, b, strict=True) if not _same(x, y))
            if mismatched * 2 > len(a) and len(a) > 2:
                # Items may have shifted rather than changed: keep the alignment if it
                # needs fewer ops than pairing by position (at least one per mismatch).
                mark = len(self.ops)
                self.align(a, b, path, at)
                aligned = sum(1 for op in self.ops[mark:] if type(op) is not Test)
                if aligned <= mismatched:
                    return
                del self.ops[mark:]
            # Edits in place: pair by position, diff the pairs that differ.
            for k, (x, y) in enumerate(zip(a, b, strict=True)):
                self.diff(x, y, f"{path}/{at + k}")
            return
        self.align(a, b, path, at)

    def align(self, a: list[Any], b: list[Any], path: str, at: int) -> None:
        """Patience alignment: anchor on items unique to both sides, then fill the gaps."""
        keys_a = [_key(x) for x in a]
        keys_b = [_key(y) for y in b]
        count_a: dict[Any, int] = {}
        pos_a: dict[Any, int] = {}
        for i, k in enumerate(keys_a):
            count_a[k] = count_a.get(k, 0) + 1
            pos_a[k] = i
        count_b: dict[Any, int] = {}
        for k in keys_b:
            count_b[k] = count_b.get(k, 0) + 1
        pairs = [
            (pos_a[k], j) for j, k in enumerate(keys_b) if count_b[k] == 1 and count_a.get(k) == 1
        ]
        anchors = _lis(pairs)
        idx = at  # where the next item of ``a`` sits in the array as patched so far
        prev_i = prev_j = 0
        for ai, bj in [*anchors, (len(a), len(b))]:
            idx = self.gap(
                a[prev_i:ai], b[prev_j:bj], keys_a[prev_i:ai], keys_b[prev_j:bj], path, idx
            )
            idx += 1  # the anchor itself is kept
            prev_i, prev_j = ai + 1, bj + 1

    def gap(
        self, a: list[Any], b: list[Any], ka: list[Any], kb: list[Any], path: str, idx: int
    ) -> int:
        """Ops for one stretch between anchors; returns the index after it."""
        lo = 0
        while lo < len(a) and lo < len(b) and ka[lo] == kb[lo]:
            lo += 1
        hi = 0
        while hi < len(a) - lo and hi < len(b) - lo and ka[len(a) - 1 - hi] == kb[len(b) - 1 - hi]:
            hi += 1
        idx += lo
        a, b = a[lo : len(a) - hi], b[lo : len(b) - hi]
        common = min(len(a), len(b))
        for k in range(common):  # pair what is left in order: edits in place
            self.diff(a[k], b[k], f"{path}/{idx}")
            idx += 1
        for k in range(common, len(a)):
            self.remove(f"{path}/{idx}", a[k])
        for k in range(common, len(b)):
            self.ops.append(Add(f"{path}/{idx}", b[k]))
            idx += 1
        return idx + hi
