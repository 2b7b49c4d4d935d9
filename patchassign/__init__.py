"""patchassign: change who is assigned to what in other systems, at volume.

The public API is exactly what this module lists in ``__all__``; everything else is
internal and may change without notice. ``patchassign.systems``, ``patchassign.sandbox``,
``patchassign.transports`` and ``patchassign.hooks`` are public subpackages. Importing
this module does not import aiohttp: the network transport is loaded when a dispatcher
starts without a transport of your own.
"""

from __future__ import annotations

import typing as _typing

from patchassign.bulk import InvalidPlan, PreflightFailed
from patchassign.changes import (
    Assign,
    Change,
    Delegate,
    Merge,
    MovePerson,
    Patch,
    SetFields,
    Unassign,
    decode_change,
)
from patchassign.changes import SetFields as Set
from patchassign.diff import make_patch
from patchassign.dispatch import Check, Dispatcher, Run
from patchassign.errors import (
    ConfigError,
    ConnectError,
    ConnectionLost,
    InvalidChange,
    InvalidPatch,
    InvalidPointer,
    LimitExceeded,
    NotRepresentable,
    PatchassignError,
    PatchConflict,
    PatchError,
    PlanError,
    ResponseTimeout,
    SetupError,
    TransportError,
)
from patchassign.flow import Result, RetryPolicy
from patchassign.hooks import Hooks
from patchassign.journal import JournalError
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
from patchassign.systems import HttpRequest, HttpResponse, Limits
from patchassign.transports import MockTransport, Transport

__version__ = "0.1.0.dev0"

__all__ = [
    "Add",
    "Assign",
    "Change",
    "Check",
    "ConfigError",
    "ConnectError",
    "ConnectionLost",
    "Copy",
    "Delegate",
    "Dispatcher",
    "Hooks",
    "HttpRequest",
    "HttpResponse",
    "InvalidChange",
    "InvalidPatch",
    "InvalidPlan",
    "InvalidPointer",
    "JournalError",
    "JsonPatch",
    "LimitExceeded",
    "Limits",
    "Merge",
    "MockTransport",
    "Move",
    "MovePerson",
    "NotRepresentable",
    "Operation",
    "Patch",
    "PatchConflict",
    "PatchError",
    "PatchassignError",
    "PlanError",
    "Pointer",
    "PreflightFailed",
    "Remove",
    "Replace",
    "ResponseTimeout",
    "Result",
    "RetryPolicy",
    "Run",
    "Set",
    "SetFields",
    "SetupError",
    "Test",
    "Transport",
    "TransportError",
    "Unassign",
    "__version__",
    "apply_merge_patch",
    "apply_patch",
    "decode_change",
    "json_patch_to_merge",
    "make_merge_patch",
    "make_patch",
    "merge_to_json_patch",
]

# The public names belong to the package (as in httpx): reprs, tracebacks and the docs
# say ``patchassign.Dispatcher``, not where it happens to be defined. msgspec and typing
# resolve a class's postponed annotations in the module its __module__ names, so each
# public class's own annotations are resolved first, where it was defined.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and "__annotations__" in vars(_obj):
        _hints = _typing.get_type_hints(_obj, include_extras=True)
        _obj.__annotations__ = {k: _hints[k] for k in vars(_obj)["__annotations__"]}
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or (callable(_obj) and hasattr(_obj, "__code__")):
        _obj.__module__ = "patchassign"
del _name, _obj, _hints
