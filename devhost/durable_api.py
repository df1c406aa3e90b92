"""The Durable Functions HTTP API that `DurableOrchestrationClient` calls at its `rpcBaseUrl`.

Status codes and payloads follow the Durable extension's `HttpApiHandler`: start answers 202 with
the management payload and a Location header; status is 202 while Pending/Running/ContinuedAsNew
and 200 once finished (Failed too, unless `returnInternalServerErrorOnFailure=true`), 404 for an
unknown instance; raise event and terminate answer 202, 404 for an unknown instance and 410 for one
that is no longer running; purge answers 200 with `instancesDeleted`, 404 or 412.

Request bodies: the Python client posts `json=<already JSON-encoded string>`, so the body is a JSON
string literal whose content is the payload's JSON; the extension decodes the body once and keeps
that string. A body posted by hand as a JSON object or number is the payload itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dateutil.parser import isoparse

from devhost.errors import (
    InstanceExistsError,
    InstanceNotRunningError,
    UnknownFunctionError,
    UnknownInstanceError,
)

if TYPE_CHECKING:
    from devhost.engine import Engine, InstanceStatus

DURABLE_WEBHOOK_PATH = "/runtime/webhooks/durabletask"
INSTANCE_PLACEHOLDER = "INSTANCEID"
# The connection name the Functions host puts in management URLs (host.json storageProvider).
CONNECTION_NAME = "Storage"
RUNNING = frozenset({"Pending", "Running", "ContinuedAsNew"})
FINISHED = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
RUNTIME_STATUSES = RUNNING | FINISHED


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def json(
        cls, status: int, payload: Any, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        body = json.dumps(payload).encode()
        return cls(
            status, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])], body
        )

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        return cls.json(status, {"Message": message, "ExceptionMessage": message})


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # raw (still percent-encoded) path, no query
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    url: str  # absolute URL as the caller addressed it


class BadRequest(ValueError):
    pass


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    return value.strip().lower() == "true"


def _payload_json(body: bytes) -> str | None:
    """The JSON text of the payload carried by a Durable API request body (see module doc)."""
    if not body.strip():
        return None
    try:
        decoded = json.loads(body)
    except ValueError as err:
        raise BadRequest(f"Invalid JSON content: {err}") from None
    if isinstance(decoded, str):
        try:
            json.loads(decoded)
        except ValueError:
            return json.dumps(decoded)
        return decoded
    return json.dumps(decoded)


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    value = query.get(name)
    if not value:
        return None
    try:
        t = isoparse(value)
    except ValueError:
        raise BadRequest(f"query parameter {name} is not a date-time: {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def status_payload(
    s: InstanceStatus, *, show_input: bool = True, show_history: bool = False
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": s.name,
        "instanceId": s.instance_id,
        "runtimeStatus": s.runtime_status,
        "input": _loads(s.input_json) if show_input else None,
        "customStatus": _loads(s.custom_status_json),
        "output": _loads(s.output_json),
        "createdTime": _iso(s.created_time),
        "lastUpdatedTime": _iso(s.last_updated_time),
    }
    if show_history:
        payload["historyEvents"] = s.history
    return payload


class DurableHttpApi:
    """Serves `/runtime/webhooks/durabletask/...` from an `Engine`."""

    def __init__(self, engine: Engine, base_url: Callable[[], str], *, task_hub: str) -> None:
        self.engine = engine
        self._base_url = base_url
        self.task_hub = task_hub

    # --- what the host hands to client functions -----------------------------------------------

    @property
    def webhook_url(self) -> str:
        return self._base_url() + DURABLE_WEBHOOK_PATH

    @property
    def query_suffix(self) -> str:
        return f"taskHub={quote(self.task_hub)}&connection={CONNECTION_NAME}"

    def management_urls(self, instance_id: str, origin: str | None = None) -> dict[str, str]:
        base = (origin.rstrip("/") + DURABLE_WEBHOOK_PATH) if origin else self.webhook_url
        prefix = f"{base}/instances/{quote(instance_id, safe='')}"
        q = self.query_suffix
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{prefix}?{q}",
            "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{q}",
            "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{q}",
            "rewindPostUri": f"{prefix}/rewind?reason={{text}}&{q}",
            "purgeHistoryDeleteUri": f"{prefix}?{q}",
            "restartPostUri": f"{prefix}/restart?{q}",
            "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{q}",
            "resumePostUri": f"{prefix}/resume?reason={{text}}&{q}",
        }

    def client_binding(self) -> str:
        """The durable client binding value the Functions host passes to a client function."""
        start = f"{self.webhook_url}/orchestrators/{{functionName}}[/{{instanceId}}]"
        urls = self.management_urls(INSTANCE_PLACEHOLDER)
        urls["id"] = INSTANCE_PLACEHOLDER
        return json.dumps(
            {
                "taskHubName": self.task_hub,
                "creationUrls": {
                    "createNewInstancePostUri": f"{start}?{self.query_suffix}",
                    "createAndWaitOnNewInstancePostUri": (
                        f"{start}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}"
                        f"&{self.query_suffix}"
                    ),
                },
                "managementUrls": urls,
                "baseUrl": self.webhook_url,
                "requiredQueryStringParameters": self.query_suffix,
                "rpcBaseUrl": self.webhook_url + "/",
                "httpBaseUrl": self.webhook_url,
            }
        )

    # --- request handling ---------------------------------------------------------------------

    def handle(self, req: Request, subpath: str) -> Response:
        """`subpath` is the path below the webhook base, percent-decoded, without slashes around."""
        parts = [p for p in subpath.split("/") if p]
        try:
            if len(parts) in (2, 3) and parts[0] == "orchestrators" and req.method == "POST":
                return self._start(req, parts[1], parts[2] if len(parts) == 3 else None)
            if parts and parts[0] == "instances":
                return self._instances(req, parts[1:])
        except BadRequest as err:
            return Response.error(400, str(err))
        return Response.error(404, f"no Durable API route for {req.method} {req.path}")

    def _instances(self, req: Request, parts: list[str]) -> Response:
        if not parts:
            if req.method == "GET":
                return self._query(req)
            return Response.error(404, "only GET lists instances")
        instance_id = parts[0]
        if len(parts) == 1:
            if req.method == "GET":
                return self._status(req, instance_id)
            if req.method == "DELETE":
                return self._purge(instance_id)
        elif req.method == "POST" and len(parts) == 3 and parts[1].lower() == "raiseevent":
            return self._raise_event(req, instance_id, parts[2])
        elif req.method == "POST" and len(parts) == 2 and parts[1].lower() == "terminate":
            return self._terminate(req, instance_id)
        return Response.error(404, f"no Durable API route for {req.method} {req.path}")

    def _start(self, req: Request, function_name: str, instance_id: str | None) -> Response:
        input_json = _payload_json(req.body)
        try:
            new_id = self.engine.start_orchestration(function_name, input_json, instance_id)
        except UnknownFunctionError as err:
            return Response.error(400, str(err))
        except InstanceExistsError as err:
            return Response.error(409, str(err))
        return self.check_status_response(new_id, origin=_origin(req.url))

    def check_status_response(self, instance_id: str, *, origin: str | None) -> Response:
        urls = self.management_urls(instance_id, origin)
        payload = {k: v for k, v in urls.items() if k != "rewindPostUri"}
        headers = [("Location", urls["statusQueryGetUri"]), ("Retry-After", "10")]
        return Response.json(202, payload, headers)

    def _status(self, req: Request, instance_id: str) -> Response:
        show_history = _flag(req.query, "showHistory", False)
        show_input = _flag(req.query, "showInput", True)
        status = self.engine.get_status(
            instance_id, show_history=show_history, show_input=show_input
        )
        if status is None:
            return Response(404)
        payload = status_payload(status, show_input=show_input, show_history=show_history)
        if status.runtime_status in RUNNING:
            return Response.json(202, payload, [("Location", req.url), ("Retry-After", "5")])
        if status.runtime_status == "Failed" and _flag(
            req.query, "returnInternalServerErrorOnFailure", False
        ):
            return Response.json(500, payload)
        return Response.json(200, payload)

    def _query(self, req: Request) -> Response:
        statuses = [s for s in (req.query.get("runtimeStatus") or "").split(",") if s.strip()]
        unknown = [s for s in statuses if s.strip() not in RUNTIME_STATUSES]
        if unknown:
            raise BadRequest(f"unknown runtimeStatus value(s): {unknown}")
        top_text = req.query.get("top")
        try:
            top = int(top_text) if top_text else None
        except ValueError:
            raise BadRequest(f"query parameter top is not an integer: {top_text!r}") from None
        show_input = _flag(req.query, "showInput", True)
        found = self.engine.query(
            runtime_status=[s.strip() for s in statuses] or None,
            created_from=_time(req.query, "createdTimeFrom"),
            created_to=_time(req.query, "createdTimeTo"),
            instance_id_prefix=req.query.get("instanceIdPrefix") or None,
            top=top,
        )
        return Response.json(200, [status_payload(s, show_input=show_input) for s in found])

    def _raise_event(self, req: Request, instance_id: str, event_name: str) -> Response:
        status = self.engine.get_status(instance_id, show_input=False)
        if status is None:
            return Response(404)
        if status.runtime_status in FINISHED:
            return Response(410)
        media_type = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return Response.error(400, "Only application/json request content is supported")
        data_json = _payload_json(req.body)
        try:
            self.engine.raise_event(instance_id, event_name, data_json)
        except UnknownInstanceError:
            return Response(404)
        except InstanceNotRunningError:
            return Response(410)
        return Response(202)

    def _terminate(self, req: Request, instance_id: str) -> Response:
        status = self.engine.get_status(instance_id, show_input=False)
        if status is None:
            return Response(404)
        if status.runtime_status in FINISHED:
            return Response(410)
        try:
            self.engine.terminate(instance_id, req.query.get("reason") or "")
        except UnknownInstanceError:
            return Response(404)
        return Response(202)

    def _purge(self, instance_id: str) -> Response:
        status = self.engine.get_status(instance_id, show_input=False)
        if status is None:
            return Response(404)
        if status.runtime_status not in FINISHED:
            return Response.error(
                412,
                "Only orchestrations in a terminal state can be purged, but the orchestration "
                f"with instance ID {instance_id} has status {status.runtime_status}",
            )
        deleted = 1 if self.engine.purge(instance_id) else 0
        return Response.json(200 if deleted else 404, {"instancesDeleted": deleted})


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
