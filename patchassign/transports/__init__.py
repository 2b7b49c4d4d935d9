"""Transports: how an :class:`~patchassign.systems.HttpRequest` reaches a server.

The dispatcher sends every request through a :class:`Transport`. :class:`AiohttpTransport`
is the only client-side network I/O in patchassign; :class:`MockTransport` answers from a
function, for tests of the dispatcher and of services that embed it::

    def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse.from_json(200, {"revision": "2"})

    async with Dispatcher(adapters, transport=MockTransport(handler)) as d: ...

A transport answers with an :class:`~patchassign.systems.HttpResponse`, or raises a
:class:`~patchassign.errors.TransportError` subclass that says whether the request may
have reached the server (:class:`~patchassign.errors.ConnectError`: it did not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import Transport
from ._mock import MockTransport

if TYPE_CHECKING:
    from ._aiohttp import AiohttpTransport

__all__ = ["AiohttpTransport", "MockTransport", "Transport"]


def __getattr__(name: str) -> Any:
    # aiohttp is imported only by whoever uses the network transport.
    if name == "AiohttpTransport":
        from ._aiohttp import AiohttpTransport

        return AiohttpTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
