"""The devhost's HTTP face, served on 127.0.0.1 the way `func start` serves an app.

- `/api/<route>`: HTTP-triggered functions (route templates, methods, params, headers, body).
- `/runtime/webhooks/durabletask/...`: the Durable HTTP API (`devhost.durable_api`).
- `/runtime/webhooks/eventgrid?functionName=NAME`: the Event Grid webhook, one invocation per
  event, with the subscription-validation handshake.

Every request is served inside `engine.in_flight()`, so virtual time stands still while a request
(and the function it runs) is being served. Auth levels are not enforced, as with `func start`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from devhost import invoke
from devhost.durable_api import DURABLE_WEBHOOK_PATH, DurableHttpApi, Request, Response
from devhost.errors import EngineCrashedError
from devhost.invoke import EVENT_GRID_TRIGGER, HTTP_TRIGGER, UserFunction
from devhost.routes import Route, build_route, find_route
from devhost.worker import FunctionFailedError

if TYPE_CHECKING:
    from devhost.engine import Engine

log = logging.getLogger(__name__)

EVENT_GRID_WEBHOOK_PATH = "/runtime/webhooks/eventgrid"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
DEFAULT_ROUTE_PREFIX = "api"
CLOUD_EVENTS_MEDIA_TYPES = ("application/cloudevents+json", "application/cloudevents-batch+json")


class FunctionRouter:
    """Turns a `Request` into a `Response` by calling the app's functions or the Durable API."""

    def __init__(
        self,
        engine: Engine,
        functions: Iterable[UserFunction],
        durable_api: DurableHttpApi,
        *,
        route_prefix: str = DEFAULT_ROUTE_PREFIX,
    ) -> None:
        self.engine = engine
        self.durable_api = durable_api
        self.route_prefix = route_prefix.strip("/")
        self.http_functions: dict[str, UserFunction] = {}
        self.event_grid_functions: dict[str, UserFunction] = {}
        self.routes: list[Route] = []
        for fn in functions:
            if fn.trigger.type == HTTP_TRIGGER:
                fn.check_bindable()
                methods = [
                    str(getattr(m, "value", m)) for m in fn.trigger.properties.get("methods") or []
                ]
                self.routes.append(
                    build_route(fn.name, fn.trigger.properties.get("route"), methods)
                )
                self.http_functions[fn.name] = fn
            elif fn.trigger.type == EVENT_GRID_TRIGGER:
                fn.check_bindable()
                self.event_grid_functions[fn.name] = fn

    def route_url(self, base_url: str, route: Route) -> str:
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        return f"{base_url}{prefix}/{route.template.strip('/')}"

    def dispatch(self, req: Request) -> Response:
        try:
            with self.engine.in_flight():
                return self._dispatch(req)
        except EngineCrashedError:
            # A crash-injected engine stands for a dead process: answer as an unavailable host.
            return Response.error(503, "the host's engine has stopped")

    def _dispatch(self, req: Request) -> Response:
        path = req.path
        if path == DURABLE_WEBHOOK_PATH or path.startswith(DURABLE_WEBHOOK_PATH + "/"):
            sub = unquote(path[len(DURABLE_WEBHOOK_PATH) :]).strip("/")
            return self.durable_api.handle(req, sub)
        if path.rstrip("/") == EVENT_GRID_WEBHOOK_PATH:
            return self._event_grid(req)
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        if path == prefix or path.startswith(prefix + "/"):
            found = find_route(self.routes, req.method, path[len(prefix) :])
            if found is not None:
                route, params = found
                return self._http(req, self.http_functions[route.function_name], params)
        return Response.error(404, f"no function serves {req.method} {req.path}")

    def _http(self, req: Request, fn: UserFunction, params: dict[str, str]) -> Response:
        request = invoke.http_request(
            req.method,
            req.url,
            headers=req.headers,
            query=req.query,
            route_params=params,
            body=req.body,
        )
        try:
            returned = fn.invoke(request, durable_client=self.durable_api.client_binding())
        except FunctionFailedError as failed:
            log.error("function %s failed: %s\n%s", fn.name, failed.message, failed.stack_trace)
            return Response(500)
        result = invoke.http_result(returned)
        return Response(result.status, result.headers, result.body)

    def _event_grid(self, req: Request) -> Response:
        name = req.query.get("functionName")
        fn = self.event_grid_functions.get(name or "")
        if req.method == "OPTIONS":
            return _cloud_events_handshake(req, fn is not None)
        if req.method != "POST":
            return Response.error(405, "the Event Grid webhook accepts POST only")
        if fn is None:
            return Response.error(404, f"cannot find an Event Grid function named {name!r}")
        try:
            body = json.loads(req.body)
        except ValueError as err:
            return Response.error(400, f"the request body is not JSON: {err}")
        events: list[Any] = body if isinstance(body, list) else [body]
        if not events or not all(isinstance(e, dict) for e in events):
            return Response.error(400, "the request body must be a JSON array of Event Grid events")
        kind = req.headers.get("aeg-event-type", "")
        if not kind and _is_cloud_events(req):
            # A CloudEvents 1.0 delivery: one event (application/cloudevents+json) or a batch.
            kind = "Notification"
        if kind == "SubscriptionValidation":
            return _validation_response(events)
        if kind == "Unsubscribe":
            return Response(202)
        if kind != "Notification":
            return Response.error(400, f"unsupported aeg-event-type header value {kind!r}")
        failures = 0
        for event in events:
            try:
                fn.invoke(
                    invoke.event_grid_event(event), durable_client=self.durable_api.client_binding()
                )
            except FunctionFailedError as failed:
                failures += 1
                log.error(
                    "Event Grid function %s failed on event %s: %s\n%s",
                    fn.name,
                    event.get("id"),
                    failed.message,
                    failed.stack_trace,
                )
        if failures:
            # Event Grid retries the whole delivery on a 5xx, as it does in Azure.
            return Response.error(500, f"{failures} of {len(events)} event(s) failed")
        return Response(202)


