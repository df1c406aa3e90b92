"""Spans around every backend call, and log records whose ids survive as attributes.

The backend is the simulated cloud's (no network); the spans and log records are what
OpenTelemetry would hand the Azure Monitor exporter, caught by in-memory exporters.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.trace import StatusCode

from adapters import runtime, telemetry
from adapters.compute.simulated import QuotaExceeded, TransientSubmitErrors
from adapters.logs import configure_json_logging, ids
from domain.jobs import BackendError, CapacitySpec, FailureKind, JobNotFoundError, JobSpec, Tier
from domain.messages import heartbeat_token
from domain.naming import job_name
from tests.simulated.support import make_cloud, spec
from tests.telemetry.conftest import Exported, attributes_of

SECRET = "telemetry-test-heartbeat-secret"


def _spec(shard: int = 0, attempt: int = 1) -> JobSpec:
    name = job_name("ev1", shard, attempt)
    return spec(name, shard=shard, attempt=attempt, evaluation_id="ev1").model_copy(
        update={"heartbeat_token": heartbeat_token(SECRET, name)}
    )


def test_submit_status_cancel_are_spans_with_the_ids_and_never_the_token(
    exported: Exported,
) -> None:
    cloud, _, _ = make_cloud()
    backend = telemetry.traced(cloud.backend(Tier.AZURE_ML))
    s = _spec(shard=3, attempt=2)

    result = backend.submit(s)
    assert backend.status(s.job_name).job_name == s.job_name
    backend.cancel(s.job_name)

    by_name = {span.name: span for span in exported.finished_spans()}
    assert set(by_name) == {"compute.submit", "compute.status", "compute.cancel"}
    for span in by_name.values():
        attrs = dict(span.attributes or {})
        assert attrs["tier"] == "azureml"
        assert (attrs["evaluation_id"], attrs["shard"], attrs["attempt"]) == ("ev1", 3, 2)
        assert attrs["job_name"] == s.job_name
        assert span.status.status_code is StatusCode.UNSET
    submit = dict(by_name["compute.submit"].attributes or {})
    assert submit["backend_job_id"] == result.backend_job_id and submit["created"] is True
    assert dict(by_name["compute.status"].attributes or {})["job_state"]
    assert s.heartbeat_token not in exported.everything()
    assert SECRET not in exported.everything()


def test_backend_errors_mark_the_span_failed_and_a_missing_job_does_not(
    exported: Exported,
) -> None:
    cloud, _, _ = make_cloud()
    backend = telemetry.traced(cloud.backend(Tier.AZURE_ML))
    transient, refused = _spec(shard=0), _spec(shard=1)
    cloud.script(transient.job_name, TransientSubmitErrors(1, 503))
    cloud.script(refused.job_name, QuotaExceeded())

    for s, kind in ((transient, FailureKind.TRANSIENT), (refused, FailureKind.PERMANENT_FOR_TIER)):
        with pytest.raises(BackendError) as err:
            backend.submit(s)
        assert err.value.kind is kind
    with pytest.raises(JobNotFoundError):
        backend.status(job_name("ev1", 9, 1))

    submits = exported.finished_spans("compute.submit")
    assert [dict(sp.attributes or {})["failure_kind"] for sp in submits] == [
        "transient",
        "permanent_for_tier",
    ]
    for span in submits:
        assert span.status.status_code is StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]
    (status,) = exported.finished_spans("compute.status")
    assert status.status.status_code is StatusCode.UNSET
    assert dict(status.attributes or {})["job_state"] == "not_found"


def test_the_services_hand_out_traced_backends_for_every_tier(
    monkeypatch: pytest.MonkeyPatch, exported: Exported, azurite_connection_string: str
) -> None:
    # adapters.runtime is the one place a backend is picked; every tier comes out wrapped.
    cloud, _, _ = make_cloud()
    monkeypatch.setattr("adapters.compute.simulated.current_cloud", lambda: cloud)
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string)
    monkeypatch.setenv("HEARTBEAT_SECRET", SECRET)
    monkeypatch.setenv("COMPUTE_BACKEND", "simulated")
    runtime.reset_services()
    try:
        svc = runtime.services()
        for tier in Tier:
            backend = svc.backend(tier)
            assert isinstance(backend, telemetry.TracedBackend) and backend.tier is tier
            backend.cancel(job_name("ev1", 0, 1))
    finally:
        runtime.reset_services()
    assert [dict(s.attributes or {})["tier"] for s in exported.finished_spans()] == [
        t.value for t in Tier
    ]


def test_log_ids_arrive_as_attributes_and_in_the_json_log_alike(exported: Exported) -> None:
    # With telemetry on, the devhost's JSON log and the OpenTelemetry handler see the same
    # records: configuring the JSON log keeps the OTel handler on the root logger.
    root = logging.getLogger()
    saved = list(root.handlers), root.level, logging.getLogger("azure").level
    out = io.StringIO()
    try:
        configure_json_logging(logging.StreamHandler(out))
        logging.getLogger("activities.attempts").info(
            "job submitted (created=%s)",
            True,
            **ids(evaluation_id="ev1", shard=2, attempt=1, job_name=job_name("ev1", 2, 1)),
        )
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("azure").setLevel(saved[2])

    line = json.loads(out.getvalue().strip().splitlines()[-1])
    (record,) = [r for r in exported.log_records() if r.log_record.body == line["message"]]
    attrs = attributes_of(record)
    for name in ("evaluation_id", "shard", "attempt", "job_name"):
        assert attrs[name] == line[name]
    assert record.log_record.severity_text == "INFO"


def test_capacity_calls_are_spans_with_the_evaluation_and_whether_it_is_ready(
    exported: Exported,
) -> None:
    cloud, _, _ = make_cloud()
    backend = telemetry.traced(cloud.backend(Tier.BATCH))
    capacity = CapacitySpec(
        evaluation_id="ev1", tier=Tier.BATCH, vm_size="Standard_D4s_v5", max_nodes=2
    )

    first = backend.ensure_capacity(capacity)
    later = backend.capacity_status(capacity)

    spans = {span.name: dict(span.attributes or {}) for span in exported.finished_spans()}
    assert set(spans) == {"compute.ensure_capacity", "compute.capacity_status"}
    assert spans["compute.ensure_capacity"]["ready"] is first.ready
    assert spans["compute.capacity_status"]["ready"] is later.ready
    for attrs in spans.values():
        assert (attrs["tier"], attrs["evaluation_id"]) == ("batch", "ev1")
