"""The demo's two teams: every fake seeds records held by team A, its demo plan moves them
to team B (each fake's ``demo_record``, ``demo_change`` and ``demo_mismatches``)."""

from __future__ import annotations

__all__ = ["TEAM_A", "TEAM_B", "person", "target"]

#: People of the team that owns the demo records, and of the team they move to.
TEAM_A = ("ada", "bob", "cyd", "dee")
TEAM_B = ("eve", "fay", "gus", "hal")


def person(i: int) -> int:
    """The index in ``TEAM_A`` of who holds demo record ``i``."""
    return i % len(TEAM_A)


def target(i: int) -> int:
    """The index in ``TEAM_B`` of who demo record ``i`` moves to."""
    return i % len(TEAM_B)
