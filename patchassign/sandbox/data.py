"""Deterministic demo data: records owned by "team A", and the plan that moves them to B.

``demo_records(system, n)`` seeds a server; ``demo_change(system, i)`` is the change that
moves record ``i`` to team B; ``demo_plan(n)`` is all of them, interleaved across systems;
``demo_mismatches(sandbox, n)`` compares the servers' final state with what the plan wants.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..changes import Assign, Change, Delegate, Merge

if TYPE_CHECKING:
    from . import Sandbox

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


# -- the demo plan: team A -> team B ---------------------------------------------------------


def _target(i: int) -> int:
    return i % len(TEAM_B)


def demo_change(system: str, i: int) -> Change:
    """The change that moves demo record ``i`` of ``system`` from team A to team B.

    Each names who should hold the record now (``expect``), so a change that finds the
    record moved by someone else is a conflict, not forced.
    """
    a, b = i % len(TEAM_A), _target(i)
    cid = f"{system}-{i}"
    if system == "perscom":
        return Assign(system="perscom", record=i, id=cid, to=str(200 + b), expect=str(100 + a))
    if system == "maxsight":
        return Assign(
            system="maxsight",
            record=f"task-{i:06d}",
            id=cid,
            to="team-b",
            to_type="team",
            expect="team-a",
            by="admin",
            comment="team B owns this now",
        )
    if system == "kintone":
        return Assign(system="kintone", record=f"1:{i}", id=cid, to=[TEAM_B[b]], expect=[TEAM_A[a]])
    if system == "superoffice":
        if i % 2:
            return Assign(
                system="superoffice", record=i, id=cid, to=str(200 + b), expect=str(100 + a)
            )
        return Merge(
            system="superoffice",
            record=i,
            id=cid,
            merge={"PersonId": 200 + b, "ContactDepartment": "Team B"},
            guard=True,
        )
    if system == "findable":
        return Delegate(
            system="findable",
            record=f"asg-{i:06d}",
            id=cid,
            to=f"{TEAM_B[b]}@example.com",
            reason="team B owns this now",
            expect=f"{TEAM_A[a]}@example.com",
        )
    raise ValueError(f"unknown system {system!r}; expected one of {', '.join(_MAKERS)}")


def demo_plan(n: int, systems: Iterable[str] = tuple(_MAKERS)) -> Iterator[Change]:
    """The changes for records ``1..n`` of each system, interleaved (lazily)."""
    names = tuple(systems)
    for i in range(1, n + 1):
        for system in names:
            yield demo_change(system, i)


def moved_elsewhere(i: int) -> bool:
    """Whether test scenarios have someone else reassign demo record ``i`` before a run
    (about 0.5% of records, all with an ``expect``: their changes must end as conflicts)."""
    return i % 97 == 0 and i % 2 == 1


def move_elsewhere(sandbox: Sandbox, i: int) -> None:
    """Reassign demo record ``i`` of every running server to someone outside both teams."""
    for name, server in sandbox.servers.items():
        records = server.records
        if name == "perscom":
            records[str(i)]["user_id"] = 999
        elif name == "maxsight":
            records[f"task-{i:06d}"]["assignment"]["assigned_to_id"] = "team-z"
        elif name == "kintone":
            records[f"1:{i}"]["assignees"] = ["zed"]
        elif name == "superoffice":
            records[str(i)]["PersonId"] = 999
        elif name == "findable":
            records[f"asg-{i:06d}"]["assigneeEmail"] = "zed@example.com"


def demo_mismatches(
    sandbox: Sandbox,
    n: int,
    systems: Iterable[str] = tuple(_MAKERS),
    *,
    skip: Container[int] = (),
) -> list[str]:
    """How the servers' records ``1..n`` differ from what the demo plan wants (``[]``: not).

    Findable: the original is ``delegated`` to the target, and exactly one successor
    exists, assigned to the target, with the original assignee appended to its chain.
    Records in ``skip`` are not checked.
    """
    out: list[str] = []
    for system in systems:
        records = sandbox.servers[system].records
        successors: dict[str, list[dict[str, Any]]] = {}
        if system == "findable":
            for rec in records.values():
                origin = rec.get("delegatedFrom")
                if origin is not None:
                    successors.setdefault(origin, []).append(rec)
        for i in range(1, n + 1):
            if i in skip:
                continue
            b = _target(i)
            problem = _mismatch(system, i, b, records, successors)
            if problem:
                out.append(f"{system} record {i}: {problem}")
    return out


def _mismatch(
    system: str,
    i: int,
    b: int,
    records: dict[str, dict[str, Any]],
    successors: dict[str, list[dict[str, Any]]],
) -> str | None:
    if system == "perscom":
        got: Any = records[str(i)]["user_id"]
        return None if got == 200 + b else f"user_id is {got}, want {200 + b}"
    if system == "maxsight":
        got = records[f"task-{i:06d}"].get("assignment") or {}
        want = ("team-b", "TEAM")
        have = (got.get("assigned_to_id"), got.get("assigned_to_type"))
        return None if have == want else f"assigned to {have}, want {want}"
    if system == "kintone":
        got = records[f"1:{i}"]["assignees"]
        return None if got == [TEAM_B[b]] else f"assignees are {got}, want {[TEAM_B[b]]}"
    if system == "superoffice":
        rec = records[str(i)]
        if rec["PersonId"] != 200 + b:
            return f"PersonId is {rec['PersonId']}, want {200 + b}"
        if i % 2 == 0 and rec["ContactDepartment"] != "Team B":
            return f"ContactDepartment is {rec['ContactDepartment']!r}, want 'Team B'"
        return None
    key = f"asg-{i:06d}"
    rec = records[key]
    email = f"{TEAM_B[b]}@example.com"
    if rec["status"] != "delegated" or rec.get("delegatedTo") != email:
        return f"status {rec['status']!r}, delegated to {rec.get('delegatedTo')!r}, want {email}"
    found = successors.get(key, [])
    if len(found) != 1:
        return f"{len(found)} successors, want exactly 1"
    if found[0]["assigneeEmail"] != email:
        return f"successor assigned to {found[0]['assigneeEmail']!r}, want {email}"
    return None
