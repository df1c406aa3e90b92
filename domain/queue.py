"""The task queue of an evaluation (issue 10, `distribution: "queue"`): pure rules, no I/O.

The queue is the evaluation's task rows themselves (partition `eval-<id>`, `task-...` rows with
`task_id`, `domain`, `outcome`, `job_name`, `attempt`, `failed_in`); there is no other table.
A job asks for its next task (`next_task` on the heartbeat endpoint); the store
(`StateStore.claim`) reads the rows in one partition query, takes the `candidates` below in
order and writes the first one it wins with an ETag-guarded update (`claimed` / `copied`, again
on the freshly read row after a lost race). What happens when a job ends under a task, or a
result arrives, is `domain.outcomes` (`task_released`, `judge_result`, `task_retried`).

- Order: longest expected first (`domain.planning.expected_minutes` of the row's domain), ties
  by task id, so the long tasks do not all land at the tail.
- Claim: a pending row whose `failed_in` does not hold the asking job -> running under that job,
  with the attempt and `claimed_at`. One task at a time per job: a job that already runs a task
  (as its job or its tail copy) is answered that task again, so a retried ask is idempotent.
- Tail copy (only with a factor > 0): when no row is pending at all, a row running under
  another job for longer than factor x its expected minutes, without a copy yet and not failed
  by the asking job, gets `copy_job` / `copy_attempt` / `copy_claimed_at`: a second copy.
- Exit: nothing to claim ("queue empty"); the evaluation cancelled; the job's deadline
  (`submitted_at` + `job_timeout_seconds` of its row) less than 2 x a task's expected minutes
  away ("deadline": a task it could not finish is left to a fresh job).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.clock import iso, parse_time
from domain.outcomes import CANCELLED_BY_USER, TaskOutcome, failed_in, holds
from domain.planning import expected_minutes
from domain.tasksets import TaskRef

Row = dict[str, Any]

QUEUE_EMPTY = "queue empty"
DEADLINE = "deadline"
CANCELLED = CANCELLED_BY_USER
# A job asks for a task only when its deadline is at least this many times the task's expected
# duration away (the runner's own margin, WAA_CLAIM_MARGIN_SECONDS, stops it earlier still).
DEADLINE_TASK_MULTIPLE = 2.0


def row_minutes(row: Row) -> float:
    """The expected duration of the task of a row (by its domain)."""
    return expected_minutes(
        TaskRef(task_id=str(row.get("task_id", "")), domain=str(row.get("domain") or "unknown"))
    )


def queue_order(rows: Iterable[Row]) -> list[Row]:
    """Longest expected first, ties by task id."""
    return sorted(rows, key=lambda r: (-row_minutes(r), str(r.get("task_id", ""))))


def is_copy(row: Row, job_name: str) -> bool:
    """Whether `job_name` runs the task as its tail copy (not as the job it is handed to)."""
    return holds(row, job_name) and row.get("copy_job") == job_name


def held(rows: Iterable[Row], job_name: str) -> Row | None:
    """The task the job runs now, if any (the first in queue order, should there be two)."""
    return next((r for r in queue_order(rows) if holds(r, job_name)), None)


def claimable(row: Row, job_name: str) -> bool:
    return row.get("outcome") == TaskOutcome.PENDING and job_name not in failed_in(row)


def claimed(row: Row, *, job_name: str, attempt: int, now: datetime) -> Row | None:
    """The row claimed by `job_name`, or None when it is not claimable (any more)."""
    if not claimable(row, job_name):
        return None
    return {
        **row,
        "outcome": TaskOutcome.RUNNING.value,
        "job_name": job_name,
        "attempt": attempt,
        "claimed_at": iso(now),
        "copy_job": "",
        "copy_attempt": 0,
        "copy_claimed_at": "",
    }


def running_since(row: Row) -> datetime | None:
    return parse_time(str(row.get("claimed_at") or "") or None)


def copy_due(row: Row, *, job_name: str, now: datetime, tail_copy_factor: float) -> bool:
    """Whether `job_name` may run a tail copy of this row: running under another job (claimed
    through the queue) for longer than factor x its expected minutes, without a copy yet."""
    if tail_copy_factor <= 0 or row.get("outcome") != TaskOutcome.RUNNING:
        return False
    if row.get("job_name") in ("", None, job_name) or row.get("copy_job"):
        return False
    if job_name in failed_in(row):
        return False
    since = running_since(row)
    if since is None:  # handed out with a static shard, not claimed
        return False
    return now - since > timedelta(minutes=tail_copy_factor * row_minutes(row))


def copied(
    row: Row, *, job_name: str, attempt: int, now: datetime, tail_copy_factor: float
) -> Row | None:
    """The row with `job_name` as its tail copy, or None when no copy is due (any more)."""
    if not copy_due(row, job_name=job_name, now=now, tail_copy_factor=tail_copy_factor):
        return None
    return {**row, "copy_job": job_name, "copy_attempt": attempt, "copy_claimed_at": iso(now)}


@dataclass(frozen=True)
class Candidate:
    row: Row
    duplicate: bool  # a tail copy of a task another job runs


def candidates(
    rows: Iterable[Row], job_name: str, *, now: datetime, tail_copy_factor: float
) -> list[Candidate]:
    """What the job may claim, best first: the pending rows it has not failed, in queue order;
    only when no row is pending at all, the rows due a tail copy, in queue order."""
    ordered = queue_order(rows)
    pending = [Candidate(r, False) for r in ordered if claimable(r, job_name)]
    if pending or any(r.get("outcome") == TaskOutcome.PENDING for r in ordered):
        return pending
    return [
        Candidate(r, True)
        for r in ordered
        if copy_due(r, job_name=job_name, now=now, tail_copy_factor=tail_copy_factor)
    ]


def job_deadline(job: Row) -> datetime | None:
    """When the job's own timeout ends: its row's `submitted_at` + `job_timeout_seconds` (None
    when the row has either missing)."""
    submitted = parse_time(str(job.get("submitted_at") or "") or None)
    timeout = job.get("job_timeout_seconds")
    if submitted is None or timeout is None:
        return None
    return submitted + timedelta(seconds=float(timeout))


def fits(row: Row, *, deadline: datetime | None, now: datetime) -> bool:
    """Whether a task may still be started by a job with this deadline: the deadline is at
    least DEADLINE_TASK_MULTIPLE x the task's expected minutes away."""
    if deadline is None:
        return True
    return deadline - now >= timedelta(minutes=DEADLINE_TASK_MULTIPLE * row_minutes(row))


