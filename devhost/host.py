"""`DevHost`: the app on the devhost engine behind a loopback HTTP server, like `func start`.

It composes the engine (orchestrations, activities, clock, store) with the HTTP half (HTTP
triggers, the Durable HTTP API, the Event Grid webhook) and the timer triggers. Like Core Tools
it loads the `Values` of local.settings.json into the environment without overriding variables
that are already set, and it points `PUBLIC_BASE_URL` at itself when that is unset so that jobs
reach the heartbeat endpoint.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from devhost.clock import RealClock, VirtualClock
from devhost.durable_api import DurableHttpApi
from devhost.engine import Engine
from devhost.functions import FunctionIndex
from devhost.invoke import (
    DURABLE_CLIENT,
    ENGINE_TRIGGERS,
    EVENT_GRID_TRIGGER,
    HTTP_TRIGGER,
    TIMER_TRIGGER,
    BindingError,
    UserFunction,
)
from devhost.server import (
    DEFAULT_ROUTE_PREFIX,
    EVENT_GRID_WEBHOOK_PATH,
    DevHostServer,
    FunctionRouter,
)
from devhost.store import InstanceStore, MemoryInstanceStore, TableInstanceStore
from devhost.timers import TimerTrigger

SERVED_TRIGGERS = ENGINE_TRIGGERS | {HTTP_TRIGGER, EVENT_GRID_TRIGGER, TIMER_TRIGGER}

TimeMode = Literal["skip", "real"]
StoreKind = Literal["memory", "table"]
DEFAULT_SETTINGS_FILE = "local.settings.json"
# Virtual time starts at a fixed instant so that runs in time-skipping mode are reproducible.
VIRTUAL_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def load_settings_file(path: str | Path) -> list[str]:
    """Put the file's `Values` into the environment, keeping variables already set (as Core
    Tools does). Returns the names it set; never logs values, which include secrets."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    values = data.get("Values") or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: 'Values' must be an object of app settings")
    applied = []
    for name, value in values.items():
        if name not in os.environ and value is not None:
            os.environ[name] = str(value)
            applied.append(name)
    return applied


def _load_app(app: Any) -> Any:
    """`app` itself, or the object a "module:attr" string names (default: function_app:app)."""
    if app is not None and not isinstance(app, str):
        return app
    module, _, attr = (app or "function_app:app").partition(":")
    return getattr(importlib.import_module(module), attr or "app")


def _route_prefix(host_json: Path) -> str:
    if not host_json.is_file():
        return DEFAULT_ROUTE_PREFIX
    config = json.loads(host_json.read_text(encoding="utf-8"))
    prefix = ((config.get("extensions") or {}).get("http") or {}).get("routePrefix")
    return DEFAULT_ROUTE_PREFIX if prefix is None else str(prefix)


@dataclass(frozen=True)
class ServedFunction:
    """One line of the function list the host prints at start, like `func start`."""

    name: str
    trigger: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}" if self.detail else f"{self.name}: {self.trigger}"


