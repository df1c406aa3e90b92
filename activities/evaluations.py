"""Activities of the evaluation as a whole."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.durable_functions as df

from adapters import runtime
from adapters.logs import ids
from adapters.state import views
from domain import alerts, names
from domain.contracts import EvaluationState, FinalizeEvaluationInput
from domain.jobs import BackendError, Tier
from domain.outcomes import TaskOutcome

bp = df.Blueprint()
log = logging.getLogger(__name__)


@bp.activity_trigger(input_name="payload", activity=names.FINALIZE_EVALUATION)
def finalize_evaluation(payload: dict) -> dict[str, Any]:
    """Make sure every task has exactly one outcome, then write the summary (idempotent)."""
    request = FinalizeEvaluationInput.from_json(payload)
    svc = runtime.services()
    store = svc.store
    now = runtime.now()
    eid = request.evaluation_id
    rows = store.get_evaluation_rows(eid)
    if rows is None:
        raise LookupError(f"evaluation {eid} has no state rows")
    open_outcomes = (TaskOutcome.PENDING, TaskOutcome.RUNNING)
    open_ids = [
        t["task_id"]
        for t in rows["tasks"]
        if t.get("outcome", TaskOutcome.PENDING) in open_outcomes
    ]
    if open_ids:
        reason = (
            f"internal error: {request.error}"
            if request.error
            else (request.not_run_reason or "shard ended without a result")
        )
        store.close_tasks(eid, open_ids, outcome=TaskOutcome.NOT_RUN.value, reason=reason, at=now)
        rows = store.get_evaluation_rows(eid)
        assert rows is not None
    end_compute(eid, {str(job.get("tier", "")) for job in rows["jobs"]})
    evaluation = rows["evaluation"]
    if evaluation.get("summary"):  # a re-delivery: the summary stands; the alert fires once
        written: dict[str, Any] = json.loads(evaluation["summary"])
        ended = str(evaluation.get("state", EvaluationState.COMPLETED.value))
        svc.alerter().fire(eid, alerts.evaluation_ended(eid, ended, written), now)
        return written
    result = views.summary(rows, now)
    state = (
        EvaluationState.CANCELLED
        if evaluation.get("cancel_requested")
        else (EvaluationState.FAILED if request.error else EvaluationState.COMPLETED)
    )
    store.update_evaluation(
        eid, state=state.value, summary=json.dumps(result), finished_at=now.isoformat()
    )
    svc.alerter().fire(eid, alerts.evaluation_ended(eid, state.value, result), now)
    log.info(
        "evaluation %s: %d/%d tasks completed, $%.2f",
        state.value,
        result["counts"]["completed"],
        result["counts"]["total"],
        result["cost_usd"],
        **ids(evaluation_id=eid),
    )
    return result


def end_compute(evaluation_id: str, tiers: set[str]) -> None:
    """Release what each tier the evaluation used holds for it (the Batch job, which otherwise
    stays active against the account's quota). Errors are logged, never raised: the results are
    in, and the sweeper ends what is left (triggers/sweeper.py)."""
    svc = runtime.services()
    for name in sorted(tiers):
        try:
            tier = Tier(name)
        except ValueError:
            continue
        try:
            svc.backend(tier).end_evaluation(evaluation_id)
        except BackendError as err:
            log.warning(
                "ending the evaluation on tier %s failed (the sweeper retries): %s",
                tier.value,
                err,
                **ids(evaluation_id=evaluation_id),
            )
