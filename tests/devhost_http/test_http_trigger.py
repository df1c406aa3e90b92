from __future__ import annotations

import json
from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import requests

from devhost.host import DevHost


def _app() -> df.DFApp:
    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="evaluations/{evaluation_id}/tasks/{task:int}", methods=["PUT"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        body = req.get_json()
        payload = {
            "method": req.method,
            "route": dict(req.route_params),
            "query": dict(req.params),
            "header": req.headers.get("x-trace"),
            "body": body,
            "url": req.url,
        }
        return func.HttpResponse(
            json.dumps(payload),
            status_code=201,
            mimetype="application/json",
            headers={"X-Handled-By": "echo"},
        )

    @app.route(route="async/{name}", methods=["GET"])
    async def greet(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(f"hello {req.route_params['name']}", status_code=200)

    @app.route(route="boom", methods=["POST"])
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("the function failed")

    return app


def test_http_trigger_over_loopback(start_host: Callable[..., DevHost]) -> None:
    host = start_host(_app())
    resp = requests.put(
        f"{host.base_url}/api/evaluations/ev%201/tasks/7?verbose=true&tier=aml",
        json={"tasks": ["a", "b"]},
        headers={"X-Trace": "t-1"},
        timeout=10,
    )
    assert resp.status_code == 201
    assert resp.headers["X-Handled-By"] == "echo"
    assert resp.headers["Content-Type"].startswith("application/json")
    seen = resp.json()
    assert seen["method"] == "PUT"
    assert seen["route"] == {"evaluation_id": "ev 1", "task": "7"}
    assert seen["query"] == {"verbose": "true", "tier": "aml"}
    assert seen["header"] == "t-1"
    assert seen["body"] == {"tasks": ["a", "b"]}
    assert seen["url"].startswith(f"{host.base_url}/api/evaluations/")


def test_async_function_and_auth_level_not_enforced(start_host: Callable[..., DevHost]) -> None:
    host = start_host(_app())
    resp = requests.get(f"{host.base_url}/api/async/world", timeout=10)
    assert resp.status_code == 200
    assert resp.text == "hello world"


def test_unknown_route_wrong_method_and_constraint_are_404(
    start_host: Callable[..., DevHost],
) -> None:
    host = start_host(_app())
    assert requests.get(f"{host.base_url}/api/nothing", timeout=10).status_code == 404
    assert requests.get(f"{host.base_url}/api/evaluations/e/tasks/1", timeout=10).status_code == 404
    assert requests.put(f"{host.base_url}/api/evaluations/e/tasks/x", timeout=10).status_code == 404
    assert requests.get(f"{host.base_url}/elsewhere", timeout=10).status_code == 404


def test_function_exception_is_500(start_host: Callable[..., DevHost]) -> None:
    host = start_host(_app())
    assert requests.post(f"{host.base_url}/api/boom", timeout=10).status_code == 500


def test_virtual_time_stands_still_while_a_request_is_served(
    start_host: Callable[..., DevHost],
) -> None:
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    hosts: list[DevHost] = []

    @app.orchestration_trigger(context_name="context")
    def sleeper(context: df.DurableOrchestrationContext) -> Generator[Any, Any, str]:
        yield context.create_timer(context.current_utc_datetime + timedelta(hours=1))
        return "woke"

    @app.route(route="hold/{instance_id}", methods=["POST"])
    def hold(req: func.HttpRequest) -> func.HttpResponse:
        host = hosts[0]
        before = host.clock.now()
        host.engine.start_orchestration("sleeper", None, req.route_params["instance_id"])
        # Outside a request the engine would skip the hour at once and finish the instance.
        try:
            host.engine.wait_for(req.route_params["instance_id"], timeout=1.0)
            finished = True
        except TimeoutError:
            finished = False
        moved = host.clock.now() != before
        return func.HttpResponse(json.dumps({"finished": finished, "moved": moved}))

    hosts.append(start_host(app))
    host = hosts[0]
    start = host.clock.now()
    resp = requests.post(f"{host.base_url}/api/hold/s-1", timeout=30)
    assert resp.json() == {"finished": False, "moved": False}
    assert host.engine.wait_for("s-1").runtime_status == "Completed"
    assert host.clock.now() - start >= timedelta(hours=1)
