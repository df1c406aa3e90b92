"""The async functions never block the worker's event loop (triggers/offload.py).

The devhost runs every function through the real worker's code: `async def` functions on one
long-lived loop, plain functions in a thread pool. So a trigger that called a blocking backend
or Table client on the loop would stall every other invocation here exactly as in Azure.

1. A backend call that hangs inside a sweep (held on a threading.Event, released at the end)
   while heartbeats and a status read keep being answered through the real HTTP endpoints.
2. A whole evaluation, cancelled half-way, in which no Table or backend call of the app ever
   runs on a thread that is running an event loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from adapters import runtime
from devhost.simulation import Simulation
from domain.jobs import JobStatus, Tier
from domain.messages import heartbeat_token
from tests.e2e.scenario_support import VirtualWatch, assert_invariants, start, store_rows

pytestmark = pytest.mark.azurite

MakeSimulation = Callable[..., Simulation]
# Real seconds: safety nets against a hang, never timed assertions.
WAIT = 120.0
ANSWER = 30.0


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_heartbeats_are_answered_while_a_sweep_hangs_on_the_backend(
    make_simulation: MakeSimulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_simulation(profile="none")
    backend = sim.cloud.backend(Tier.AZURE_ML)
    real_status = backend.status
    store = runtime.services().store
    held: list[str] = []
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    on_loop: list[bool] = []

    def status_that_hangs_once(name: str) -> JobStatus:
        # The sweep's first status read of a job whose container is up (heartbeats flowing)
        # hangs, as an SSH connect to a dead VM or a stuck poller would.
        if not held:
            index = store.lookup_job(name)
            job = store.get_job(index["evaluation_id"], name) if index else None
            if job is not None and job.get("started_at"):
                held.append(name)
                on_loop.append(_on_event_loop())
                entered.set()
                release.wait(WAIT)
                returned.set()
        return real_status(name)

    monkeypatch.setattr(backend, "status", status_that_hangs_once)
    # One shard: a 12-task run of about 1.5 virtual hours, swept every 2 minutes.
    eid = start(sim, {"task_set": "waa-smoke", "workers": 1})
    try:
        assert entered.wait(WAIT), "no sweep read the status of a running job"
        (name,) = held
        token = heartbeat_token(os.environ["HEARTBEAT_SECRET"], name)
        before = int(store.get_job(eid, name)["heartbeats"])
        for _ in range(3):
            r = sim.http.post(
                f"{sim.base_url}/api/heartbeats",
                json={"job_name": name, "kind": "heartbeat"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=ANSWER,
            )
            assert r.status_code == 202, r.text
        view = sim.status(eid, tasks=False)
        assert view["evaluation_id"] == eid and view["state"] == "running"
        # All of that was answered while the sweep was still inside the backend call.
        assert not returned.is_set()
        assert int(store.get_job(eid, name)["heartbeats"]) == before + 3
    finally:
        release.set()
    assert returned.wait(WAIT)
    # The backend call ran on a worker thread, not on the loop.
    assert on_loop == [False]

    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)
    assert {t["outcome"] for t in final["tasks"]} == {"completed"}
    assert [j["job_name"] for j in rows["jobs"]] == [name]


def _guarded(fn: Callable[..., Any], where: str, violations: list[str]) -> Callable[..., Any]:
    """`fn`, recording every call made on a thread that runs an event loop."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if _on_event_loop():
            caller = traceback.extract_stack(limit=2)[0]
            violations.append(f"{where} from {caller.filename}:{caller.lineno}")
        return fn(*args, **kwargs)

    return call


class _LoopGuard:
    """The state store's TableClient, every method of it `_guarded`."""

    def __init__(self, inner: Any, violations: list[str]) -> None:
        self._inner = inner
        self._violations = violations

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        return _guarded(value, f"table.{attr}", self._violations) if callable(value) else value


def test_no_table_or_backend_call_runs_on_the_event_loop(
    make_simulation: MakeSimulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed profile: failed starts, hangs (the sweeper cancels), lost and duplicated events.
    sim = make_simulation(profile="seed")
    violations: list[str] = []
    store = runtime.services().store
    monkeypatch.setattr(store, "_table", _LoopGuard(store._table, violations))
    for tier in Tier:
        backend = sim.cloud.backend(tier)
        for method in ("ensure_capacity", "capacity_status", "submit", "status", "cancel"):
            where = f"{tier.value}.{method}"
            monkeypatch.setattr(
                backend, method, _guarded(getattr(backend, method), where, violations)
            )

    eid = start(sim, {"task_set": "waa-smoke", "workers": 3})

    def some_done() -> bool:
        return sum(t["outcome"] == "completed" for t in store_rows(eid)["tasks"]) >= 2

    # Cancel once the first tasks have results: start, status, heartbeats, Event Grid and
    # sweeps have all run by then.
    cancelled = VirtualWatch(sim.host.clock, some_done, lambda: sim.cancel(eid)).wait(WAIT)
    assert cancelled.status_code == 202, cancelled.text
    listed = sim.http.get(f"{sim.base_url}/api/evaluations", timeout=ANSWER)
    assert listed.status_code == 200
    final = sim.wait(eid, timeout=WAIT)
    assert_invariants(sim, eid, final)
    assert store_rows(eid)["evaluation"]["state"] == "cancelled"
    assert violations == []
