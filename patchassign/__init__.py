"""patchassign: change who is assigned to what in other systems, at volume.

The public API is exactly what this module lists in ``__all__``; everything else is
internal and may change without notice.
"""

from __future__ import annotations

from patchassign.diff import make_patch
from patchassign.errors import (
    InvalidPatch,
    InvalidPointer,
    LimitExceeded,
    NotRepresentable,
    PatchConflict,
    PatchError,
)
from patchassign.merge import (
    apply_merge_patch,
    json_patch_to_merge,
    make_merge_patch,
    merge_to_json_patch,
)
from patchassign.patch import (
    Add,
    Copy,
    JsonPatch,
    Move,
    Operation,
    Remove,
    Replace,
    Test,
    apply_patch,
)
from patchassign.pointer import Pointer

__version__ = "0.1.0.dev0"

__all__ = [
    "Add",
    "Copy",
    "InvalidPatch",
    "InvalidPointer",
    "JsonPatch",
    "LimitExceeded",
    "Move",
    "NotRepresentable",
    "Operation",
    "PatchConflict",
    "PatchError",
    "Pointer",
    "Remove",
    "Replace",
    "Test",
    "__version__",
    "apply_merge_patch",
    "apply_patch",
    "json_patch_to_merge",
    "make_merge_patch",
    "make_patch",
    "merge_to_json_patch",
]
