"""Deterministic demo data: records owned by "team A", and the plan that moves them to B.

Each fake owns its system's demo data (its ``demo_record``, ``demo_change``,
``demo_mismatches`` and ``move_elsewhere``); these functions run them over the systems of
the registry (``patchassign.sandbox.SERVERS``): ``demo_records(system, n)`` seeds a server,
``demo_change(system, i)`` is the change that moves record ``i`` to team B,
``demo_plan(n)`` is all of them, interleaved across systems, and
``demo_mismatches(sandbox, n)`` compares the servers' final state with what the plan wants.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ._demo import TEAM_A, TEAM_B

if TYPE_CHECKING:
    from ..changes import Change
    from . import Sandbox
    from ._server import FakeServer

__all__ = [
    "TEAM_A",
    "TEAM_B",
    "demo_change",
    "demo_mismatches",
    "demo_plan",
    "demo_records",
    "move_elsewhere",
    "moved_elsewhere",
]


def _fake(system: str) -> type[FakeServer]:
    from . import SERVERS

    fake = SERVERS.get(system)
    if fake is None:
        raise ConfigError(f"unknown system {system!r}; expected one of {', '.join(SERVERS)}")
    return fake


def _all() -> tuple[str, ...]:
    from . import SERVERS

    return tuple(SERVERS)


def demo_records(system: str, n: int) -> list[dict[str, Any]]:
    """``n`` records of ``system`` in its seed shape, assigned to team A.

    Raises:
        ValueError: An unknown system name.
    """
    make = _fake(system).demo_record
    return [make(i) for i in range(1, n + 1)]


def demo_change(system: str, i: int) -> Change:
    """The change that moves demo record ``i`` of ``system`` from team A to team B.

    Each names who should hold the record now (``expect``), so a change that finds the
    record moved by someone else is a conflict, not forced.

    Raises:
        ValueError: An unknown system name.
    """
    return _fake(system).demo_change(i)


def demo_plan(n: int, systems: Iterable[str] | None = None) -> Iterator[Change]:
    """The changes for records ``1..n`` of each system (default: every registered one),
    interleaved (lazily)."""
    makers = [_fake(s).demo_change for s in (_all() if systems is None else systems)]
    for i in range(1, n + 1):
        for make in makers:
            yield make(i)


def moved_elsewhere(i: int) -> bool:
    """Whether test scenarios have someone else reassign demo record ``i`` before a run
    (about 0.5% of records, all with an ``expect``: their changes must end as conflicts)."""
    return i % 97 == 0 and i % 2 == 1


def move_elsewhere(sandbox: Sandbox, i: int) -> None:
    """Reassign demo record ``i`` of every running server to someone outside both teams."""
    for server in sandbox.servers.values():
        server.move_elsewhere(i)


def demo_mismatches(
    sandbox: Sandbox,
    n: int,
    systems: Iterable[str] | None = None,
    *,
    skip: Container[int] = (),
) -> list[str]:
    """How the servers' records ``1..n`` differ from what the demo plan wants (``[]``: not).

    ``systems``: default, every server the sandbox runs. Records in ``skip`` are not checked.
    """
    names = list(sandbox.servers) if systems is None else list(systems)
    ids = [i for i in range(1, n + 1) if i not in skip]
    return [
        f"{system} record {i}: {problem}"
        for system in names
        for i, problem in sandbox.servers[system].demo_mismatches(ids)
    ]