@dataclass(frozen=True)
class Claim:
    """What a claim came to: the row the job runs now (claimed, its copy, or the one it already
    held), or no row and why the job should exit."""

    row: Row | None
    duplicate: bool = False
    reason: str = ""  # QUEUE_EMPTY or DEADLINE when row is None
    new: bool = False  # this ask claimed it (False: the job already held it)

    @property
    def exit(self) -> bool:
        return self.row is None


def plan(
    rows: Iterable[Row],
    job_name: str,
    *,
    now: datetime,
    tail_copy_factor: float,
    deadline: datetime | None,
) -> Claim | list[Candidate]:
    """The decision before any write: the task the job already holds (answered again), an exit
    (nothing to claim; or nothing that fits before the deadline), or the candidates to try in
    order (each fits the deadline)."""
    rows = list(rows)
    mine = held(rows, job_name)
    if mine is not None:
        return Claim(row=mine, duplicate=is_copy(mine, job_name))
    found = candidates(rows, job_name, now=now, tail_copy_factor=tail_copy_factor)
    if not found:
        return Claim(row=None, reason=QUEUE_EMPTY)
    fitting = [c for c in found if fits(c.row, deadline=deadline, now=now)]
    return fitting or Claim(row=None, reason=DEADLINE)


def take(
    candidate: Candidate,
    row: Row,
    *,
    job_name: str,
    attempt: int,
    now: datetime,
    tail_copy_factor: float,
) -> Row | None:
    """The change a claim makes to the freshly read row of `candidate` (None: lost, not
    claimable any more; the store moves on to the next candidate)."""
    if candidate.duplicate:
        return copied(
            row, job_name=job_name, attempt=attempt, now=now, tail_copy_factor=tail_copy_factor
        )
    return claimed(row, job_name=job_name, attempt=attempt, now=now)


def answer(claim: Claim, *, cancel_requested: bool = False) -> dict[str, Any]:
    """The `NextTask` fields (domain/messages.py) for a claim; a cancelled evaluation exits."""
    if cancel_requested:
        return {
            "task_id": None,
            "domain": "",
            "duplicate": False,
            "exit": True,
            "reason": CANCELLED,
        }
    if claim.row is None:
        return {
            "task_id": None,
            "domain": "",
            "duplicate": False,
            "exit": True,
            "reason": claim.reason or QUEUE_EMPTY,
        }
    return {
        "task_id": str(claim.row["task_id"]),
        "domain": str(claim.row.get("domain") or ""),
        "duplicate": claim.duplicate,
        "exit": False,
        "reason": "",
    }
