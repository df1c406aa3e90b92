"""The ledger: the ground truth of what really ran and what it really cost, per job.

The app never sees it; benchmarks and the end-to-end tests check the app's records against it
(every task has one outcome, no shard ever had two active jobs, the cost the app reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from adapters.compute.simulated.jobs import Job, TaskSpan
from domain.cost import job_cost
from domain.jobs import JobState, Tier


@dataclass(frozen=True)
class LedgerEntry:
    job_name: str
    evaluation_id: str
    shard_index: int
    attempt: int
    tier: Tier
    vm_size: str
    spot: bool
    fault: str  # the run fault drawn or scripted for the job, "" for none
    submitted_at: datetime
    node_allocated_at: datetime | None
    started_at: datetime | None  # the runner's first message ("container started")
    ended_at: datetime | None
    state: JobState
    billed_seconds: float  # node allocation until the job ended (or now, if it still runs)
    cost_usd: float
    tasks_total: int  # its task_ids; a queue job: the tasks it was expected to run
    tasks_run: int  # tasks the runner finished (completed or failed)
    tasks_completed: int
    messages_sent: int
    messages_lost: int
    events_sent: int
    events_lost: int
    # For benchmarks (issue 10): whether it asked the queue for its tasks; when its run fault
    # took effect (None: no fault, or it never came to it); when the app cancelled it (None:
    # it ended by itself or still runs); each task it ran to a result, in order.
    queue: bool = False
    fault_at: datetime | None = None
    cancelled_at: datetime | None = None
    task_spans: tuple[TaskSpan, ...] = ()


def ledger_entry(job: Job, now: datetime) -> LedgerEntry:
    spec = job.spec
    billed = 0.0
    if job.node_allocated_at is not None:
        billed = ((job.ended_at or now) - job.node_allocated_at).total_seconds()
    fault = job.plan.run_fault
    return LedgerEntry(
        job_name=spec.job_name,
        evaluation_id=spec.evaluation_id,
        shard_index=spec.shard_index,
        attempt=spec.attempt,
        tier=job.tier,
        vm_size=spec.vm_size,
        spot=spec.spot,
        fault=type(fault).__name__ if fault is not None else "",
        submitted_at=job.submitted_at,
        node_allocated_at=job.node_allocated_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        state=job.state,
        billed_seconds=billed,
        cost_usd=job_cost(spec.vm_size, spec.spot, billed),
        tasks_total=spec.expected_tasks if spec.queue else len(spec.task_ids),
        tasks_run=job.tasks_run,
        tasks_completed=job.tasks_completed,
        messages_sent=job.messages_sent,
        messages_lost=job.messages_lost,
        events_sent=job.events_sent,
        events_lost=job.events_lost,
        queue=spec.queue,
        fault_at=job.fault_at,
        cancelled_at=job.cancelled_at,
        task_spans=tuple(job.task_spans),
    )
