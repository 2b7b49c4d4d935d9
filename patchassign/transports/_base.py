"""The transport protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..systems import HttpRequest, HttpResponse

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """Sends one request and returns the server's answer.

    Implementations raise :class:`~patchassign.errors.TransportError` subclasses, and only
    those, when there is no answer: :class:`~patchassign.errors.ConnectError` when nothing
    was sent (:class:`~patchassign.errors.SetupError` for DNS and TLS failures),
    :class:`~patchassign.errors.ResponseTimeout` or
    :class:`~patchassign.errors.ConnectionLost` when the request may have arrived. They
    must not resend a request on their own: the dispatcher decides that.
    """

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Send ``request``; the answer must come within ``timeout`` seconds."""
        ...
