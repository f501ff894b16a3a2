"""Progress lines for long readers: one INFO line per finished step, and a heartbeat inside long loops.

`prepare` at TencentGR-1M size runs for minutes; before these lines it logged nothing between "running" and
"done" (issue #15), so a user could not tell a slow step from a hung one. Every line goes through `logging`,
so it lands in the run's log file too (tqdm bars go to the terminal only).
"""

from __future__ import annotations

import logging
import resource
import time


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, GiB (Linux reports KiB): logged at the steps of the long
    stages so a run at competition size shows which step holds what (bench/bench_scale.py times whole stages)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _fmt(v: object) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


class Steps:
    """`done("read seq.jsonl", users=1000000, events=89915998)` logs
    `[prepare] read seq.jsonl: users=1,000,000, events=89,915,998 (189.2s; 195.0s in all)`: the step's own
    time (since the previous step) and the time since the start."""

    def __init__(self, log: logging.Logger, name: str):
        self.log, self.name = log, name
        self.start = self.last = time.perf_counter()

    def done(self, what: str, **counts: object) -> float:
        """Log the step just finished; returns its seconds."""
        now = time.perf_counter()
        took, self.last = now - self.last, now
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in counts.items())
        self.log.info(
            "[%s] %s%s (%.1fs; %.1fs in all)",
            self.name,
            what,
            f": {figures}" if figures else "",
            took,
            now - self.start,
        )
        return took


class Heartbeat:
    """Inside a long loop: `beat(users=..., events=...)` logs at most one INFO line per `every` seconds."""

    def __init__(self, log: logging.Logger, what: str, every: float = 30.0):
        self.log, self.what, self.every = log, what, every
        self.start = self.last = time.perf_counter()

    def beat(self, **counts: object) -> bool:
        """Log the counts so far if `every` seconds passed since the last line; returns whether it logged."""
        now = time.perf_counter()
        if now - self.last < self.every:
            return False
        self.last = now
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in counts.items())
        self.log.info("%s: %s so far (%.0fs)", self.what, figures, now - self.start)
        return True
