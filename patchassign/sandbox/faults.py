"""Fault injection settings for the sandbox servers.

A :class:`Faults` value says how a fake server misbehaves. Every random decision is drawn
from one ``random.Random(seed)`` per server, in request arrival order, so a run with the
same seed and the same request order sees the same faults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from ..errors import ConfigError
from ..systems._base import plain, unknown_hint

__all__ = ["Faults", "FaultsSpec", "parse_faults"]

_Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)]


class Faults(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How a fake server misbehaves. The default misbehaves in no way.

    Attributes:
        throttle: Fraction of requests answered 429 (with the system's retry headers).
        retry_after: Seconds the 429 answers ask the client to wait.
        unavailable: Fraction of requests answered 503.
        server_error: Fraction of requests answered 500 (nothing applied; the client
            cannot know that).
        gateway: Fraction of requests answered 200 with an HTML page by "a proxy in
            front", without reaching the system (nothing applied).
        latency: Seconds added to every request.
        jitter: Up to this many extra seconds, uniformly drawn, per request.
        spikes: Fraction of requests delayed by ``spike`` seconds on top.
        spike: Length of a latency spike, in seconds.
        drop: Fraction of requests whose connection is closed without an answer.
            Half of those are dropped *after* the change was applied (the client
            cannot tell which half): what makes a resend dangerous.
        rate_limit: Requests per second allowed per credential (token bucket with
            ``burst``); beyond it, 429. ``None``: no limit.
        burst: Bucket size of the rate limit.
        editor: Fraction of record reads after which a "concurrent editor" changes
            the record (a field unrelated to assignment) and its version, so a
            client's version token read just now is stale when it writes.
        late: Fraction of writes held ``hold`` seconds before the server applies them
            (and answers): a client that times out first gives up on a write that lands
            afterwards, what a server or a proxy's backend under load does.
        hold: How long a late write is held, in seconds.
        echo: Fraction of requests answered 500 with an error message that echoes the
            request's credential (a misconfigured server or proxy): it must never reach
            a log, the journal, the results or the report.
        writes_only: Apply the random faults (throttle, unavailable, drop) only to
            write endpoints; reads are then reliable.
        seed: Seed of the server's random draws.
    """

    throttle: _Fraction = 0.0
    retry_after: _Seconds = 1.0
    unavailable: _Fraction = 0.0
    server_error: _Fraction = 0.0
    gateway: _Fraction = 0.0
    latency: _Seconds = 0.0
    jitter: _Seconds = 0.0
    spikes: _Fraction = 0.0
    spike: _Seconds = 0.0
    drop: _Fraction = 0.0
    rate_limit: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    burst: Annotated[int, msgspec.Meta(ge=1)] = 10
    editor: _Fraction = 0.0
    late: _Fraction = 0.0
    hold: _Seconds = 3.0
    echo: _Fraction = 0.0
    writes_only: bool = False
    seed: int = 0

    @property
    def any_random(self) -> bool:
        """Whether any per-request random fault is on."""
        return bool(
            self.throttle
            or self.unavailable
            or self.server_error
            or self.gateway
            or self.drop
            or self.jitter
            or self.spikes
            or self.late
            or self.echo
        )


FaultsSpec = Faults | Mapping[str, Any] | None


def parse_faults(spec: FaultsSpec) -> Faults:
    """A :class:`Faults` from a ``Faults``, a mapping of its fields, or ``None``.

    Raises:
        ConfigError: An unknown field or a value out of range; the message names it.
    """
    if spec is None:
        return Faults()
    try:
        if isinstance(spec, Faults):
            # Built in Python, its fields were not checked: check them as a mapping's.
            msgspec.convert(msgspec.structs.asdict(spec), Faults)
            return spec
        return msgspec.convert(dict(spec), Faults)
    except msgspec.ValidationError as e:
        raise ConfigError(
            f"invalid fault settings: {plain(str(e))}{unknown_hint(str(e), Faults)}"
        ) from None
    except (TypeError, ValueError):
        raise ConfigError(
            f"invalid fault settings: expected Faults or a mapping of its fields, got {spec!r}"
        ) from None
