"""The host side of calling user functions: bindings as the host sees them, trigger payloads as
the host sends them, results as the host reads them.

The devhost plays the Functions host: it builds each trigger's payload as the host protocol's
`TypedData` (an `RpcHttp` request, an Event Grid event's JSON, the timer's JSON, the durable
client's binding string) and hands it to the real worker's code (`devhost.worker`), which converts
it with the converters `azure.functions` registers, calls the function (async on the worker's
event loop, plain functions in its thread pool) and encodes the return value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.functions.decorators.function_app import Function

from devhost import protos
from devhost.worker import WorkerApp

HTTP_TRIGGER = "httpTrigger"
EVENT_GRID_TRIGGER = "eventGridTrigger"
TIMER_TRIGGER = "timerTrigger"
DURABLE_CLIENT = "durableClient"
# Bindings the Durable extension serves itself; the engine invokes these functions.
ENGINE_TRIGGERS = frozenset({"orchestrationTrigger", "activityTrigger", "entityTrigger"})
# Output bindings the host writes from the return value; nothing to bind on the way in.
RETURN_BINDING = "$return"


class BindingError(RuntimeError):
    """A function declares a binding the devhost cannot provide."""


@dataclass(frozen=True)
class Binding:
    name: str
    type: str
    direction: str
    properties: Mapping[str, Any]


@dataclass
class UserFunction:
    """One function of the app, with its trigger and bindings as the host sees them."""

    name: str
    trigger: Binding
    bindings: list[Binding]
    worker: WorkerApp = field(repr=False)

    @classmethod
    def from_function(cls, function: Function, worker: WorkerApp | None = None) -> UserFunction:
        """`function` as the host sees it; `worker` is the app the worker indexed it in (by
        default an app of this one function, indexed by the worker's code now)."""
        trigger = function.get_trigger()
        return cls(
            name=function.get_function_name(),
            trigger=_binding(trigger),
            bindings=[_binding(b) for b in function.get_bindings()],
            worker=worker if worker is not None else WorkerApp([function], Path.cwd()),
        )

    def binding_of(self, kind: str) -> Binding | None:
        return next((b for b in self.bindings if b.type == kind), None)

    def check_bindable(self) -> None:
        """Fail early, at start, for a binding the devhost would not fill or write.

        The worker itself has already checked that every parameter has a binding; what is left
        is the host's side: inputs other than the trigger and the durable client, and outputs
        other than the return value, are bindings this host does not implement.
        """
        unsupported = [
            f"{b.name} ({b.type})"
            for b in self.bindings
            if b.name != self.trigger.name
            and b.type != DURABLE_CLIENT
            and not (b.direction == "OUT" and b.name == RETURN_BINDING)
        ]
        if unsupported:
            raise BindingError(
                f"function {self.name!r}: binding(s) {unsupported} are not supported by the devhost"
            )

    def invoke(
        self, trigger_value: protos.TypedData, *, durable_client: str | None = None
    ) -> protos.TypedData | None:
        """One invocation through the worker; returns the return value's TypedData."""
        inputs = {self.trigger.name: trigger_value}
        client = self.binding_of(DURABLE_CLIENT)
        if client is not None:
            if durable_client is None:
                raise BindingError(f"function {self.name!r} needs a durable client binding")
            inputs[client.name] = protos.TypedData(string=durable_client)
        return self.worker.invoke(self.name, inputs)


def _binding(b: Any) -> Binding:
    d = b.get_dict_repr()
    direction = str(d.get("direction", "")).upper().rsplit(".", 1)[-1]
    return Binding(name=d["name"], type=d["type"], direction=direction, properties=d)


# --- Trigger payloads as the host sends them, results as it reads them --------------------------


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    route_params: Mapping[str, str],
    body: bytes,
) -> protos.TypedData:
    # The worker announces RawHttpBodyBytes, so the host sends the body as bytes.
    return protos.TypedData(
        http=protos.RpcHttp(
            method=method,
            url=url,
            headers=dict(headers),
            query=dict(query),
            params=dict(route_params),
            body=protos.TypedData(bytes=body),
        )
    )


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def http_result(returned: protos.TypedData | None) -> HttpResult:
    """The HTTP response the host sends for the worker's encoding of a return value."""
    kind = returned.WhichOneof("data") if returned is not None else None
    if returned is None or kind is None:
        return HttpResult(204, [], b"")
    if kind == "string":
        text = str(returned.string).encode()
        return HttpResult(200, [("Content-Type", "text/plain; charset=utf-8")], text)
    if kind != "http":
        raise TypeError(f"an HTTP function returned {kind!r} data")
    http = returned.http
    headers = [(k, str(v)) for k, v in http.headers.items()]
    headers.extend(("Set-Cookie", _set_cookie(c)) for c in http.cookies or [])
    return HttpResult(int(http.status_code or 200), headers, _body_bytes(http.body))


def _body_bytes(body: protos.TypedData | None) -> bytes:
    kind = body.WhichOneof("data") if body is not None else None
    if body is None or kind is None:
        return b""
    value = getattr(body, kind)
    return value if isinstance(value, bytes) else str(value).encode()


def _set_cookie(cookie: protos.RpcHttpCookie) -> str:
    parts = [f"{cookie.name}={cookie.value}"]
    for label, nullable in (("Domain", cookie.domain), ("Path", cookie.path)):
        if nullable is not None:
            parts.append(f"{label}={nullable.value}")
    if cookie.max_age is not None:
        parts.append(f"Max-Age={int(cookie.max_age.value)}")
    if cookie.secure is not None and cookie.secure.value:
        parts.append("Secure")
    if cookie.http_only is not None and cookie.http_only.value:
        parts.append("HttpOnly")
    return "; ".join(parts)


def event_grid_event(event: Mapping[str, Any]) -> protos.TypedData:
    return protos.TypedData(json=json.dumps(event))


def timer_request(*, past_due: bool, last: datetime | None, next_: datetime) -> protos.TypedData:
    info = {
        "Schedule": {"AdjustForDST": True},
        "ScheduleStatus": {
            "Last": (last or datetime.min).isoformat(),
            "Next": next_.isoformat(),
            "LastUpdated": (last or next_).isoformat(),
        },
        "IsPastDue": past_due,
    }
    return protos.TypedData(json=json.dumps(info))
