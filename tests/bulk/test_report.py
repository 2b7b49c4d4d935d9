"""The end-of-run report's words: counts of one read as one."""

from __future__ import annotations

from collections import Counter

import pytest

from patchassign.report import Report


def _report(n: int) -> Report:
    counts = {("perscom", "applied"): 5, ("perscom", "recovered"): n, ("perscom", "unsent"): n}
    return Report(
        plan="plan.jsonl",
        valid=5 + 2 * n,
        invalid=n,
        counts=counts,
        run_counts=Counter({"applied": n}),
        elapsed=1.0,
        unconfirmed=n,
        journal="j.db",
        throttled=[("perscom", n, 0)],
    )


@pytest.mark.parametrize(
    ("n", "says"),
    [
        (
            1,
            [
                "plan plan.jsonl: 7 changes, 1 invalid line skipped",
                "this run: 1 change in 1.0 s",
                "perscom: 1 answer was 429",
                "1 change was applied by a run that stopped",
                "1 change was not sent",
                "1 change is not done:",
                "1 write was sent but not confirmed",
            ],
        ),
        (
            2,
            [
                "plan plan.jsonl: 9 changes, 2 invalid lines skipped",
                "this run: 2 changes in 1.0 s",
                "perscom: 2 answers were 429",
                "2 changes were applied by a run that stopped",
                "2 changes were not sent",
                "2 changes are not done:",
                "2 writes were sent but not confirmed",
            ],
        ),
    ],
)
def test_the_report_counts_one_as_one(n: int, says: list[str]) -> None:
    text = _report(n).render()
    for words in says:
        assert words in text, (words, text)
