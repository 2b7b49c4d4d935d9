"""A transport that answers from a function: no network, for tests."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from ..errors import ResponseTimeout
from ..systems import HttpRequest, HttpResponse

__all__ = ["Handler", "MockTransport"]

Handler = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


class MockTransport:
    """Answers every request by calling ``handler(request)`` (sync or async).

    The handler returns an :class:`~patchassign.systems.HttpResponse`, or raises a
    :class:`~patchassign.errors.TransportError` to play a network failure
    (``ConnectError``: nothing was sent; ``ConnectionLost``: it was). An async handler
    that takes longer than the request's timeout ends in ``ResponseTimeout``, as a slow
    server would.

    Args:
        handler: The function that plays the server.
        record: Keep every request in :attr:`requests` (turn off for long runs).

    Attributes:
        requests: The requests sent so far, in order (when ``record``).
        calls: How many requests were sent.
    """

    def __init__(self, handler: Handler, *, record: bool = True) -> None:
        self.handler = handler
        self.record = record
        self.requests: list[HttpRequest] = []
        self.calls = 0

    def __repr__(self) -> str:
        return f"<MockTransport calls={self.calls}>"

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Call the handler with ``request`` and return its answer."""
        self.calls += 1
        if self.record:
            self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            try:
                async with asyncio.timeout(timeout):
                    answer = await answer
            except TimeoutError:
                host = urlsplit(request.url).netloc
                raise ResponseTimeout(f"no answer within {timeout:.3g}s", host=host) from None
        if not isinstance(answer, HttpResponse):
            raise TypeError(
                f"a MockTransport handler must return an HttpResponse, got {type(answer).__name__}"
            )
        return answer
