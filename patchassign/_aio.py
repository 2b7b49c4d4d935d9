"""asyncio helpers shared by the layers."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended; an error it ended with is raised.

    Unlike ``with suppress(CancelledError): await task``, a cancellation of the caller
    itself (an ``asyncio.timeout`` around it, a Ctrl-C) is not swallowed with the task's.
    """
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.result()
