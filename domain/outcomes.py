"""What became of each task of an evaluation, and the reasons recorded with it.

Every task ends in exactly one final outcome: completed, failed (with the runner's reason) or
not run (with one of the reasons below). Reasons are plain strings because they travel through
activity payloads and table rows; building them here keeps them uniform for users and tests.
"""

from __future__ import annotations

from enum import StrEnum


class TaskOutcome(StrEnum):
    PENDING = "pending"  # not started yet (or waiting for a retry)
    RUNNING = "running"  # its shard's job is running
    COMPLETED = "completed"
    FAILED = "failed"  # the agent ran it and it failed; the reason is the runner's
    NOT_RUN = "not_run"  # the control plane gave up on it; the reason says why

    @property
    def is_final(self) -> bool:
        return self in (TaskOutcome.COMPLETED, TaskOutcome.FAILED, TaskOutcome.NOT_RUN)


CANCELLED_BY_USER = "cancelled by user"
BUDGET_EXHAUSTED = "budget exhausted"
ATTEMPTS_EXHAUSTED = "attempts exhausted"
NO_TIER_LEFT = "no compute tier left"


def first_line(err: BaseException) -> str:
    """An exception as a one-line reason: a durable activity failure carries the whole remote
    traceback in its message, which no reason or custom status should."""
    text = str(err).strip()
    return text.splitlines()[0][:500] if text else type(err).__name__


def attempts_exhausted(detail: str) -> str:
    """E.g. "attempts exhausted: 6 attempts, last: container did not start within 600 s"."""
    return f"{ATTEMPTS_EXHAUSTED}: {detail}" if detail else ATTEMPTS_EXHAUSTED


def no_tier_left(detail: str) -> str:
    return f"{NO_TIER_LEFT}: {detail}" if detail else NO_TIER_LEFT
