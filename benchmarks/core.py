"""Patch core benchmarks: patchassign against jsonpatch and fastjsonpatch, one process.

Run: python -m benchmarks.core                 (prints Markdown tables)
     python -m benchmarks.core --only diff     (one section: apply, diff or merge)

fastjsonpatch needs Python >= 3.12: when this runs on 3.11, it re-runs itself in a
cached 3.12 virtualenv with all the peers installed, so every column of a table comes
from the same process. Without a 3.12 interpreter that column says n/a.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, TypeAlias

import json_merge_patch
import jsonpatch

import patchassign as pa
from benchmarks._harness import machine, reexec_with_fastjsonpatch, table, timeit

Row: TypeAlias = tuple[str, dict[str, float | None]]

try:
    import fastjsonpatch
except ImportError:  # Python < 3.12, or not installed
    fastjsonpatch = None


def record(rng: random.Random, i: int) -> dict[str, Any]:
    """One assignment-like REST resource (~15 members, a nested object and a list)."""
    return {
        "id": i,
        "type": rng.choice(["primary", "secondary"]),
        "user_id": rng.randrange(1, 10_000),
        "unit_id": rng.randrange(1, 50),
        "position_id": rng.randrange(1, 200),
        "status": rng.choice(["pending", "in_progress", "completed"]),
        "assignee": {
            "upn": f"user{rng.randrange(10_000)}@example.com",
            "team": f"team-{rng.randrange(40)}",
        },
        "tags": [f"t{rng.randrange(100)}" for _ in range(rng.randrange(1, 5))],
        "text": "x" * rng.randrange(10, 80),
        "document_id": None,
        "active": rng.random() < 0.9,
        "score": rng.random() * 100,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": f"2026-11-{rng.randrange(1, 28):02d}T12:00:00Z",
    }


def big_doc(n: int = 10_000) -> dict[str, Any]:
    rng = random.Random(1)
    return {"records": [record(rng, i) for i in range(n)], "meta": {"count": n}}


def wide_doc(n: int = 2_000) -> dict[str, Any]:
    rng = random.Random(2)
    return {f"key{i:05d}": record(rng, i) for i in range(n)}


def fifty_ops(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rng = random.Random(3)
    keys = sorted(doc)
    ops: list[dict[str, Any]] = []
    for j in range(50):
        k = keys[rng.randrange(len(keys))]
        kind = j % 5
        if kind == 0:
            ops.append(
                {"op": "replace", "path": f"/{k}/assignee/upn", "value": f"new{j}@example.com"}
            )
        elif kind == 1:
            ops.append({"op": "add", "path": f"/{k}/tags/-", "value": f"n{j}"})
        elif kind == 2:
            ops.append({"op": "test", "path": f"/{k}/id", "value": doc[k]["id"]})
        elif kind == 3:
            ops.append({"op": "add", "path": f"/new{j}", "value": {"id": j, "team": "B"}})
        else:
            ops.append({"op": "replace", "path": f"/{k}/status", "value": "completed"})
    return ops


def apply_rows() -> list[Row]:
    rows: list[Row] = []
    big = big_doc()
    two = [
        {"op": "replace", "path": "/records/5000/assignee/team", "value": "team-B"},
        {"op": "add", "path": "/records/9999/tags/-", "value": "moved"},
    ]
    wide = wide_doc()
    fifty = fifty_ops(wide)
    for name, doc, ops in (
        ("apply: 2-op patch, 10,000-record document", big, two),
        ("apply: 50-op patch, 2,000-key document", wide, fifty),
    ):
        expected = jsonpatch.apply_patch(doc, ops)
        cells: dict[str, Callable[[], Any]] = {
            "patchassign": partial(pa.apply_patch, doc, ops),
            "jsonpatch": partial(jsonpatch.apply_patch, doc, ops),
        }
        compiled: dict[str, Callable[[], Any]] = {
            "patchassign": partial(pa.JsonPatch(ops).apply, doc),
            "jsonpatch": partial(jsonpatch.JsonPatch(ops).apply, doc),
        }
        if fastjsonpatch is not None:
            cells["fastjsonpatch"] = partial(fastjsonpatch.apply_patch, doc, ops)
            compiled["fastjsonpatch"] = partial(fastjsonpatch.JsonPatch(ops).apply, doc)
        rows += measure(name, cells, expected)
        rows += measure(name + " (patch pre-parsed)", compiled, expected)
    return rows


def measure(label: str, fns: dict[str, Callable[[], Any]], expected: Any) -> list[Row]:
    """Time each library's call after checking that they all produce ``expected``."""
    for lib, fn in fns.items():
        assert fn() == expected, f"{lib} disagrees"
    times: dict[str, float | None] = {lib: timeit(fn) for lib, fn in fns.items()}
    return [(label, times)]


