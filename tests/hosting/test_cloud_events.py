"""Azure ML job events in both Event Grid delivery schemas, decoded by the real converter.

The Python worker turns each delivered event into the trigger argument with azure-functions'
`EventGridEventInConverter.decode(Datum(json, "json"), trigger_metadata=...)`; these tests
call exactly that, then the app's `aml_job_events` (its blueprint indexed by a DFApp, the user
function as the worker calls it) with the real Durable client against a local Durable HTTP API,
on a state store over the in-memory Table client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import unquote

import azure.durable_functions as df
import azure.functions as func
import pytest
from azure.data.tables import TableClient
from azure.durable_functions.models.utils import http_utils
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from adapters import runtime
from adapters.settings import AppSettings
from adapters.state.table_store import StateStore, utcnow_iso
from domain import names
from domain.jobs import JobState
from domain.messages import AML_RUN_COMPLETED, AML_RUN_STATUS_CHANGED
from tests.fakes._http import FakeServer, Reply, Request
from tests.fakes.memory_tables import MemoryTableClient
from triggers import aml_events

EID = "a1b2c3d4e5f6"
JOB = f"waa-{EID}-s0-a1"
WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-waa/providers/"
    "Microsoft.MachineLearningServices/workspaces/mlw-waa"
)


def event_grid_schema(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "eg-1",
        "topic": WORKSPACE,
        "subject": f"experiments/0000/{EID}/runs/{JOB}",
        "eventType": event_type,
        "eventTime": "2026-01-01T00:00:01Z",
        "data": data,
        "dataVersion": "2",
        "metadataVersion": "1",
    }


def cloud_events_schema(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    # Event Grid's CloudEvents 1.0 form of the same event: topic -> source, eventType -> type.
    return {
        "specversion": "1.0",
        "id": "ce-1",
        "source": WORKSPACE,
        "subject": f"experiments/0000/{EID}/runs/{JOB}",
        "type": event_type,
        "time": "2026-01-01T00:00:01Z",
        "datacontenttype": "application/json",
        "data": data,
    }


def decode(body: dict[str, Any]) -> Any:
    return EventGridEventInConverter.decode(
        meta.Datum(json.dumps(body), "json"), trigger_metadata={}
    )


class FakeDurableApi(FakeServer):
    """The Durable extension's HTTP API, as far as raising an event: the trigger's client is the
    real DurableOrchestrationClient, built from the binding JSON the host passes."""

    def __init__(self) -> None:
        super().__init__()
        self.raised: list[tuple[str, str, dict[str, Any]]] = []
        self.unexpected: list[str] = []

    def handle(self, request: Request) -> Reply:
        # /runtime/webhooks/durabletask/instances/{id}/raiseEvent/{name}
        parts = unquote(request.path).strip("/").split("/")
        if (
            request.method == "POST"
            and parts[3:4] == ["instances"]
            and parts[5:6] == ["raiseEvent"]
        ):
            body = request.json()
            # The SDK posts json.dumps(event_data) through aiohttp's json=: a JSON string.
            data = json.loads(body) if isinstance(body, str) else body
            self.raised.append((parts[4], parts[6], data))
            return Reply(202)
        self.unexpected.append(f"{request.method} {request.path}")
        return Reply(500)

    def client_binding(self) -> str:
        base = f"{self.url}/runtime/webhooks/durabletask"
        query = "taskHub=waaeval&connection=Storage"
        return json.dumps(
            {
                "taskHubName": "waaeval",
                "creationUrls": {},
                "managementUrls": {},
                "baseUrl": base,
                "requiredQueryStringParameters": query,
                "rpcBaseUrl": base + "/",
                "httpBaseUrl": base,
            }
        )


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[StateStore]:
    store = StateStore(cast(TableClient, MemoryTableClient()))
    store.register_job(
        {
            "job_name": JOB,
            "evaluation_id": EID,
            "shard_index": 0,
            "attempt": 1,
            "instance_id": f"{EID}:s0",
            "tier": "azureml",
            "submitted_at": utcnow_iso(),
        }
    )
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "HEARTBEAT_SECRET": "e" * 24}
    )
    services = runtime.Services(settings=settings, store=store)
    monkeypatch.setattr(runtime, "services", lambda: services)
    # Another test's Durable client session (bound to its own loop) is set aside, not reused.
    monkeypatch.setattr(http_utils, "_client_session", None)
    yield store


def aml_job_events() -> Any:
    # Indexed on an app of its own: get_functions() runs once per app object (a second call
    # sees its own names as duplicates), and function_app.app belongs to the devhost tests.
    app = df.DFApp()
    app.register_functions(aml_events.bp)
    (fn,) = app.get_functions()
    assert fn.get_function_name() == names.AML_EVENTS_FUNCTION
    return fn.get_user_function()


def deliver(event: Any) -> list[tuple[str, str, dict[str, Any]]]:
    async def run(client: str) -> None:
        try:
            await aml_job_events()(event=event, client=client)
        finally:
            # The Durable SDK keeps one aiohttp session per process, bound to this event loop.
            await http_utils._close_session()

    with FakeDurableApi() as durable:
        asyncio.run(run(durable.client_binding()))
        assert durable.unexpected == []
        return durable.raised


def test_the_converter_gives_each_schema_its_class() -> None:
    data = {"runId": JOB, "runStatus": "Running"}
    eg = decode(event_grid_schema(AML_RUN_STATUS_CHANGED, data))
    assert isinstance(eg, func.EventGridEvent)
    assert (eg.event_type, eg.topic, eg.get_json()) == (AML_RUN_STATUS_CHANGED, WORKSPACE, data)

    ce = decode(cloud_events_schema(AML_RUN_STATUS_CHANGED, data))
    # Not an EventGridEvent: no event_type or topic; the type is `type`, the topic `source`.
    assert isinstance(ce, func.CloudEvent) and not isinstance(ce, func.EventGridEvent)
    assert (ce.type, ce.source, ce.specversion, ce.get_json()) == (
        AML_RUN_STATUS_CHANGED,
        WORKSPACE,
        "1.0",
        data,
    )
    assert not hasattr(ce, "event_type")


@pytest.mark.parametrize("schema", [event_grid_schema, cloud_events_schema])
def test_a_failed_run_ends_the_job_and_wakes_its_shard(store: StateStore, schema: Any) -> None:
    event = decode(schema(AML_RUN_STATUS_CHANGED, {"runId": JOB, "runStatus": "Failed"}))
    raised = deliver(event)

    job = store.get_job(EID, JOB)
    assert job is not None and job["state"] == JobState.FAILED.value
    assert job["detail"] == "Azure ML reported Failed"
    assert [(i, e, d["state"]) for i, e, d in raised] == [
        (f"{EID}:s0", names.ended_event(1), JobState.FAILED.value)
    ]


@pytest.mark.parametrize("schema", [event_grid_schema, cloud_events_schema])
def test_run_completed_without_a_status_completes_the_job(store: StateStore, schema: Any) -> None:
    deliver(decode(schema(AML_RUN_COMPLETED, {"runId": JOB})))
    job = store.get_job(EID, JOB)
    assert job is not None and job["state"] == JobState.COMPLETED.value


@pytest.mark.parametrize("schema", [event_grid_schema, cloud_events_schema])
def test_other_event_types_and_unknown_jobs_are_acknowledged(
    store: StateStore, schema: Any
) -> None:
    other = decode(schema("Microsoft.MachineLearningServices.ModelRegistered", {"runId": JOB}))
    unknown = decode(
        schema(AML_RUN_STATUS_CHANGED, {"runId": "someone-else", "runStatus": "Failed"})
    )
    assert deliver(other) == [] and deliver(unknown) == []
    job = store.get_job(EID, JOB)
    assert job is not None and job["state"] == JobState.SUBMITTED.value


def test_an_event_without_a_type_is_reported_by_name(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    # What an azure-functions older than 1.25 (no CloudEvents decoding) makes of a CloudEvent:
    # the Event Grid branch reads `eventType`, which a CloudEvent does not have.
    body = cloud_events_schema(AML_RUN_STATUS_CHANGED, {"runId": JOB, "runStatus": "Failed"})
    legacy = func.EventGridEvent(
        id=body["id"],
        data=body["data"],
        topic=None,  # type: ignore[arg-type]
        subject=body["subject"],
        event_type=None,  # type: ignore[arg-type]
        event_time=None,
        data_version=None,  # type: ignore[arg-type]
    )
    with caplog.at_level(logging.ERROR):
        assert deliver(legacy) == []
    assert "PYTHON_ISOLATE_WORKER_DEPENDENCIES" in caplog.text and "ce-1" in caplog.text
    job = store.get_job(EID, JOB)
    assert job is not None and job["state"] == JobState.SUBMITTED.value
