"""In-memory Maxsight and PERSCOM behind a MockTransport handler: the dispatcher's logic,
tested with no network. Each fake keeps its records and counts writes per record."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from patchassign import HttpRequest, HttpResponse
from patchassign.changes import Assign, Change
from patchassign.systems import MaxsightAdapter, PerscomAdapter

MAXSIGHT = "https://maxsight.example"
PERSCOM = "https://perscom.example"

#: Decides an answer before the fake does: return a response (or raise) to override it.
Fault = Callable[[HttpRequest], HttpResponse | None]


class FakeMaxsight:
    """``GET /v5/tasks/{id}`` and ``PUT .../update-assignment`` with ``If-Match``."""

    def __init__(self, fault: Fault | None = None, delay: float = 0.0) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.writes: Counter[str] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.fault = fault
        self.delay = delay

    def adapter(self) -> MaxsightAdapter:
        return MaxsightAdapter(MAXSIGHT, "key", assigned_by="admin")

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        path = request.url.removeprefix(MAXSIGHT)
        task_id = path.split("/")[3]
        self.requests[request.method, task_id] += 1
        if self.fault is not None:
            answer = self.fault(request)
            if answer is not None:
                return answer
        task = self.tasks.setdefault(
            task_id, {"id": task_id, "updated_at": "v0", "assignment": None}
        )
        if request.method == "GET":
            return HttpResponse.from_json(200, task)
        if request.headers.get("If-Match") != task["updated_at"]:
            return HttpResponse.from_json(409, {"message": "Version mismatch"})
        import msgspec

        update = msgspec.json.decode(request.body or b"{}")["update"]
        task["assignment"] = {
            "assigned_to_id": update["assigned_to_id"],
            "assigned_to_type": update["assigned_to_type"],
        }
        task["updated_at"] = f"v{int(task['updated_at'][1:]) + 1}"
        self.writes[task_id] += 1
        return HttpResponse.from_json(200, task)


class FakePerscom:
    """Blind ``PATCH /v2/assignment-records/{id}`` (no read needed for an assign)."""

    def __init__(self, fault: Fault | None = None, delay: float = 0.0) -> None:
        self.writes: Counter[int] = Counter()
        self.fault = fault
        self.delay = delay

    def adapter(self) -> PerscomAdapter:
        return PerscomAdapter(PERSCOM, "tok", notifications=False)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fault is not None:
            answer = self.fault(request)
            if answer is not None:
                return answer
        record = int(request.url.rsplit("/", 1)[1])
        self.writes[record] += 1
        return HttpResponse.from_json(200, {"data": {"id": record, "user_id": 7}})


class Route:
    """One MockTransport handler that sends each request to its system's fake."""

    def __init__(self, **fakes: Any) -> None:
        self.fakes = fakes
        self.order: list[str] = []  # the system of each answer, in order

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        for name, fake in self.fakes.items():
            if request.url.startswith(MAXSIGHT if name == "maxsight" else PERSCOM):
                answer: HttpResponse = await fake(request)
                self.order.append(name)
                return answer
        raise AssertionError(f"no fake for {request.url}")


def to_maxsight(n: int, first: int = 0) -> list[Change]:
    return [
        Assign(system="maxsight", record=f"t{i}", to="eve", id=f"m{i}")
        for i in range(first, first + n)
    ]


def to_perscom(n: int, first: int = 1) -> list[Change]:
    return [Assign(system="perscom", record=i, to="7", id=f"p{i}") for i in range(first, first + n)]
