"""The real Python worker's code between the devhost and the app.

Azure runs an app's functions through the Azure Functions Python worker; `azure-functions-runtime`
(PyPI) is that worker's library half, the code the 3.13+ worker loads and the same indexing and
binding rules the 3.11/3.12 worker applies. The devhost plays the Functions host and hands it the
host protocol's messages (`devhost.protos`), so that what the real worker rejects or converts
differently, our tests see too:

- indexing: `loader.process_indexed_function` over the app's functions fills a worker
  `functions.Registry` through `Registry.add_indexed_function`, which raises the worker's own
  `FunctionLoadError` (say, for a `dict[str, Any]` binding annotation). An app the worker rejects
  never starts on the devhost, with the worker's message.
- invocation: `handle_event.invocation_request`, the worker's own handler, decodes every input
  with `bindings.meta.from_incoming_proto`, awaits `async def` functions on the one worker event
  loop and runs plain functions in the worker's thread pool, and encodes the return value with
  `bindings.meta.to_outgoing_proto`. The devhost only builds the request and reads the reply.

The worker keeps its protocol module and function registry in module globals (one app per worker
process). The devhost may serve several apps in one process (tests), so the registry global is
replaced by one that looks up the registry of the app being invoked, carried in a context
variable into the worker's coroutine.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import threading
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from azure_functions_runtime import handle_event, loader
from azure_functions_runtime.bindings import meta
from azure_functions_runtime.functions import FunctionInfo, FunctionLoadError, Registry
from azure_functions_runtime.utils.threadpool import (
    get_threadpool_executor,
    start_threadpool_executor,
)

from devhost import protos

__all__ = ["FunctionFailedError", "FunctionLoadError", "WorkerApp", "worker_loop"]


class FunctionFailedError(RuntimeError):
    """The worker answered an invocation with a failure; `message` is the worker's exception
    message (`"TypeName: text"`), as the host records it."""

    def __init__(self, function_name: str, message: str, stack_trace: str) -> None:
        super().__init__(message)
        self.function_name = function_name
        self.message = message
        self.stack_trace = stack_trace


_current_registry: contextvars.ContextVar[Registry] = contextvars.ContextVar("devhost_registry")


class _RegistryOfInvokedApp:
    """Stands in for the worker's module-global registry: the registry of the app invoked."""

    def get_function(self, function_id: str) -> FunctionInfo | None:
        return _current_registry.get().get_function(function_id)


_setup_lock = threading.Lock()
_set_up = False


def _set_up_worker() -> None:
    """What the worker's init request does once per process: protocol, converters, thread pool."""
    global _set_up
    with _setup_lock:
        if _set_up:
            return
        handle_event.protos = protos
        handle_event._functions = _RegistryOfInvokedApp()
        meta.load_binding_registry()
        start_threadpool_executor()
        _set_up = True


# --- The worker's event loop ------------------------------------------------------------------

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def worker_loop() -> asyncio.AbstractEventLoop:
    """The process-wide event loop the worker awaits invocations on (started on first use).

    One loop for the whole process matters: `azure-functions-durable` keeps a module-global
    aiohttp session bound to the loop that first used it, exactly as inside the single worker
    process; a fresh loop per call would break every later client call.
    """
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="worker-loop", daemon=True)
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
    pool = get_threadpool_executor()
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


# --- Indexing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexedFunction:
    """One function as the worker indexed it: the decorator's metadata and the worker's info."""

    function: Any  # azure.functions.decorators.function_app.Function
    info: FunctionInfo


_APPS: weakref.WeakKeyDictionary[Any, WorkerApp] = weakref.WeakKeyDictionary()
_APPS_LOCK = threading.Lock()


class WorkerApp:
    """An app's functions indexed, and invoked, by the real worker's code."""

    def __init__(self, functions: list[Any], directory: str | Path) -> None:
        _set_up_worker()
        self.registry = Registry()
        # Raises the worker's FunctionLoadError for the first function it rejects; the worker
        # then fails the whole metadata response and the host loads no function at all.
        loader.process_indexed_function(protos, self.registry, functions, str(directory))
        by_name = {info.name: info for info in self.registry._functions.values()}
        self.functions = {
            fn.get_function_name(): IndexedFunction(fn, by_name[fn.get_function_name()])
            for fn in functions
        }

    @classmethod
    def for_app(cls, app: Any) -> WorkerApp:
        """The app indexed once: `get_functions()` refuses to run twice on one app object (it
        sees its own earlier result as duplicate names), so one index per app is kept."""
        with _APPS_LOCK:
            indexed = _APPS.get(app)
            if indexed is None:
                # The host hands the worker the script root; the devhost runs from it.
                indexed = cls(list(app.get_functions()), Path.cwd())
                _APPS[app] = indexed
            return indexed

    def invoke(self, name: str, inputs: Mapping[str, protos.TypedData]) -> protos.TypedData | None:
        """One invocation request for function `name` with the given input bindings, answered by
        the worker's `invocation_request`; returns the return value's TypedData (None if the
        function has no return binding or returned nothing), raises FunctionFailedError."""
        fn = self.functions[name]
        request = SimpleNamespace(
            request=SimpleNamespace(
                invocation_request=protos.InvocationRequest(
                    invocation_id=str(uuid.uuid4()),
                    function_id=fn.info.function_id,
                    input_data=[
                        protos.ParameterBinding(name=param, data=data)
                        for param, data in inputs.items()
                    ],
                )
            ),
            properties={"protos": protos},
        )
        future = asyncio.run_coroutine_threadsafe(
            _invoke_with(self.registry, request), worker_loop()
        )
        response = future.result()
        result = response.result
        if result.status != protos.StatusResult.Success:
            exc = result.exception
            raise FunctionFailedError(name, exc.message, exc.stack_trace)
        return response.return_value


async def _invoke_with(registry: Registry, request: Any) -> Any:
    # The coroutine runs as its own task with a copy of the context: the registry set here is
    # this invocation's alone, whatever else runs on the loop.
    _current_registry.set(registry)
    return await handle_event.invocation_request(request)
