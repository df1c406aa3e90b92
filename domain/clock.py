"""The time port. Code outside orchestrators that needs "now" or a wake-up takes a `Scheduler`.

Under `func start` / Azure it is wall-clock time; on the local host (devhost) it is the host's
virtual clock, which skips ahead when nothing is runnable, so a 3-hour simulated evaluation
runs in seconds. Callbacks run on a worker thread; while one runs, virtual time does not move.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol


class CallHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def now(self) -> datetime:
        """Current UTC time (timezone-aware)."""
        ...

    def call_at(self, when: datetime, callback: Callable[[], None]) -> CallHandle:
        """Run `callback` once at `when` (or as soon as possible if `when` has passed)."""
        ...


def iso(at: datetime) -> str:
    """How a time is stored in a row: ISO 8601 in UTC, so rows compare and parse alike."""
    return at.astimezone(UTC).isoformat()


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
