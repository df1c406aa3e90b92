"""Waits longer than an activity may take happen in the orchestration, between durable timers.

Capacity that takes 20 minutes to become usable (an Azure ML cluster being created, a Batch
pool allocating nodes and prefetching the image) is started by one activity and then polled by
the shard orchestration; no activity waits for it, and the container-start deadline only starts
counting once the job is submitted on usable capacity. And a sweep stops starting job checks
once its budget is used up.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from adapters import runtime
from adapters.compute.realtime import ThreadingScheduler
from adapters.compute.simulated import SimulatedCloud, install_cloud
from devhost.engine import TASK_SCHEDULED, TIMER_CREATED
from devhost.simulation import Simulation
from domain import bounds, names
from domain.jobs import JobNotFoundError, JobStatus, Tier
from domain.naming import job_name, shard_instance_id, worker_instance_id
from tests.e2e.scenario_support import assert_invariants, attempt_outcomes, start
from triggers import sweeper

pytestmark = pytest.mark.azurite

MakeSimulation = Callable[..., Simulation]
WAIT = 120.0  # real seconds: a safety net against a hang, not a timed assertion


def test_capacity_that_takes_minutes_is_polled_by_the_orchestration(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    delay = timedelta(minutes=20)
    sim.cloud.delay_capacity(Tier.AZURE_ML, delay.total_seconds())
    started_at = sim.host.clock.now()
    eid = start(sim, {"task_set": "waa-smoke", "workers": 2})
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert {t["outcome"] for t in final["tasks"]} == {"completed"}
    # One attempt per shard, on Azure ML, submitted once the cluster was usable: the 10-minute
    # start deadline never fired while the cluster was being created.
    for shard in (0, 1):
        assert [(a["tier"], a["outcome"]) for a in attempt_outcomes(sim, eid, shard)] == [
            ("azureml", "completed")
        ]
    assert sorted(j["job_name"] for j in rows["jobs"]) == [job_name(eid, s, 1) for s in (0, 1)]
    for job in rows["jobs"]:
        submitted = datetime.fromisoformat(job["submitted_at"])
        assert submitted >= started_at + delay, (submitted, started_at)
    assert "azureml" in rows["evaluation"]["capacity_ready"].split(",")

    # The slot polled the cheap status activity between durable timers, every poll interval.
    status = sim.host.engine.get_status(worker_instance_id(eid, 0), show_history=True)
    assert status is not None
    history = status.history or []
    scheduled = [e.get("Name") for e in history if e.get("EventType") == TASK_SCHEDULED]
    assert scheduled.count(names.ENSURE_CAPACITY) == 1
    polls = scheduled.count(names.CAPACITY_STATUS)
    # (One poll fewer when the orchestration's clock ran ahead of the cloud's by a few
    # virtual seconds.)
    expected = delay.total_seconds() // bounds.CAPACITY_POLL_SECONDS
    assert expected - 1 <= polls <= expected, scheduled
    assert sum(e.get("EventType") == TIMER_CREATED for e in history) >= polls
    assert scheduled.index(names.SUBMIT_JOB) > max(
        i for i, n in enumerate(scheduled) if n == names.CAPACITY_STATUS
    )


class _RunningOrchestrations:
    """The Durable client as the sweeper uses it: every orchestration is still running."""

    async def get_status(self, instance_id: str) -> Any:
        return SimpleNamespace(runtime_status=SimpleNamespace(value="Running"))

    async def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        raise AssertionError(f"nothing ended, yet {name} was raised on {instance_id}")


def test_a_sweep_starts_no_job_check_after_its_budget(
    azurite_connection_string: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string)
    monkeypatch.setenv("STATE_TABLE_PREFIX", f"sw{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("COMPUTE_BACKEND", "simulated")
    monkeypatch.setenv("HEARTBEAT_SECRET", "sweep-budget-test-secret-0123456789")
    scheduler = ThreadingScheduler()
    cloud = SimulatedCloud(scheduler, profile="none", seed=1, eventgrid_url="http://127.0.0.1:9")
    install_cloud(cloud)
    runtime.reset_services()
    try:
        store = runtime.services().store
        eid = uuid.uuid4().hex[:12]
        for shard in range(3):
            name = job_name(eid, shard, 1)
            store.register_job(
                {
                    "job_name": name,
                    "evaluation_id": eid,
                    "shard_index": shard,
                    "attempt": 1,
                    "instance_id": shard_instance_id(eid, shard),
                    "tier": Tier.AZURE_ML.value,
                    "submitted_at": "2026-01-01T00:00:00+00:00",
                }
            )
        asked: list[str] = []

        def status(name: str) -> JobStatus:
            asked.append(name)
            raise JobNotFoundError(name)

        monkeypatch.setattr(cloud.backend(Tier.AZURE_ML), "status", status)
        client: Any = _RunningOrchestrations()

        # A budget already used up: one job is checked (a sweep always makes progress), the
        # other two are left for the next sweep.
        monkeypatch.setattr(bounds, "SWEEP_BUDGET_SECONDS", -1.0)
        report = asyncio.run(sweeper.sweep(client))
        assert len(asked) == 1 and report["deferred"] == 2, (asked, report)

        monkeypatch.setattr(bounds, "SWEEP_BUDGET_SECONDS", 120.0)
        report = asyncio.run(sweeper.sweep(client))
        assert len(asked) == 4 and report["deferred"] == 0, (asked, report)
        assert json.dumps(report)  # the report stays a plain, loggable dict
    finally:
        install_cloud(None)
        runtime.reset_services()
        scheduler.close()
