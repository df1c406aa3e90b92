"""A whole evaluation on the devhost, with the app's telemetry caught by in-memory exporters.

One evaluation meets a container that never starts (start deadline), a tier without nested
virtualization (failover) and a job that hangs (the sweeper finds it stuck). The metrics must
count exactly what the state table recorded, every job's log records and spans must carry its
ids, and no secret may be anywhere in what would be exported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from adapters import runtime
from adapters.compute.simulated import HangAfter, NeverStarts, NoNestedVirtualization
from devhost.simulation import Simulation
from domain.jobs import JobSpec
from domain.messages import heartbeat_token
from domain.policy import AttemptOutcome
from tests.telemetry.conftest import Exported, attributes_of


def _first(shard: int) -> Callable[[JobSpec], bool]:
    return lambda spec: spec.shard_index == shard and spec.attempt == 1


@pytest.fixture
def sim(azurite_connection_string: str) -> Iterator[Simulation]:
    simulation = Simulation(connection_string=azurite_connection_string, profile="none").start()
    try:
        yield simulation
    finally:
        simulation.stop()


def test_an_evaluations_telemetry_has_the_ids_the_counts_and_no_secret(
    sim: Simulation, exported: Exported, azurite_connection_string: str
) -> None:
    sim.cloud.script(_first(0), NeverStarts(), times=1)
    sim.cloud.script(_first(1), NoNestedVirtualization(), times=1)
    sim.cloud.script(_first(2), HangAfter(2), times=1)
    r = sim.start_evaluation(
        {"task_set": "waa-smoke", "workers": 3, "heartbeat_timeout_minutes": 5}
    )
    assert r.status_code == 202, r.text
    eid = r.json()["evaluation_id"]
    final = sim.wait(eid, timeout=120)
    assert {t["outcome"] for t in final["tasks"]} == {"completed"}
    rows = runtime.services().store.get_evaluation_rows(eid)
    assert rows is not None
    jobs = {j["job_name"]: j for j in rows["jobs"]}

    # Metrics: what was decided, counted once each, matching the table.
    assert exported.total("waa.jobs.submitted") == len(jobs) == 6
    assert exported.total("waa.jobs.started") == sum(
        1 for j in jobs.values() if j.get("started_at")
    )
    assert exported.total("waa.jobs.start_deadline_hits", tier="azureml") == 1
    assert exported.total("waa.jobs.start_deadline_hits") == 1
    # Shard 1 fails over at once; shard 2 too once Azure ML's failures trip the breaker.
    assert exported.total("waa.failovers") == final["summary"]["failovers"] >= 1
    assert exported.total("waa.failovers", tier="batch") == exported.total("waa.failovers")
    assert exported.total("waa.jobs.stuck") == sum(1 for j in jobs.values() if j.get("stuck")) == 1
    assert exported.total("waa.jobs.cost") == pytest.approx(
        sum(float(j["cost_usd"]) for j in jobs.values())
    )
    assert exported.total("waa.jobs.cost") > 0

    # Logs: every job's "job submitted" record carries its ids as attributes (customDimensions).
    submitted = {
        attributes_of(rec)["job_name"]: attributes_of(rec)
        for rec in exported.log_records()
        if str(rec.log_record.body).startswith("job submitted")
    }
    assert set(submitted) == set(jobs)
    for name, attrs in submitted.items():
        job = jobs[name]
        assert (attrs["evaluation_id"], attrs["shard"], attrs["attempt"], attrs["tier"]) == (
            eid,
            job["shard_index"],
            job["attempt"],
            job["tier"],
        )

    # Spans: one submit per job with its ids; the jobs stopped early were cancelled in a span.
    submits = {
        dict(s.attributes or {})["job_name"]: s for s in exported.finished_spans("compute.submit")
    }
    assert set(submits) == set(jobs)
    for name, span in submits.items():
        attrs = dict(span.attributes or {})
        assert (attrs["evaluation_id"], attrs["shard"], attrs["attempt"], attrs["tier"]) == (
            eid,
            jobs[name]["shard_index"],
            jobs[name]["attempt"],
            jobs[name]["tier"],
        )
        assert attrs["backend_job_id"]
    cancelled = {
        dict(s.attributes or {})["job_name"] for s in exported.finished_spans("compute.cancel")
    }
    stopped = {
        n
        for n, j in jobs.items()
        if j.get("stuck") or j.get("attempt_outcome") == AttemptOutcome.START_TIMEOUT
    }
    assert len(stopped) == 2 and stopped <= cancelled

    # No secret anywhere: the heartbeat secret, any job's bearer token, the storage key.
    everything = exported.everything()
    secret = os.environ["HEARTBEAT_SECRET"]
    assert secret not in everything
    for name in jobs:
        assert heartbeat_token(secret, name) not in everything, name
    account_key = dict(
        part.split("=", 1) for part in azurite_connection_string.split(";") if "=" in part
    )["AccountKey"]
    assert account_key not in everything and azurite_connection_string not in everything
