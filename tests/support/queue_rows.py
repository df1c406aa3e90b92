"""Hand-made rows of a queue-distributed evaluation, written through the app's own store: the
evaluation with its slots and pending tasks, and queue jobs registered as submit_job registers
them (`queue`, `tail_copy_factor`, `expected_tasks`). For tests that play the jobs themselves
(no orchestration submits them) against the real `next_task` endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adapters import runtime
from adapters.state.table_store import StateStore, utcnow_iso
from domain.naming import job_name, worker_instance_id


def store() -> StateStore:
    return runtime.services().store


def queue_evaluation(evaluation_id: str, tasks: dict[str, str], *, slots: int) -> None:
    """The evaluation, `slots` slot rows and one pending row per task (task id -> domain)."""
    now = runtime.now()
    store().create_evaluation(
        {
            "evaluation_id": evaluation_id,
            "created_at": now.isoformat(),
            "state": "running",
            "distribution": "queue",
            "workers": slots,
            "task_count": len(tasks),
            "shard_count": slots,
            "spent_usd": 0.0,
            "reserved_usd": 0.0,
        },
        [{"shard_index": i, "status": "waiting", "attempt": 0} for i in range(slots)],
        [
            {"task_id": t, "domain": d, "shard_index": 0, "outcome": "pending"}
            for t, d in tasks.items()
        ],
    )


def queue_job(
    evaluation_id: str,
    slot: int,
    attempt: int = 1,
    *,
    queue: bool = True,
    submitted: datetime | None = None,
    timeout_seconds: float = 4 * 3600,
    tail_copy_factor: float = 0.0,
    task_retries: int = 1,
) -> str:
    """Register slot `slot`'s job of `attempt` (a static shard's job with `queue=False`), kept
    out of the sweeper's `active` partition; returns its name."""
    name = job_name(evaluation_id, slot, attempt)
    row: dict[str, Any] = {
        "job_name": name,
        "evaluation_id": evaluation_id,
        "shard_index": slot,
        "attempt": attempt,
        "instance_id": worker_instance_id(evaluation_id, slot),
        "tier": "azureml",
        "vm_size": "Standard_D8s_v5",
        "spot": False,
        "task_count": 2,
        "reserved_usd": 0.0,
        "submitted_at": utcnow_iso(submitted or runtime.now()),
        "heartbeat_timeout_seconds": 600.0,
        "job_timeout_seconds": timeout_seconds,
        "stuck_detection": False,
        "task_retries": task_retries,
    }
    if queue:
        row.update(queue=True, tail_copy_factor=tail_copy_factor, expected_tasks=2)
    store().register_job(row)
    store().remove_active(name)  # the sweeper leaves these hand-made jobs alone
    return name
