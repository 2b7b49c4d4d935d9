"""A throttled lane's learned pace against token buckets of several sizes, simulated.

The lane (``patchassign.dispatch._Lane``) is driven in virtual time by the lane tests'
driver (``tests/dispatch/test_lanes.py``: ``_lane_against``): an instant server, always
more work, at most one request per ``gap``; the server is a token bucket of ``rate``
requests/s holding ``burst`` (a bucket of ``rate`` holds a second's worth). No network
and no clock: the same figures on any machine, in about a second. What the real
dispatcher meets against the sandbox is in ``benchmarks.lanes``.

Run: python -m benchmarks.pacing
"""

from __future__ import annotations

from tests.dispatch.test_lanes import _lane_against, _new_lane, _token_bucket

#: (rate, burst, requests/s the lane could send, seconds, changes to time)
CASES = [
    (1000, 1000, 1700, 30, 10_000),
    (1000, 100, 2000, 30, 2000),
    (1000, 10, 2000, 30, 2000),
    (500, 5000, 2000, 40, 12_000),
    (200, 200, 2000, 30, 2000),
    (200, 10, 2000, 30, 2000),
    (100, 6000, 2000, 120, 8000),
    (50, 50, 2000, 30, 300),
    (50, 10, 2000, 30, 300),
    (20, 20, 2000, 40, 300),
]


def main() -> None:
    print(
        "| server's limit | bucket | offered | time to N answers (N) | ideal | 429s "
        "| slowdowns | pace at the end |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rate, burst, offered, seconds, n in CASES:
        lane = _new_lane()
        sent = _lane_against(lane, seconds, _token_bucket(rate, burst=burst), gap=1 / offered)
        ok = [t for t, refused in sent if not refused]
        took = f"{ok[n - 1]:.1f} s" if len(ok) >= n else f"more than {seconds} s"
        print(
            f"| {rate:,}/s | {burst:,} | {offered:,}/s | {took} ({n:,}) "
            f"| {max(0.0, (n - burst) / rate):.1f} s | {sum(r for _, r in sent):,} "
            f"| {lane.slowdowns} | {lane.learned:,.0f}/s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