def _is_cloud_events(req: Request) -> bool:
    content_type = req.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() in CLOUD_EVENTS_MEDIA_TYPES


def _cloud_events_handshake(req: Request, known_function: bool) -> Response:
    """CloudEvents v1.0 abuse protection: Event Grid asks with OPTIONS and WebHook-Request-Origin
    before delivering CloudEvents, instead of the SubscriptionValidation event (Event Grid docs,
    "Endpoint validation with CloudEvents v1.0")."""
    origin = req.headers.get("webhook-request-origin", "")
    if not known_function:
        return Response.error(404, "cannot find that Event Grid function")
    if not origin:
        return Response.error(400, "a CloudEvents validation request needs WebHook-Request-Origin")
    return Response(200, [("WebHook-Allowed-Origin", origin), ("WebHook-Allowed-Rate", "*")])


def _validation_response(events: list[dict[str, Any]]) -> Response:
    for event in events:
        data = event.get("data")
        if (
            event.get("eventType") == VALIDATION_EVENT
            and isinstance(data, dict)
            and "validationCode" in data
        ):
            return Response.json(200, {"validationResponse": data["validationCode"]})
    return Response.error(400, f"no {VALIDATION_EVENT} with a validationCode in the request")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so no client ever reuses a socket to a stopped host.
    protocol_version = "HTTP/1.0"

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        query: dict[str, str] = {}
        for key, value in parse_qsl(split.query, keep_blank_values=True):
            # ASP.NET joins repeated query keys with commas when they reach the worker.
            query[key] = f"{query[key]},{value}" if key in query else value
        host = self.headers.get("Host") or self.server.authority
        req = Request(
            method=self.command.upper(),
            path=split.path or "/",
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            url=f"http://{host}{self.path}",
        )
        try:
            resp = self.server.router.dispatch(req)
        except Exception:
            log.exception("devhost failed serving %s %s", req.method, split.path)
            resp = Response.error(500, "the devhost failed while serving this request")
        self.send_response(resp.status)
        names = {k.lower() for k, _ in resp.headers}
        for k, v in resp.headers:
            self.send_header(k, v)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    router: FunctionRouter

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that closes the page (or aborts a fetch) mid-response is an ordinary event
        # for a server; socketserver would print its traceback to stderr as an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s went away mid-response", client_address)
            return
        super().handle_error(request, client_address)

    @property
    def authority(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"


class DevHostServer:
    """A threaded HTTP server on 127.0.0.1; port 0 picks a free port. Bound at construction so
    `base_url` is known before the router (whose Durable API needs it) is built."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self._server.authority}"

    def start(self, router: FunctionRouter) -> None:
        self._server.router = router
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="devhost-http",
            daemon=True,
        )  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