def edited(doc: dict[str, Any], n_edits: int, seed: int) -> dict[str, Any]:
    """A copy of a records document with ``n_edits`` edits: mostly field changes, a few
    records inserted and removed (so arrays shift)."""
    rng = random.Random(seed)
    out = copy.deepcopy(doc)
    records = out["records"]
    for e in range(n_edits):
        kind = e % 10
        k = rng.randrange(len(records))
        if kind == 8:
            records.insert(k, record(rng, 100_000 + e))
        elif kind == 9:
            del records[k]
        elif kind % 2:
            records[k]["assignee"]["team"] = "team-B"
        else:
            records[k]["status"] = "reassigned"
    return out


def small_pairs(n: int = 1_000) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    rng = random.Random(4)
    pairs = []
    for i in range(n):
        src = record(rng, i)
        dst = copy.deepcopy(src)
        dst["assignee"]["upn"] = f"moved{i}@example.com"
        dst["unit_id"] = src["unit_id"] + 1
        pairs.append((src, dst))
    return pairs


def diff_rows() -> list[Row]:
    rows: list[Row] = []
    src = big_doc()
    dst = edited(src, 100, seed=5)
    fns: dict[str, Callable[[], Any]] = {
        "patchassign": partial(pa.make_patch, src, dst),
        "jsonpatch": partial(jsonpatch.make_patch, src, dst),
    }
    if fastjsonpatch is not None:
        fns["fastjsonpatch"] = partial(fastjsonpatch.make_patch, src, dst)
    sizes = {lib: len(list(_ops(fn()))) for lib, fn in fns.items()}
    for lib, fn in fns.items():  # every diff must reproduce dst
        assert jsonpatch.apply_patch(src, list(_ops(fn()))) == dst, lib
    label = (
        "make_patch: 10,000-record document, 100 edits (ops: "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + ")"
    )
    rows.append((label, {lib: timeit(fn) for lib, fn in fns.items()}))

    pairs = small_pairs()

    def many(make: Callable[[Any, Any], Any]) -> Callable[[], Any]:
        return lambda: [make(a, b) for a, b in pairs]

    fns = {"patchassign": many(pa.make_patch), "jsonpatch": many(jsonpatch.make_patch)}
    if fastjsonpatch is not None:
        fns["fastjsonpatch"] = many(fastjsonpatch.make_patch)
    for lib, fn in fns.items():
        for (a, b), p in zip(pairs, fn(), strict=True):
            assert jsonpatch.apply_patch(a, list(_ops(p))) == b, lib
    rows.append(
        (
            "make_patch: 1,000 small REST resources, 2 edits each",
            {lib: timeit(fn) for lib, fn in fns.items()},
        )
    )
    return rows


def _ops(p: Any) -> list[dict[str, Any]]:
    return p.to_list() if isinstance(p, pa.JsonPatch) else list(p)


def merge_rows() -> list[Row]:
    doc = wide_doc()
    keys = sorted(doc)[::20][:100]
    merge = {
        k: {"status": "moved", "assignee": {"team": "team-B"}, "document_id": None} for k in keys
    }
    expected = json_merge_patch.merge(copy.deepcopy(doc), merge)
    fns: dict[str, Callable[[], Any]] = {
        "patchassign": partial(pa.apply_merge_patch, doc, merge),
        "json-merge-patch": lambda: json_merge_patch.merge(copy.deepcopy(doc), merge),
    }
    rows = measure(
        "merge-apply: 100-member merge patch, 2,000-key document (non-mutating)", fns, expected
    )
    # For scale only: the peer mutating its input, which a caller must then not reuse.
    scratch = [copy.deepcopy(doc) for _ in range(64)]
    mutating = lambda: json_merge_patch.merge(scratch[0], merge)  # noqa: E731
    rows.append(
        (
            "merge-apply, same, json-merge-patch mutating its input (no copy)",
            {"patchassign": rows[0][1]["patchassign"], "json-merge-patch": timeit(mutating)},
        )
    )
    return rows


SECTIONS: list[tuple[str, Callable[[], list[Row]], list[str]]] = [
    (
        "JSON Patch apply (non-mutating: input left unchanged)",
        apply_rows,
        ["patchassign", "jsonpatch", "fastjsonpatch"],
    ),
    ("JSON Patch diff (make_patch)", diff_rows, ["patchassign", "jsonpatch", "fastjsonpatch"]),
    ("JSON Merge Patch apply (RFC 7396)", merge_rows, ["patchassign", "json-merge-patch"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["apply", "diff", "merge"], help="run one section")
    args = parser.parse_args()
    if reexec_with_fastjsonpatch("benchmarks.core"):
        return
    print(f"Machine: {machine()}")
    print(
        f"Versions: patchassign {pa.__version__}, jsonpatch {jsonpatch.__version__}, "
        f"fastjsonpatch {getattr(fastjsonpatch, '__version__', 'n/a')}\n"
    )
    for title, rows, columns in SECTIONS:
        if args.only and rows.__name__ != f"{args.only}_rows":
            continue
        print(table(title, rows(), columns, ours="patchassign"))
        print()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
