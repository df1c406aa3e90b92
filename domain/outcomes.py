"""What became of each task of an evaluation, and the reasons recorded with it.

Every task ends in exactly one final outcome: completed, failed (with the runner's reason) or
not run (with one of the reasons below). Reasons are plain strings because they travel through
activity payloads and table rows; building them here keeps them uniform for users and tests.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class TaskOutcome(StrEnum):
    PENDING = "pending"  # not started yet (or waiting for a retry)
    RUNNING = "running"  # its shard's job is running
    COMPLETED = "completed"
    FAILED = "failed"  # the agent ran it and it failed; the reason is the runner's
    NOT_RUN = "not_run"  # the control plane gave up on it; the reason says why

    @property
    def is_final(self) -> bool:
        return self in (TaskOutcome.COMPLETED, TaskOutcome.FAILED, TaskOutcome.NOT_RUN)


FINAL_TASK_OUTCOMES = frozenset(o.value for o in TaskOutcome if o.is_final)
# The longest reason (or a job's detail) a row keeps: a service's error text can be long, and a
# status document shows it whole.
MAX_REASON_CHARS = 2000

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


Row = dict[str, Any]


class ResultVerdict(StrEnum):
    """What one reported result does to its task."""

    IGNORED = "ignored"  # the task already has a final outcome, or this job's failure counted
    RETRY = "retry"  # a failure within the retries: the task is pending again
    FINAL = "final"  # the task's outcome


def failed_in(row: Row) -> list[str]:
    """The jobs that have run the task and failed it, each once."""
    return [j for j in str(row.get("failed_in", "")).split(",") if j]


def judge_result(row: Row, *, outcome: str, job_name: str, retry_limit: int) -> ResultVerdict:
    """The first final result wins; later ones (duplicates, an old attempt's straggler) change
    nothing. A failed run is final only once the task has failed `retry_limit` times before,
    each job counted once; until then the task stays pending with its last failure, so a later
    attempt runs it again."""
    if row.get("outcome") in FINAL_TASK_OUTCOMES:
        return ResultVerdict.IGNORED
    if outcome != TaskOutcome.FAILED:
        return ResultVerdict.FINAL
    failures = failed_in(row)
    if job_name in failures:
        # A duplicated message (the runner re-sent after a timeout): this job's failure is
        # already counted, also when it was the last one the retries allow.
        return ResultVerdict.IGNORED
    return ResultVerdict.RETRY if len(failures) < retry_limit else ResultVerdict.FINAL


def task_running(row: Row, *, attempt: int, job_name: str) -> Row | None:
    """The task handed to `job_name` (no change when it already has a final outcome or is
    already that job's)."""
    if row.get("outcome") in FINAL_TASK_OUTCOMES:
        return None
    if row.get("outcome") == TaskOutcome.RUNNING and row.get("job_name") == job_name:
        return None
    return {**row, "outcome": TaskOutcome.RUNNING.value, "attempt": attempt, "job_name": job_name}


def task_released(row: Row, job_name: str) -> Row | None:
    """A task `job_name` was running but never reported goes back to pending when the job
    ends, so the next attempt runs it."""
    if row.get("outcome") == TaskOutcome.RUNNING and row.get("job_name") == job_name:
        return {**row, "outcome": TaskOutcome.PENDING.value}
    return None
