"""Event Grid trigger for Azure ML job state changes (RunStatusChanged / RunCompleted).

Events can be duplicated, late, out of order or lost: the job row only moves forward (ETag),
unknown jobs are logged and acknowledged, and a hung job sends nothing at all, which is why
heartbeats and the sweeper exist.
"""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func

from adapters import runtime
from adapters.logs import ids
from domain import names
from domain.job_state import from_azureml
from domain.jobs import FailureKind, JobState
from domain.messages import AML_RUN_COMPLETED, AML_RUN_STATUS_CHANGED
from triggers.offload import off_loop
from triggers.signals import signal_ended

bp = df.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name(names.AML_EVENTS_FUNCTION)
@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def aml_job_events(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    if event.event_type not in (AML_RUN_STATUS_CHANGED, AML_RUN_COMPLETED):
        log.info("ignoring event type %s", event.event_type)
        return
    data = event.get_json() or {}
    run_id = str(data.get("runId", ""))
    status = str(
        data.get("runStatus") or ("Completed" if event.event_type == AML_RUN_COMPLETED else "")
    )
    store = (await off_loop(runtime.services)).store
    index = await off_loop(store.lookup_job, run_id) if run_id else None
    if index is None:
        log.info("event for unknown job %r acknowledged", run_id)
        return
    eid = index["evaluation_id"]
    state = from_azureml(status)
    fields = ids(
        evaluation_id=eid, shard=index["shard_index"], attempt=index["attempt"], job_name=run_id
    )
    kind = FailureKind.JOB_FAILED if state is JobState.FAILED else None
    job, changed = await off_loop(
        store.advance_job,
        eid,
        run_id,
        state,
        at=runtime.now(),
        detail=f"Azure ML reported {status}",
        failure_kind=kind,
    )
    log.info("Azure ML status %s (changed=%s)", status, changed, **fields)
    if job is not None:
        await signal_ended(client, store, job)
