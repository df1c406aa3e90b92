"""The one way the `async def` functions do blocking work: `await off_loop(fn, *args)`.

Why: the Python worker awaits every `async def` function on its single event loop and runs
plain functions in its thread pool (`azure_functions_runtime.handle_event.invocation_request`:
`execute_async(fi.func, args)` versus `loop.run_in_executor(threadpool, run_sync_func, ...)`;
the 3.11 worker's `Dispatcher._handle__invocation_request` does the same). A synchronous Table,
Azure ML or SSH call made directly in an async function holds that loop for as long as the call
takes, so one slow sweep (an SSH connect, a cancel waiting on its poller) would stall every
heartbeat, Event Grid delivery and API call of the instance. So every call into the state store
or a compute backend made by an async function goes through `off_loop`; the Durable client's
calls (`raise_event`, `start_new`, `get_status`) are aiohttp coroutines and stay on the loop.

Why a thread and not the SDKs' async clients: `azure.data.tables.aio` exists, but the state
store is shared with the activities, which are plain functions run in the worker's pool; an
async store would be a second copy of every ETag read-modify-write. `azure-ai-ml` has no async
client and paramiko is synchronous, so their calls need a thread anyway: one idiom for all.

Why `asyncio.to_thread` and not `loop.run_in_executor`: `to_thread` runs the call in a copy of
the caller's `contextvars.Context` (CPython docs, asyncio "Running in Threads"), so what the
worker and OpenTelemetry keep there follows the call into the thread: the invocation id of
`azure_functions_runtime.utils.executor.invocation_id_cv` and the current span, under which the
backend spans of `adapters.telemetry` then nest. (The 3.11 worker's own log correlation reads
an attribute of the current asyncio task or its pool's thread-local, which no other thread
has: a log line written inside `off_loop` reaches the host without the invocation id there.)

It runs on the loop's default executor, not the worker's pool for sync functions, so trigger
work never queues behind activities. Every blocking call it runs is bounded (`domain.bounds`),
and the sweeper does one call at a time, so a hanging backend holds one thread, not the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


async def off_loop(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run the blocking `fn(*args, **kwargs)` in a thread and await its result."""
    return await asyncio.to_thread(fn, *args, **kwargs)
