from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import requests

from devhost.host import DevHost

NOTIFY = {"aeg-event-type": "Notification"}
WORKSPACE = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.MachineLearningServices"


def _event(i: int, **overrides: Any) -> dict[str, Any]:
    event = {
        "id": f"evt-{i}",
        "topic": f"{WORKSPACE}/workspaces/ws",
        "subject": f"experiments/e/runs/job-{i}",
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "eventTime": f"2026-01-01T00:00:0{i}Z",
        "data": {"runId": f"job-{i}", "runStatus": "Running"},
        "dataVersion": "2",
    }
    event.update(overrides)
    return event


def _app(seen: list[dict[str, Any]]) -> df.DFApp:
    app = df.DFApp()

    @app.event_grid_trigger(arg_name="event")
    def on_job_event(event: func.EventGridEvent) -> None:
        data = event.get_json()
        if data.get("runStatus") == "Explode":
            raise RuntimeError("handler failed")
        seen.append(
            {
                "id": event.id,
                "topic": event.topic,
                "subject": event.subject,
                "event_type": event.event_type,
                "event_time": event.event_time.isoformat() if event.event_time else None,
                "data": data,
                "data_version": event.data_version,
            }
        )

    return app


def _url(host: DevHost, name: str = "on_job_event") -> str:
    return f"{host.base_url}/runtime/webhooks/eventgrid?functionName={name}"


def test_delivery_invokes_the_function_once_per_event(start_host: Callable[..., DevHost]) -> None:
    seen: list[dict[str, Any]] = []
    host = start_host(_app(seen))
    resp = requests.post(_url(host), json=[_event(1), _event(2)], headers=NOTIFY, timeout=10)
    assert resp.status_code == 202
    assert [s["id"] for s in seen] == ["evt-1", "evt-2"]
    first = seen[0]
    assert first["subject"] == "experiments/e/runs/job-1"
    assert first["topic"].endswith("/workspaces/ws")
    assert first["event_type"] == "Microsoft.MachineLearningServices.RunStatusChanged"
    assert first["event_time"] == "2026-01-01T00:00:01+00:00"
    assert first["data"] == {"runId": "job-1", "runStatus": "Running"}
    assert first["data_version"] == "2"


def test_subscription_validation_handshake(start_host: Callable[..., DevHost]) -> None:
    seen: list[dict[str, Any]] = []
    host = start_host(_app(seen))
    validation = _event(
        0,
        eventType="Microsoft.EventGrid.SubscriptionValidationEvent",
        data={"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
    )
    resp = requests.post(
        _url(host),
        json=[validation],
        headers={"aeg-event-type": "SubscriptionValidation"},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert seen == []


def test_malformed_body_unknown_function_and_failing_handler(
    start_host: Callable[..., DevHost],
) -> None:
    seen: list[dict[str, Any]] = []
    host = start_host(_app(seen))
    bad = requests.post(_url(host), data=b"[{not json", headers=NOTIFY, timeout=10)
    assert bad.status_code == 400
    assert "not JSON" in bad.json()["Message"]
    not_events = requests.post(_url(host), json=[1, 2], headers=NOTIFY, timeout=10)
    assert not_events.status_code == 400

    unknown = requests.post(
        _url(host, "no_such_function"), json=[_event(1)], headers=NOTIFY, timeout=10
    )
    assert unknown.status_code == 404

    failing = _event(3, data={"runId": "job-3", "runStatus": "Explode"})
    resp = requests.post(_url(host), json=[_event(4), failing], headers=NOTIFY, timeout=10)
    assert resp.status_code == 500
    assert [s["id"] for s in seen] == ["evt-4"]


def test_cloud_events_delivery_and_handshake(start_host: Callable[..., DevHost]) -> None:
    seen: list[dict[str, Any]] = []
    app = df.DFApp()

    @app.event_grid_trigger(arg_name="event")
    def on_cloud_event(event: func.EventGridEvent) -> None:
        # The worker's converter turns a CloudEvents payload into azure.functions' CloudEvent.
        seen.append({"class": type(event).__name__, "type": event.type, "data": event.get_json()})

    host = start_host(app)
    url = _url(host, "on_cloud_event")
    handshake = requests.options(
        url, headers={"WebHook-Request-Origin": "eventgrid.azure.net"}, timeout=10
    )
    assert handshake.status_code == 200
    assert handshake.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"

    event = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": f"{WORKSPACE}/workspaces/ws",
        "subject": "experiments/e/runs/job-1",
        "type": "Microsoft.MachineLearningServices.RunStatusChanged",
        "time": "2026-01-01T00:00:01Z",
        "data": {"runId": "job-1", "runStatus": "Running"},
    }
    resp = requests.post(
        url,
        data=json.dumps(event),
        headers={"Content-Type": "application/cloudevents+json; charset=utf-8"},
        timeout=10,
    )
    assert resp.status_code == 202
    assert seen == [
        {
            "class": "CloudEvent",
            "type": "Microsoft.MachineLearningServices.RunStatusChanged",
            "data": {"runId": "job-1", "runStatus": "Running"},
        }
    ]
