"""System adapters: one module per target system behind the :class:`Adapter` protocol.

Adapters do no I/O: they build :class:`HttpRequest` values and read :class:`HttpResponse`
values, so they can be tested with plain bytes. See ``_base`` for the contract.
"""

from __future__ import annotations

from ._base import (
    Adapter,
    Applied,
    BaseAdapter,
    Conflict,
    Credentials,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    Limits,
    Outcome,
    Prepared,
    Retry,
    Secret,
    SystemConfig,
    Unchanged,
    check_header,
    parse_retry_after,
    segment,
)
from .findable import FindableAdapter
from .kintone import KintoneAdapter
from .maxsight import MaxsightAdapter
from .perscom import PerscomAdapter
from .rest import RestAdapter, RestConfig
from .superoffice import SuperOfficeAdapter

__all__ = [
    "ADAPTERS",
    "SYSTEM_NAMES",
    "Adapter",
    "Applied",
    "BaseAdapter",
    "Conflict",
    "Credentials",
    "Current",
    "Failed",
    "FindableAdapter",
    "HttpRequest",
    "HttpResponse",
    "KintoneAdapter",
    "Limits",
    "MaxsightAdapter",
    "Outcome",
    "PerscomAdapter",
    "Prepared",
    "RestAdapter",
    "RestConfig",
    "Retry",
    "Secret",
    "SuperOfficeAdapter",
    "SystemConfig",
    "Unchanged",
    "check_header",
    "parse_retry_after",
    "segment",
]

#: The built-in systems, one line each: the configuration (each adapter's ``config`` and
#: ``from_config``), the CLI and the docs' tables read this registry; the sandbox has
#: its own of fakes (``patchassign.sandbox.SERVERS``).
ADAPTERS: dict[str, type[BaseAdapter]] = {
    a.system: a
    for a in (
        PerscomAdapter,
        MaxsightAdapter,
        KintoneAdapter,
        SuperOfficeAdapter,
        FindableAdapter,
    )
}
#: The built-in systems' names.
SYSTEM_NAMES: tuple[str, ...] = tuple(ADAPTERS)
