"""Instrumentation hooks: what the dispatcher tells your metrics and logs.

Subclass :class:`Hooks`, override the events you care about, and pass instances to the
dispatcher (``Dispatcher(..., hooks=[MyHooks()])``). Hooks are called synchronously
from the dispatcher's event loop, so they must be quick (count, log, enqueue); an
``async def`` hook is refused (``ConfigError``): it would never be awaited. An
exception raised by a hook is logged and does not disturb the run. Only overridden
methods are called: a hook that counts results costs nothing on retries.

:class:`LoggingHooks` is what ``patchassign run --verbose`` uses.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from .flow import Result

__all__ = ["Hooks", "LoggingHooks", "RetryEvent", "SlowdownEvent", "StopEvent"]


class RetryEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A change will be tried again after a wait.

    Attributes:
        system: The change's system.
        record: The change's record.
        id: The change's id.
        failures: Failed tries of the change so far (the first retry is 1).
        wait: Seconds until the next try.
        reason: Why the last try failed (the server's words where it gave some).
    """

    system: str
    record: str | int
    id: str | None
    failures: int
    wait: float
    reason: str


class SlowdownEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A system answered mostly 429s: all of its traffic slows down.

    Attributes:
        system: The system.
        host: ``host:port`` of the system.
        concurrency: Requests it may now have in flight.
        pause: Seconds during which nothing is sent to it.
        rate: Requests/s it is paced at from now on, learned from the answers that got
            through (``None``: nothing could be measured yet).
    """

    system: str
    host: str
    concurrency: int
    pause: float
    rate: float | None = None


class StopEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A system was stopped: its remaining changes end without being sent.

    Attributes:
        system: The system.
        host: ``host:port`` of the system.
        cause: ``"auth"`` (credentials or permissions refused), ``"redirected"`` (its
            answers were redirects elsewhere: its URL is not the API's), ``"unreachable"``
            (the outage budget ran out), ``"setup"`` (DNS or TLS: fix the
            configuration) or ``"adapter"`` (its adapter raised on three records in a
            row: a bug in it; the traceback is in the log).
        status: The status its remaining changes end with (``failed`` or ``unsent``).
        reason: The message given to each of them.
    """

    system: str
    host: str
    cause: str
    status: str
    reason: str


class Hooks:
    """Override any of these; the dispatcher calls only the ones you override."""

    def on_result(self, result: Result) -> None:
        """A change finished (any status)."""

    def on_retry(self, event: RetryEvent) -> None:
        """A change will be retried after a wait."""

    def on_slowdown(self, event: SlowdownEvent) -> None:
        """A system is being slowed down after many 429s."""

    def on_stop(self, event: StopEvent) -> None:
        """A system was stopped (fail-fast)."""


class LoggingHooks(Hooks):
    """Log every retry (debug level) to ``patchassign.dispatch``.

    The dispatcher itself logs slowdowns, outage pauses and stops as warnings. Messages
    name the system and the record, never a credential; the reasons are the adapters'
    (servers' error messages: scrub them if your servers echo secrets).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("patchassign.dispatch")

    def on_retry(self, event: RetryEvent) -> None:
        self.log.debug(
            "retrying %s/%s in %.2fs (failure %d): %s",
            event.system,
            event.record,
            event.wait,
            event.failures,
            event.reason,
        )
