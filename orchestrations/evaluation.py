"""The evaluation orchestration: fan out one shard sub-orchestration per planned shard, gather,
and write the summary. The plan and the policy are snapshotted into the input by the start
endpoint, so replays never read settings. Custom status stays small: counts, not lists."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskBase, TaskState

from domain import names
from domain.contracts import (
    Distribution,
    EvaluationInput,
    FinalizeEvaluationInput,
    ShardInput,
    ShardSummary,
    WorkerInput,
)
from domain.naming import shard_instance_id, worker_instance_id
from domain.outcomes import first_line
from domain.slots import not_run_reason

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=names.EVALUATION_ORCHESTRATOR)
def evaluation(
    context: df.DurableOrchestrationContext,
) -> Generator[TaskBase, Any, dict[str, Any]]:
    inp = EvaluationInput.from_json(context.get_input())
    if inp.distribution is Distribution.QUEUE:
        return (yield from _queue(context, inp))
    evaluation_id = inp.evaluation_id
    shards = inp.shards
    context.set_custom_status({"phase": "running", "shards": len(shards)})

    calls = [
        context.call_sub_orchestrator(
            names.SHARD_ORCHESTRATOR,
            ShardInput(
                evaluation_id=evaluation_id,
                shard_index=s.index,
                task_ids=s.task_ids,
                tiers=inp.tiers,
                policy=inp.policy,
                # Right-sizing may give a shard its own VM size.
                job=inp.job.model_copy(update={"vm_size": s.vm_size}),
            ).to_json(),
            shard_instance_id(evaluation_id, s.index),
        )
        for s in shards
    ]
    error = yield from _gather(context, calls)

    context.set_custom_status({"phase": "finalizing", "shards": len(shards)})
    summary = yield context.call_activity(
        names.FINALIZE_EVALUATION,
        FinalizeEvaluationInput(evaluation_id=evaluation_id, error=error).to_json(),
    )
    context.set_custom_status({"phase": "done", "shards": len(shards)})
    return summary


def _gather(
    context: df.DurableOrchestrationContext, calls: list[TaskBase]
) -> Generator[TaskBase, Any, str]:
    """Wait for every sub-orchestration; "" or the first line of the first one's failure. A
    shard or worker orchestration itself failed (each records its own task outcomes in every
    normal path): wait for the others, so that finalizing doesn't race running ones."""
    try:
        yield context.task_all(calls)
    except Exception as err:
        error = first_line(err)
        for call in calls:
            if not call.is_completed:
                try:
                    yield call
                except Exception:
                    continue
        return error
    return ""


def _queue(
    context: df.DurableOrchestrationContext, inp: EvaluationInput
) -> Generator[TaskBase, Any, dict[str, Any]]:
    """Queue distribution: `slots` worker sub-orchestrations drain the evaluation's queue; once
    all have ended, finalize closes what is left with the reason the slots gave up."""
    evaluation_id = inp.evaluation_id
    context.set_custom_status({"phase": "running", "slots": inp.slots})
    calls = [
        context.call_sub_orchestrator(
            names.WORKER_ORCHESTRATOR,
            WorkerInput(
                evaluation_id=evaluation_id,
                slot=slot,
                slots=inp.slots,
                tiers=inp.tiers,
                policy=inp.policy,
                job=inp.job,
                tail_copy_factor=inp.tail_copy_factor,
            ).to_json(),
            worker_instance_id(evaluation_id, slot),
        )
        for slot in range(inp.slots)
    ]
    error = yield from _gather(context, calls)
    reasons = [
        ShardSummary.from_json(call.result).reason
        for call in calls
        if call.state is TaskState.SUCCEEDED and call.result
    ]
    context.set_custom_status({"phase": "finalizing", "slots": inp.slots})
    summary = yield context.call_activity(
        names.FINALIZE_EVALUATION,
        FinalizeEvaluationInput(
            evaluation_id=evaluation_id, error=error, not_run_reason=not_run_reason(reasons)
        ).to_json(),
    )
    context.set_custom_status({"phase": "done", "slots": inp.slots})
    return summary
