"""Apply, diff and merge-patch a record: the patch core in one screen.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import patchassign as pa

record = {"id": 17, "Department": "Sales", "assignees": ["ada", "bob"], "meta": {"rev": 3}}

# 1. Apply a JSON Patch. The input is never mutated; unchanged subtrees are shared.
patch = pa.JsonPatch.from_json(
    b'[{"op": "test", "path": "/assignees/0", "value": "ada"},'
    b' {"op": "replace", "path": "/assignees/0", "value": "cyd"}]'
)
moved = pa.apply_patch(record, patch)
print("applied:   ", moved["assignees"], "(input still", record["assignees"], ")")
assert moved["meta"] is record["meta"]  # shared, not copied

# 2. Case-insensitive paths, leading slash optional (as SuperOffice accepts them).
print(
    "ci apply:  ",
    pa.apply_patch(
        record, [{"op": "replace", "path": "department", "value": "Ops"}], case_insensitive=True
    )["Department"],
)

# 3. A failing operation is named by index, op and path; nothing is applied.
try:
    pa.apply_patch(
        record, [{"op": "remove", "path": "/meta/rev"}, {"op": "test", "path": "/id", "value": 18}]
    )
except pa.PatchConflict as e:
    print("conflict:  ", e)

# 4. Diff two versions of a record into a small patch; guard=True pins the old values
#    with `test` ops, so a server that runs them refuses the patch if the record changed.
after = {**record, "assignees": ["ada", "cyd", "bob"], "Department": "Ops"}
print("diff:      ", pa.make_patch(record, after).to_list())
print("guarded:   ", pa.make_patch(record, after, guard=True).to_list())

# 5. RFC 7396 merge patches, and the JSON Patch a server would run for one.
merge = pa.make_merge_patch(record, after)
print("merge:     ", merge)
assert pa.apply_merge_patch(record, merge) == after
print("as ops:    ", pa.merge_to_json_patch(merge, record).to_list())
