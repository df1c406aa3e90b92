"""Client functions using the real DurableOrchestrationClient against the devhost Durable API."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest
import requests

from devhost.engine import CrashInjector
from devhost.host import DevHost

APPROVAL = "approval"


def _json(payload: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


def _app() -> df.DFApp:
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.orchestration_trigger(context_name="context")
    def approval_flow(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        item = context.get_input()
        context.set_custom_status({"waiting_for": APPROVAL})
        decision = yield context.wait_for_external_event(APPROVAL)
        doubled = yield context.call_activity("double", item["n"])
        return {"item": item["name"], "decision": decision, "doubled": doubled}

    @app.activity_trigger(input_name="n")
    def double(n: int) -> int:
        return n * 2

    @app.route(route="orchestrators/{name}", methods=["POST"])
    @app.durable_client_input(client_name="client")
    async def start(
        req: func.HttpRequest, client: df.DurableOrchestrationClient
    ) -> func.HttpResponse:
        try:
            instance_id = await client.start_new(
                req.route_params["name"], req.params.get("id"), req.get_json()
            )
        except Exception as err:
            return _json({"error": str(err)}, 400)
        return client.create_check_status_response(req, instance_id)

    @app.route(route="instances/{instance_id}/{op}", methods=["POST"])
    @app.durable_client_input(client_name="client")
    async def manage(
        req: func.HttpRequest, client: df.DurableOrchestrationClient
    ) -> func.HttpResponse:
        instance_id, op = req.route_params["instance_id"], req.route_params["op"]
        try:
            if op == "status":
                status = await client.get_status(instance_id, show_history=True)
                if not status:
                    return _json({"found": False}, 404)
                return _json({**status.to_json(), "history_events": len(status.historyEvents)})
            if op == "raise":
                await client.raise_event(instance_id, APPROVAL, req.get_json())
            elif op == "terminate":
                await client.terminate(instance_id, "operator stopped it")
            else:
                return _json({"error": f"unknown op {op}"}, 400)
        except Exception as err:
            return _json({"error": str(err)}, 409)
        return _json({"done": op})

    @app.route(route="list", methods=["GET"])
    @app.durable_client_input(client_name="client")
    async def list_instances(
        req: func.HttpRequest, client: df.DurableOrchestrationClient
    ) -> func.HttpResponse:
        if "created_after" in req.params:
            after = datetime.fromisoformat(req.params["created_after"])
            found = await client.get_status_by(created_time_from=after)
        elif "status" in req.params:
            wanted = [df.OrchestrationRuntimeStatus(s) for s in req.params["status"].split(",")]
            found = await client.get_status_by(
                runtime_status=wanted, instance_id_prefix=req.params.get("prefix")
            )
        else:
            found = await client.get_status_all()
        return _json(sorted((s.instance_id, s.runtime_status.value) for s in found))

    return app


def _start(host: DevHost, instance_id: str, n: int = 21) -> requests.Response:
    return requests.post(
        f"{host.base_url}/api/orchestrators/approval_flow?id={instance_id}",
        json={"name": instance_id, "n": n},
        timeout=10,
    )


def _op(host: DevHost, instance_id: str, op: str, body: Any = None) -> requests.Response:
    return requests.post(f"{host.base_url}/api/instances/{instance_id}/{op}", json=body, timeout=10)


@pytest.fixture
def host(start_host: Callable[..., DevHost]) -> DevHost:
    return start_host(_app())


def test_start_status_raise_event_and_complete(host: DevHost) -> None:
    started = _start(host, "ap-1")
    assert started.status_code == 202
    payload = started.json()
    assert payload["id"] == "ap-1"
    assert started.headers["Location"] == payload["statusQueryGetUri"]
    host.engine.wait_idle()

    status = _op(host, "ap-1", "status")
    assert status.status_code == 200
    running = status.json()
    assert running["runtimeStatus"] == "Running"
    assert running["input"] == {"name": "ap-1", "n": 21}
    assert running["customStatus"] == {"waiting_for": APPROVAL}
    assert running["history_events"] > 0

    assert _op(host, "ap-1", "raise", {"by": "alice"}).json() == {"done": "raise"}
    final = host.engine.wait_for("ap-1")
    assert final.runtime_status == "Completed"
    done = _op(host, "ap-1", "status").json()
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == {"item": "ap-1", "decision": {"by": "alice"}, "doubled": 42}

    # The instance is gone for events now: the client reports the 410 it gets.
    gone = _op(host, "ap-1", "raise", {"by": "bob"})
    assert gone.status_code == 409
    assert "is gone" in gone.json()["error"]


def test_raise_event_for_unknown_instance_is_404_seen_by_the_client(host: DevHost) -> None:
    resp = _op(host, "no-such-instance", "raise", {"by": "alice"})
    assert resp.status_code == 409
    assert resp.json()["error"] == "No instance with ID no-such-instance found."
    assert _op(host, "no-such-instance", "status").status_code == 404


def test_start_of_unknown_orchestrator_is_reported_to_the_client(host: DevHost) -> None:
    resp = requests.post(f"{host.base_url}/api/orchestrators/nope", json={}, timeout=10)
    assert resp.status_code == 400
    assert "nope" in resp.json()["error"]


def test_terminate_and_query_by_status_and_prefix(host: DevHost) -> None:
    for instance_id in ("batch-1", "batch-2", "other-1"):
        assert _start(host, instance_id).status_code == 202
    host.engine.wait_idle()
    assert _op(host, "batch-1", "terminate").json() == {"done": "terminate"}
    terminated = host.engine.wait_for("batch-1")
    assert terminated.runtime_status == "Terminated"
    # Terminating a finished instance answers 410, which the client accepts silently.
    assert _op(host, "batch-1", "terminate").status_code == 200

    everything = requests.get(f"{host.base_url}/api/list", timeout=10).json()
    assert everything == [["batch-1", "Terminated"], ["batch-2", "Running"], ["other-1", "Running"]]
    running = requests.get(f"{host.base_url}/api/list?status=Running", timeout=10).json()
    assert running == [["batch-2", "Running"], ["other-1", "Running"]]
    prefixed = requests.get(
        f"{host.base_url}/api/list?status=Running,Terminated&prefix=batch-", timeout=10
    ).json()
    assert prefixed == [["batch-1", "Terminated"], ["batch-2", "Running"]]

    created = host.engine.get_status("batch-1")
    assert created is not None
    before = (created.created_time - timedelta(seconds=1)).isoformat()
    after = (created.created_time + timedelta(seconds=1)).isoformat()
    listed = requests.get(f"{host.base_url}/api/list", params={"created_after": before}, timeout=10)
    assert len(listed.json()) == 3
    listed = requests.get(f"{host.base_url}/api/list", params={"created_after": after}, timeout=10)
    assert listed.json() == []


def test_check_status_response_urls_work_when_followed(host: DevHost) -> None:
    urls = _start(host, "links-1", n=5).json()
    assert urls["statusQueryGetUri"].startswith(f"{host.base_url}/runtime/webhooks/durabletask/")
    host.engine.wait_idle()

    pending = requests.get(urls["statusQueryGetUri"], timeout=10)
    assert pending.status_code == 202
    assert pending.json()["runtimeStatus"] == "Running"

    send = urls["sendEventPostUri"].replace("{eventName}", APPROVAL)
    assert requests.post(send, json={"by": "url"}, timeout=10).status_code == 202
    host.engine.wait_for("links-1")
    finished = requests.get(urls["statusQueryGetUri"], timeout=10)
    assert finished.status_code == 200
    assert finished.json()["output"] == {
        "item": "links-1",
        "decision": {"by": "url"},
        "doubled": 10,
    }
    assert requests.post(send, json={}, timeout=10).status_code == 410

    other = _start(host, "links-2").json()
    host.engine.wait_idle()
    terminate = other["terminatePostUri"].replace("{text}", "enough")
    assert requests.post(terminate, timeout=10).status_code == 202
    assert host.engine.wait_for("links-2").runtime_status == "Terminated"

    purge = requests.delete(urls["purgeHistoryDeleteUri"], timeout=10)
    assert purge.status_code == 200
    assert purge.json() == {"instancesDeleted": 1}
    assert requests.get(urls["statusQueryGetUri"], timeout=10).status_code == 404


def test_durable_api_rejects_malformed_json_and_unknown_routes(host: DevHost) -> None:
    api = f"{host.base_url}/runtime/webhooks/durabletask"
    bad = requests.post(
        f"{api}/orchestrators/approval_flow",
        data=b"{broken",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert bad.status_code == 400
    assert requests.get(f"{api}/nothing/here", timeout=10).status_code == 404
    assert requests.post(f"{api}/instances/x/raiseEvent/e", json={}, timeout=10).status_code == 404


def test_a_crashed_engine_answers_as_an_unavailable_host(
    start_host: Callable[..., DevHost],
) -> None:
    crash = CrashInjector(after_activity={"double": 1})
    host = start_host(_app(), crash_injector=crash)
    assert _start(host, "crash-1").status_code == 202
    host.engine.wait_idle()
    assert _op(host, "crash-1", "raise", {"by": "alice"}).status_code == 200
    host.engine.wait_crashed()
    api = f"{host.base_url}/runtime/webhooks/durabletask"
    resp = requests.post(f"{api}/instances/crash-1/raiseEvent/{APPROVAL}", json={}, timeout=10)
    assert resp.status_code == 503
    resp = requests.post(f"{api}/orchestrators/approval_flow", json={}, timeout=10)
    assert resp.status_code == 503
