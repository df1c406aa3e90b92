"""The worker orchestration (queue distribution, issue 10): one per worker slot, keeping one
job at a time alive while the evaluation's queue has work.

Each job runs the shard's attempt loop (orchestrations/shard.py `_ShardRun.attempt_loop`: decide,
back off, capacity, submit, await start and end, finish) with `queue=True`: the job asks the
heartbeat endpoint for its tasks, and `remaining` is the evaluation's pending (claimable) tasks.
What differs from a shard:
- a job that COMPLETED is no failure: `next_step` weighs only the attempts since the slot's
  last completed job, so a slot that drains the queue job after job never "exhausts" attempts;
- at most `bounds.MAX_JOBS_PER_SLOT` jobs over the slot's life (its history stays bounded);
- the slot ends when nothing is pending after an attempt's finish (the policy's "no tasks
  remain"), on cancel, budget, or when the policy gives up; its close closes no task (other
  slots may still run them; the evaluation closes what is left at the end).

Replay rules as in shard.py: no I/O, environment, wall clock or randomness here.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskBase

from domain import names
from domain.contracts import WorkerInput
from orchestrations.shard import RunTarget, _ShardRun

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=names.WORKER_ORCHESTRATOR)
def worker(context: df.DurableOrchestrationContext) -> Generator[TaskBase, Any, dict[str, Any]]:
    """Jobs until the queue is empty, the user cancels, the budget refuses or the policy gives
    up. Returns the close summary (`ShardSummary`, `shard_index` = the slot)."""
    run = _ShardRun(context, RunTarget.worker(WorkerInput.from_json(context.get_input())))
    close_reason = yield from run.attempt_loop()
    summary = yield from run.close(close_reason)
    return summary.to_json()
