"""aioresponses, made to work with aiohttp >= 3.14.

aiohttp 3.14 (a security release) added a required ``stream_writer`` argument to
``ClientResponse``; aioresponses 0.7.x does not pass it (pnuckowski/aioresponses#289, fix
pending in #288). Until a release has the fix, mocked responses use a ``ClientResponse``
that supplies a finished writer. Remove this module when aioresponses catches up.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiohttp import ClientResponse
from aioresponses import CallbackResult as _CallbackResult
from aioresponses import aioresponses as _aioresponses

__all__ = ["CallbackResult", "aioresponses"]


class _Response(ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class aioresponses(_aioresponses):
    def __enter__(self) -> aioresponses:
        super().__enter__()
        return self

    def add(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _Response)
        super().add(*args, **kwargs)


class CallbackResult(_CallbackResult):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _Response)
        super().__init__(*args, **kwargs)
