"""What became of each task of an evaluation, and the reasons recorded with it.

Every task ends in exactly one final outcome: completed, failed (with the runner's reason) or
not run (with one of the reasons below). Reasons are plain strings because they travel through
activity payloads and table rows; building them here keeps them uniform for users and tests.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from domain import bounds
from domain.clock import iso


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


def not_run_after_releases(released: int, reason: str) -> str:
    """The reason of a task whose jobs kept ending under it (the task queue's poison limit)."""
    return f"not run: {released} jobs ended while running it (last: {reason or 'job ended'})"


def holds(row: Row, job_name: str) -> bool:
    """Whether `job_name` runs the task now: as the job it was handed to, or as its tail copy."""
    return (
        bool(job_name)
        and row.get("outcome") == TaskOutcome.RUNNING
        and job_name in (row.get("job_name"), row.get("copy_job"))
    )


def judge_result(row: Row, *, outcome: str, job_name: str, retry_limit: int) -> ResultVerdict:
    """The first final result wins; later ones (duplicates, an old attempt's straggler) change
    nothing. A failed run is final only once the task has failed `retry_limit` times before,
    each job counted once; until then the task stays pending with its last failure, so a later
    attempt runs it again.

    A job's result for a task that now runs under another job (neither the one it is handed to
    nor its tail copy) is ignored: that job lost its claim (it was released, the task claimed
    again), and the job running it now reports. The control plane's own verdicts (`job_name`
    empty: close_tasks, finalize) are not a job's result and always apply to an open task."""
    if row.get("outcome") in FINAL_TASK_OUTCOMES:
        return ResultVerdict.IGNORED
    if job_name and row.get("outcome") == TaskOutcome.RUNNING and not holds(row, job_name):
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


COPY_FIELDS = ("copy_job", "copy_attempt", "copy_claimed_at")


def _without_copy(row: Row) -> Row:
    return {**row, "copy_job": "", "copy_attempt": 0, "copy_claimed_at": ""}


def _copy_promoted(row: Row) -> Row:
    """The tail copy becomes the job the task is with (its first job has left it)."""
    return _without_copy(
        {
            **row,
            "job_name": row["copy_job"],
            "attempt": int(row.get("copy_attempt") or row.get("attempt") or 0),
            "claimed_at": row.get("copy_claimed_at") or row.get("claimed_at", ""),
        }
    )


def task_retried(row: Row, job_name: str, reason: str) -> Row:
    """A failed run within the retries (`ResultVerdict.RETRY`): the failure is counted against
    `job_name` (`failed_in`) and the task is pending again, so a later job runs it. When another
    job still runs it (its tail copy, or the job the copy duplicates), it stays running under
    that one instead: a task is never pending while a job still runs it."""
    new = {
        **row,
        "failed_in": ",".join([*failed_in(row), job_name]),
        "last_failure": reason[:MAX_REASON_CHARS],
    }
    if row.get("outcome") == TaskOutcome.RUNNING and row.get("copy_job"):
        if row.get("copy_job") == job_name:
            return _without_copy(new)
        if row.get("job_name") == job_name:
            return _copy_promoted(new)
    return {**new, "outcome": TaskOutcome.PENDING.value}


def task_released(
    row: Row, job_name: str, reason: str = "", *, at: datetime | None = None
) -> Row | None:
    """A task `job_name` was running but never reported, once the job has ended.

    - A static shard's task (handed out at submission, never claimed: no `claimed_at`) goes
      back to pending, so the shard's next attempt runs it; nothing is counted (its job may
      never have started it).
    - A claimed task (the task queue) goes back to pending too, and counts the release in
      `released`; the `bounds.QUEUE_MAX_RELEASES`-th release makes it not run with the reason
      (`not_run_after_releases`), so a task that takes down every machine it lands on cannot
      burn every slot. A task run by a tail copy as well stays running, under the copy.
    - The tail copy's own job ending clears the copy only; the first job still runs it.

    No change (None) for a task this job does not run."""
    if row.get("outcome") != TaskOutcome.RUNNING:
        return None
    if row.get("copy_job") == job_name and row.get("job_name") != job_name:
        return _without_copy(row)
    if row.get("job_name") != job_name:
        return None
    if not row.get("claimed_at"):
        return {**row, "outcome": TaskOutcome.PENDING.value}
    released = int(row.get("released") or 0) + 1
    counted = {**row, "released": released, "last_release": reason[:MAX_REASON_CHARS]}
    if released >= bounds.QUEUE_MAX_RELEASES:
        closed = {
            **_without_copy(counted),
            "outcome": TaskOutcome.NOT_RUN.value,
            "reason": not_run_after_releases(released, reason)[:MAX_REASON_CHARS],
        }
        return {**closed, "finished_at": iso(at)} if at is not None else closed
    if row.get("copy_job"):
        return _copy_promoted(counted)
    return {**counted, "outcome": TaskOutcome.PENDING.value}
