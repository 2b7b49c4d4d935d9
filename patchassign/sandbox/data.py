"""Deterministic demo records for the sandbox servers: "team A" owns everything."""

from __future__ import annotations

from typing import Any

__all__ = ["TEAM_A", "TEAM_B", "demo_records"]

#: People of the team that owns the demo records, and of the team they move to.
TEAM_A = ("ada", "bob", "cyd", "dee")
TEAM_B = ("eve", "fay", "gus", "hal")


def demo_records(system: str, n: int) -> list[dict[str, Any]]:
    """``n`` records of ``system`` in its seed shape, assigned to team A.

    Raises:
        ValueError: An unknown system name.
    """
    make = _MAKERS.get(system)
    if make is None:
        raise ValueError(f"unknown system {system!r}; expected one of {', '.join(_MAKERS)}")
    return [make(i) for i in range(1, n + 1)]


def _person(i: int) -> str:
    return TEAM_A[i % len(TEAM_A)]


def _perscom(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "user_id": 100 + i % len(TEAM_A),
        "type": "primary",
        "unit_id": 1,
        "position_id": 10 + i % 3,
        "status_id": 1,
        "author_id": 1,
        "text": None,
    }


def _maxsight(i: int) -> dict[str, Any]:
    return {
        "id": f"task-{i:06d}",
        "assignment": {
            "assigned_by_id": "admin",
            "assigned_to_id": "team-a",
            "assigned_to_type": "TEAM",
            "assignment_comment": None,
        },
    }


def _kintone(i: int) -> dict[str, Any]:
    return {"app": 1, "id": i, "assignees": [_person(i)], "status": "In progress"}


def _superoffice(i: int) -> dict[str, Any]:
    who = _person(i)
    return {
        "ProjectmemberId": i,
        "ProjectId": 1,
        "ProjectName": "Migration",
        "ContactId": 1,
        "ContactName": "Team A",
        "ContactDepartment": "Team A",
        "PersonId": 100 + TEAM_A.index(who),
        "Firstname": who.title(),
        "FullName": who.title(),
        "EmailAddress": f"{who}@example.com",
        "ProjectMemberTypeId": 1,
        "ProjectMemberTypeName": "member",
    }


def _findable(i: int) -> dict[str, Any]:
    return {
        "id": f"asg-{i:06d}",
        "assigneeEmail": f"{_person(i)}@example.com",
        "status": "pending" if i % 5 else "in_progress",
        "allowDelegation": True,
    }


_MAKERS = {
    "perscom": _perscom,
    "maxsight": _maxsight,
    "kintone": _kintone,
    "superoffice": _superoffice,
    "findable": _findable,
}
