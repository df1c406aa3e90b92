"""Worker slots of a queue-distributed evaluation (issue 10): the pure rules the worker
orchestration and its activities share. The claim rules themselves are in domain/queue.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from domain.cost import DEFAULT_PROVISIONING_MINUTES, hourly_price
from domain.outcomes import TaskOutcome
from domain.queue import queue_order, row_minutes

# A slot that ended because the queue had nothing left for it (domain.policy's give-up reason
# when no task remains): not a reason for any task to be left without a result.
NOTHING_LEFT = "no tasks remain"


def _pending(task_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in task_rows
        if r.get("outcome", TaskOutcome.PENDING.value) == TaskOutcome.PENDING.value
    ]


def pending_task_ids(task_rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The evaluation's claimable tasks (outcome pending), in the queue's order
    (`domain.queue.queue_order`: longest expected first, ties by task id)."""
    return [str(r["task_id"]) for r in queue_order(_pending(task_rows))]


def pending_minutes(task_rows: Iterable[Mapping[str, Any]]) -> list[float]:
    """Expected minutes of each pending task (for a job's budget reservation)."""
    return [row_minutes(r) for r in _pending(task_rows)]


def expected_share(pending: int, slots: int) -> int:
    """How many tasks one job of `slots` is expected to run: ceil(pending / slots), >= 1."""
    return max(1, -(-pending // max(1, slots)))


def not_run_reason(close_reasons: Sequence[str]) -> str:
    """The reason finalize records with every task still without an outcome once all slots
    ended: the slots' give-up reasons other than "nothing left", distinct, in slot order
    ("" when every slot ended for lack of work: finalize's default then applies)."""
    kept = [r for r in dict.fromkeys(r.strip() for r in close_reasons) if r and r != NOTHING_LEFT]
    if not kept:
        return ""
    if len(kept) == 1:
        return kept[0]
    return "every worker slot ended: " + "; ".join(kept)


def queue_job_estimate_usd(
    pending: Sequence[float], expected_tasks: int, vm_size: str, spot: bool
) -> float:
    """What one queue job is expected to cost (its budget reservation): its node from
    provisioning through `expected_tasks` tasks of the pending tasks' average expected minutes
    (`domain.progress.job_estimate_usd`'s rule, over the job's share instead of a task list)."""
    average = sum(pending) / len(pending) if pending else 0.0
    minutes = DEFAULT_PROVISIONING_MINUTES + max(0, expected_tasks) * average
    return hourly_price(vm_size, spot) * minutes / 60
