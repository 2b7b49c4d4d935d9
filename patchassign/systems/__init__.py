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
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    Limits,
    Outcome,
    Prepared,
    Retry,
    Secret,
    Unchanged,
    check_header,
    parse_retry_after,
    segment,
)
from .findable import FindableAdapter
from .kintone import KintoneAdapter
from .maxsight import MaxsightAdapter
from .perscom import PerscomAdapter
from .superoffice import SuperOfficeAdapter

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Applied",
    "BaseAdapter",
    "Conflict",
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
    "Retry",
    "Secret",
    "SuperOfficeAdapter",
    "Unchanged",
    "check_header",
    "parse_retry_after",
    "segment",
]

ADAPTERS: dict[str, type[BaseAdapter]] = {
    "perscom": PerscomAdapter,
    "maxsight": MaxsightAdapter,
    "kintone": KintoneAdapter,
    "superoffice": SuperOfficeAdapter,
    "findable": FindableAdapter,
}
