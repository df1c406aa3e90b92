"""Calling user functions the way the Python worker does.

The worker binds each parameter by the binding name declared in the decorators, converts trigger
payloads with the converters that `azure.functions` registers (the same classes the worker uses),
runs `async def` functions on one long-lived event loop and plain functions on a worker thread.

One event loop for the whole process matters: `azure-functions-durable` keeps a module-global
aiohttp session (and an asyncio lock) bound to the loop that first used it, exactly as it would
inside the single worker process; a fresh loop per call would break every later client call.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.decorators.function_app import Function
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.http import HttpRequestConverter, HttpResponseConverter
from azure.functions.timer import TimerRequestConverter

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


_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def worker_loop() -> asyncio.AbstractEventLoop:
    """The process-wide event loop that runs `async def` functions (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="devhost-worker-loop", daemon=True
            )
            thread.start()
            _loop = loop
            atexit.register(_close_client_session, loop)
        return _loop


def _close_client_session(loop: asyncio.AbstractEventLoop) -> None:
    # The SDK never closes its shared aiohttp session (the worker process just exits); closing it
    # on the loop that owns it keeps interpreter exit free of "Unclosed client session" noise.
    from azure.durable_functions.models.utils import http_utils

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(http_utils._close_session(), loop).result(timeout=5)


def _run(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return asyncio.run_coroutine_threadsafe(fn(**kwargs), worker_loop()).result()
    return fn(**kwargs)


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
    callable: Callable[..., Any]
    parameters: list[str] = field(default_factory=list)

    @classmethod
    def from_function(cls, function: Function) -> UserFunction:
        trigger = function.get_trigger()
        bindings = [_binding(b) for b in function.get_bindings()]
        user = function.get_user_function()
        return cls(
            name=function.get_function_name(),
            trigger=_binding(trigger),
            bindings=bindings,
            callable=user,
            parameters=list(inspect.signature(user).parameters),
        )

    def binding_of(self, kind: str) -> Binding | None:
        return next((b for b in self.bindings if b.type == kind), None)

    def check_bindable(self) -> None:
        """Fail early, at indexing time, for a parameter the devhost would not fill."""
        bound = {b.name for b in self.bindings if b.direction == "IN" or b.type == DURABLE_CLIENT}
        bound.add(self.trigger.name)
        missing = [p for p in self.parameters if p not in bound]
        if missing:
            kinds = ", ".join(sorted({b.type for b in self.bindings}))
            raise BindingError(
                f"function {self.name!r}: parameter(s) {missing} have no binding the devhost "
                f"supports (bindings: {kinds})"
            )

    def invoke(self, trigger_value: Any, *, durable_client: str | None = None) -> Any:
        kwargs: dict[str, Any] = {self.trigger.name: trigger_value}
        client = self.binding_of(DURABLE_CLIENT)
        if client is not None:
            if durable_client is None:
                raise BindingError(f"function {self.name!r} needs a durable client binding")
            kwargs[client.name] = durable_client
        return _run(self.callable, kwargs)


def _binding(b: Any) -> Binding:
    d = b.get_dict_repr()
    direction = str(d.get("direction", "")).upper().rsplit(".", 1)[-1]
    return Binding(name=d["name"], type=d["type"], direction=direction, properties=d)


# --- Trigger payloads, built through the azure.functions converters -----------------------------


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    route_params: Mapping[str, str],
    body: bytes,
) -> func.HttpRequest:
    value = {
        "method": meta.Datum(method, "string"),
        "url": meta.Datum(url, "string"),
        "headers": {k: meta.Datum(v, "string") for k, v in headers.items()},
        "query": {k: meta.Datum(v, "string") for k, v in query.items()},
        "params": {k: meta.Datum(v, "string") for k, v in route_params.items()},
        "body": meta.Datum(body, "bytes"),
    }
    return HttpRequestConverter.decode(meta.Datum(value, "http"), trigger_metadata={})


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def http_result(returned: Any) -> HttpResult:
    """The HTTP response the host sends for a function's return value."""
    if returned is None:
        return HttpResult(204, [], b"")
    datum = HttpResponseConverter.encode(returned, expected_type=None)
    if datum.type == "string":
        return HttpResult(
            200, [("Content-Type", "text/plain; charset=utf-8")], datum.value.encode()
        )
    value = datum.value
    headers = [(k, v.value) for k, v in value["headers"].items()]
    for cookie in value.get("cookies") or []:
        headers.extend(("Set-Cookie", m.OutputString()) for m in cookie.values())
    return HttpResult(int(value["status_code"].value), headers, value["body"].value or b"")


def event_grid_event(event: Mapping[str, Any]) -> func.EventGridEvent:
    return EventGridEventInConverter.decode(
        meta.Datum(json.dumps(event), "json"), trigger_metadata={}
    )


def timer_request(*, past_due: bool, last: datetime | None, next_: datetime) -> func.TimerRequest:
    info = {
        "Schedule": {"AdjustForDST": True},
        "ScheduleStatus": {
            "Last": (last or datetime.min).isoformat(),
            "Next": next_.isoformat(),
            "LastUpdated": (last or next_).isoformat(),
        },
        "IsPastDue": past_due,
    }
    return TimerRequestConverter.decode(meta.Datum(json.dumps(info), "json"), trigger_metadata={})
