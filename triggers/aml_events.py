"""Event Grid trigger for Azure ML job state changes (RunStatusChanged / RunCompleted).

Events can be duplicated, late, out of order or lost: the job row only moves forward (ETag),
unknown jobs are logged and acknowledged, and a hung job sends nothing at all, which is why
heartbeats and the sweeper exist.

A subscription delivers either schema. The worker decodes each event with azure-functions'
`EventGridEventInConverter.decode` (azure/functions/eventgrid.py, 1.26.0): a body with
`specversion` (CloudEvents 1.0) becomes a `func.CloudEvent` (`type`, `source`, `subject`,
`time`, `id`, `get_json()` for `data`), any other an `EventGridEvent` (`event_type`, `topic`,
`subject`, `event_time`, ...), whatever the annotation says. The annotation cannot be a Union:
the worker's indexing accepts only a class (`check_input_type_annotation`: EventGridEvent or
CloudEvent). CloudEvent decoding came with azure-functions 1.25 (Azure/azure-functions-python-
library#314); on Python 3.11/3.12 the worker loads its own older copy unless the app sets
PYTHON_ISOLATE_WORKER_DEPENDENCIES=1 (the Functions team in Azure/azure-functions-python-worker
#1642; infra/main.bicep sets it), and that copy turns a CloudEvent into an EventGridEvent with
no type, which is reported below by name rather than dropped in silence.
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
    event_type = _event_type(event)
    if event_type is None:
        log.error(
            "Event Grid event %s has no type: a CloudEvents 1.0 delivery decoded by an"
            " azure-functions older than 1.25 (set PYTHON_ISOLATE_WORKER_DEPENDENCIES=1 so the"
            " worker loads the app's pinned azure-functions); acknowledged, the sweeper will"
            " reconcile the job",
            event.id,
        )
        return
    if event_type not in (AML_RUN_STATUS_CHANGED, AML_RUN_COMPLETED):
        log.info("ignoring event type %s", event_type)
        return
    data = event.get_json() or {}
    run_id = str(data.get("runId", ""))
    status = str(data.get("runStatus") or ("Completed" if event_type == AML_RUN_COMPLETED else ""))
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


def _event_type(event: func.EventGridEvent | func.CloudEvent) -> str | None:
    """The event's type in either schema (duck-typed: an older azure-functions has no
    CloudEvent class to test against)."""
    value = getattr(event, "event_type", None) or getattr(event, "type", None)
    return str(value) if value else None