class DevHost:
    def __init__(
        self,
        app: Any = None,
        *,
        port: int = 0,
        time_mode: TimeMode = "skip",
        store: StoreKind = "memory",
        connection_string: str | None = None,
        task_hub: str = "waaeval",
        settings_file: str | None = None,
        crash_injector: Any = None,
        host_json: str | None = None,
    ) -> None:
        if settings_file is not None:
            load_settings_file(settings_file)
        elif Path(DEFAULT_SETTINGS_FILE).is_file():
            load_settings_file(DEFAULT_SETTINGS_FILE)
        if time_mode not in ("skip", "real"):
            raise ValueError(f"time_mode must be 'skip' or 'real', not {time_mode!r}")
        with contextlib.ExitStack() as undo:
            # Bound first, so the app (imported below, after the settings are in the environment,
            # as the worker does) already sees PUBLIC_BASE_URL pointing here.
            self._server = DevHostServer(port=port)
            undo.callback(self._server.stop)
            self._own_public_url = "PUBLIC_BASE_URL" not in os.environ
            if self._own_public_url:
                os.environ["PUBLIC_BASE_URL"] = self._server.base_url
            undo.callback(self._restore_public_url)

            self.app = _load_app(app)
            self.task_hub = task_hub
            self.index = FunctionIndex.from_app(self.app)
            self.functions = [
                UserFunction.from_function(f, self.index.worker) for f in self.index.functions
            ]
            for fn in self.functions:
                if fn.trigger.type not in SERVED_TRIGGERS:
                    raise BindingError(
                        f"function {fn.name!r} has a {fn.trigger.type} trigger, which the devhost "
                        "does not serve"
                    )
            self.clock: VirtualClock | RealClock = (
                VirtualClock(VIRTUAL_EPOCH) if time_mode == "skip" else RealClock()
            )
            undo.callback(self.clock.close)
            self.engine = Engine(
                self.index,
                self._make_store(store, connection_string, task_hub),
                self.clock,
                task_hub=task_hub,
                crash_injector=crash_injector,
            )
            self.durable_api = DurableHttpApi(self.engine, lambda: self.base_url, task_hub=task_hub)
            prefix = _route_prefix(Path(host_json) if host_json else Path("host.json"))
            self.router = FunctionRouter(
                self.engine, self.functions, self.durable_api, route_prefix=prefix
            )
            self.timers = []
            for fn in self.functions:
                if fn.trigger.type == TIMER_TRIGGER:
                    fn.check_bindable()
                    client = self.durable_api.client_binding
                    self.timers.append(TimerTrigger(fn, self.clock, durable_client=client))
            # Constructed: from here on `stop()` releases the server, clock and environment.
            undo.pop_all()
        self._started = False

    @staticmethod
    def _make_store(kind: StoreKind, connection_string: str | None, task_hub: str) -> InstanceStore:
        if kind == "memory":
            return MemoryInstanceStore()
        if kind == "table":
            conn = connection_string or os.environ.get("AzureWebJobsStorage")  # noqa: SIM112
            if not conn:
                raise ValueError(
                    "the table store needs a connection string (--connection-string or the "
                    "AzureWebJobsStorage app setting)"
                )
            return TableInstanceStore(conn, task_hub)
        raise ValueError(f"store must be 'memory' or 'table', not {kind!r}")

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def start(self) -> DevHost:
        if self._started:
            return self
        self.engine.start()
        self._server.start(self.router)
        for timer in self.timers:
            timer.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            for timer in self.timers:
                timer.stop()
            self._server.stop()
            self.engine.stop()
        else:
            self._server.stop()
        self.clock.close()
        self._restore_public_url()

    def _restore_public_url(self) -> None:
        # A later host in the same process must not inherit a URL pointing at this stopped one.
        if self._own_public_url and os.environ.get("PUBLIC_BASE_URL") == self.base_url:
            del os.environ["PUBLIC_BASE_URL"]

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def served_functions(self) -> list[ServedFunction]:
        """What the host serves, one entry per function, in the way `func start` lists them."""
        out = []
        routes = {r.function_name: r for r in self.router.routes}
        schedules = {t.function.name: t.schedule.expression for t in self.timers}
        for fn in sorted(self.functions, key=lambda f: f.name):
            kind = fn.trigger.type
            if kind == HTTP_TRIGGER:
                route = routes[fn.name]
                methods = ",".join(route.methods)
                detail = f"[{methods}] {self.router.route_url(self.base_url, route)}"
            elif kind == EVENT_GRID_TRIGGER:
                webhook = f"{self.base_url}{EVENT_GRID_WEBHOOK_PATH}?functionName={fn.name}"
                detail = f"eventGridTrigger {webhook}"
            elif kind == TIMER_TRIGGER:
                detail = f"timerTrigger ({schedules[fn.name]})"
            else:
                detail = kind
            if fn.binding_of(DURABLE_CLIENT) is not None and kind != HTTP_TRIGGER:
                detail += " (durable client)"
            out.append(ServedFunction(fn.name, kind, detail))
        return out
