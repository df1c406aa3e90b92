"""What is left of an evaluation and what it will take: a job's expected cost before it is
submitted (the amount its budget reservation holds), and for the status document the cost so
far, the expected remaining cost and the time to the end.

Expected durations are the planner's per-domain profiles; provisioning (allocation, image
pull, boot) is paid for, and waited for, before the first task of a job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.cost import DEFAULT_PROVISIONING_MINUTES, hourly_price, job_cost_so_far
from domain.jobs import JobState
from domain.outcomes import TaskOutcome
from domain.planning import expected_minutes
from domain.tasksets import TaskRef, domain_of

Row = Mapping[str, Any]

OPEN_TASK_OUTCOMES = frozenset({TaskOutcome.PENDING.value, TaskOutcome.RUNNING.value})


def job_estimate_usd(task_ids: Iterable[str], vm_size: str, spot: bool) -> float:
    """What one job running `task_ids` is expected to cost: its node from provisioning to
    its last task."""
    minutes = DEFAULT_PROVISIONING_MINUTES + sum(
        expected_minutes(TaskRef(task_id=t, domain=domain_of(t))) for t in task_ids
    )
    return hourly_price(vm_size, spot) * minutes / 60


def eta_seconds(
    remaining_expected_minutes: float,
    active_shards: int,
    *,
    longest_shard_remaining_minutes: float = 0.0,
    startup_minutes: float = 0.0,
) -> float | None:
    """Seconds until the evaluation is expected to finish; None when work remains but no shard
    is active to do it (the figure would be meaningless).

    Work spreads over the active shards, but no evaluation ends before its slowest shard does,
    so the estimate is the larger of the two, plus `startup_minutes` for shards still waiting
    for a node or a retry.
    """
    if remaining_expected_minutes <= 0:
        return 0.0
    if active_shards <= 0:
        return None
    minutes = max(remaining_expected_minutes / active_shards, longest_shard_remaining_minutes)
    return (minutes + max(0.0, startup_minutes)) * 60.0


@dataclass(frozen=True)
class Projection:
    cost_so_far_usd: float
    remaining_cost_usd: float
    eta_seconds: float | None  # None: work remains and no shard is working on it

    @property
    def estimated_total_usd(self) -> float:
        return self.cost_so_far_usd + self.remaining_cost_usd


def _task_minutes(task: Row) -> float:
    return expected_minutes(TaskRef(task_id=task["task_id"], domain=task["domain"]))


def project(
    evaluation: Row,
    shards: Sequence[Row],
    tasks: Sequence[Row],
    jobs: Sequence[Row],
    now: datetime,
) -> Projection:
    """Cost and time of an evaluation from its rows at `now`."""
    by_name = {j["job_name"]: j for j in jobs}

    def current_job(shard: Row) -> Row | None:
        return by_name.get(shard.get("job_name", ""))

    open_tasks = [t for t in tasks if t.get("outcome", TaskOutcome.PENDING) in OPEN_TASK_OUTCOMES]
    remaining_minutes = sum(_task_minutes(t) for t in open_tasks)
    running = sum(
        1
        for s in shards
        if (job := current_job(s)) is not None and not JobState(job["state"]).is_terminal
    )
    price = hourly_price(evaluation["vm_size"], bool(evaluation["spot"]))
    workers = max(1, min(int(evaluation["workers"]), len(shards) or 1))
    # Nothing running but work left: every worker pays for provisioning again.
    restart = price * DEFAULT_PROVISIONING_MINUTES / 60 * workers
    remaining_cost = price * remaining_minutes / 60 + (
        restart if open_tasks and running == 0 else 0.0
    )

    # A static shard's open tasks run one after another; a queue task (no shard_index) goes to
    # whichever slot is free, so only the task itself bounds how long the tail is.
    per_shard: Counter[int | str] = Counter()
    for t in open_tasks:
        shard = t.get("shard_index")
        per_shard[f"task:{t['task_id']}" if shard is None else int(shard)] += _task_minutes(t)
    working = [s for s in shards if s.get("status") != "done"]
    waiting = any(not (current_job(s) or {}).get("started_at") for s in working)
    eta = eta_seconds(
        remaining_minutes,
        len(working),
        longest_shard_remaining_minutes=max(per_shard.values(), default=0.0),
        startup_minutes=DEFAULT_PROVISIONING_MINUTES if waiting else 0.0,
    )
    return Projection(
        cost_so_far_usd=sum(job_cost_so_far(j, now) for j in jobs),
        remaining_cost_usd=remaining_cost,
        eta_seconds=eta,
    )
