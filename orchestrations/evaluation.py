"""The evaluation orchestration: fan out one shard sub-orchestration per planned shard, gather,
and write the summary. The plan and the policy are snapshotted into the input by the start
endpoint, so replays never read settings. Custom status stays small: counts, not lists."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskBase

from domain import names
from domain.contracts import EvaluationInput, FinalizeEvaluationInput, ShardInput
from domain.naming import shard_instance_id
from domain.outcomes import first_line

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=names.EVALUATION_ORCHESTRATOR)
def evaluation(
    context: df.DurableOrchestrationContext,
) -> Generator[TaskBase, Any, dict[str, Any]]:
    inp = EvaluationInput.from_json(context.get_input())
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
    error = ""
    try:
        yield context.task_all(calls)
    except Exception as err:
        # A shard orchestration itself failed (it records its own task outcomes in every
        # normal path). Wait for the others so that finalizing doesn't race running shards.
        error = first_line(err)
        for call in calls:
            if not call.is_completed:
                try:
                    yield call
                except Exception:
                    continue

    context.set_custom_status({"phase": "finalizing", "shards": len(shards)})
    summary = yield context.call_activity(
        names.FINALIZE_EVALUATION,
        FinalizeEvaluationInput(evaluation_id=evaluation_id, error=error).to_json(),
    )
    context.set_custom_status({"phase": "done", "shards": len(shards)})
    return summary
