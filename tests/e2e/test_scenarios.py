"""End-to-end scenarios of the control plane: the app on the devhost (virtual time), state in
Azurite, the simulated Azure driving it through the real HTTP entry points.

Every scenario ends with `assert_invariants`: each task has exactly one recorded outcome, and
no shard ever had two active jobs at once (job rows and the cloud's ledger).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests

from adapters import runtime
from adapters.compute.simulated import (
    DuplicatedEvents,
    HangAfter,
    LateEvents,
    LostEvents,
    LostMessages,
    NeverStarts,
    NoNestedVirtualization,
    TransientSubmitErrors,
    eventgrid_url_for,
)
from adapters.state.table_store import parse_time
from devhost.engine import CrashInjector
from devhost.simulation import Simulation
from domain import names
from domain.jobs import JobSpec, JobState, Tier, TransientBackendError
from domain.messages import (
    AML_RUN_COMPLETED,
    AML_RUN_STATUS_CHANGED,
    MessageKind,
    heartbeat_token,
)
from domain.naming import job_name, shard_instance_id
from tests.e2e.scenario_support import (
    SpecRecorder,
    VirtualWatch,
    assert_invariants,
    attempt_outcomes,
    jobs_of_shard,
    ledger_of,
    restart,
    start,
    store_rows,
)

MakeSimulation = Callable[..., Simulation]
SMOKE = {"task_set": "waa-smoke", "workers": 3}
# Real seconds an evaluation may take (virtual time skips; a run takes a few seconds): a safety
# net against a hang, not a timed assertion.
WAIT = 120.0


def _first(shard: int, attempt: int = 1) -> Callable[[JobSpec], bool]:
    return lambda spec: spec.shard_index == shard and spec.attempt == attempt


def _shard_tasks(rows: dict[str, Any], shard: int) -> list[str]:
    return sorted(t["task_id"] for t in rows["tasks"] if int(t["shard_index"]) == shard)


def _time(value: str) -> datetime:
    parsed = parse_time(value)
    assert parsed is not None
    return parsed


def _outcomes(final: dict[str, Any]) -> dict[str, str]:
    return {t["task_id"]: t["outcome"] for t in final["tasks"]}


def _post_heartbeat(sim: Simulation, body: dict[str, Any], token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(f"{sim.base_url}/api/heartbeats", json=body, headers=headers, timeout=30)


def _aml_event(name: str, evaluation_id: str, status: str, event_type: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/0/resourceGroups/sim/providers/"
        "Microsoft.MachineLearningServices/workspaces/sim",
        "subject": f"experiments/x/runs/{name}",
        "eventType": event_type,
        "eventTime": "2026-01-01T00:00:00+00:00",
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "runId": name,
            "runStatus": status,
            "experimentName": f"waa-{evaluation_id}",
            "runTags": {"waa_evaluation": evaluation_id},
        },
    }


def _post_event_grid(sim: Simulation, events: list[dict[str, Any]]) -> requests.Response:
    return requests.post(
        eventgrid_url_for(sim.base_url),
        data=json.dumps(events),
        headers={"aeg-event-type": "Notification", "Content-Type": "application/json"},
        timeout=30,
    )


# --------------------------------------------------------------------------------------------


def test_happy_path(make_simulation: MakeSimulation) -> None:
    sim = make_simulation(profile="none")
    eid = start(sim, SMOKE)
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert final["state"] == "completed"
    assert set(_outcomes(final).values()) == {"completed"}
    assert final["counts"]["completed"] == 12
    # One job per shard, on the first tier, no retries, no failovers.
    assert sorted((j["shard_index"], j["attempt"], j["tier"]) for j in rows["jobs"]) == [
        (0, 1, "azureml"),
        (1, 1, "azureml"),
        (2, 1, "azureml"),
    ]
    assert all(j["state"] == JobState.COMPLETED.value for j in rows["jobs"])
    summary = final["summary"]
    assert summary["attempts"] == 3 and summary["failovers"] == 0
    assert summary["cost_usd"] > 0


def test_container_never_starts_deadline_cancel_retry(make_simulation: MakeSimulation) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(_first(0), NeverStarts(), times=1)
    eid = start(sim, SMOKE)
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert set(_outcomes(final).values()) == {"completed"}
    first, second = jobs_of_shard(rows, 0)
    # The start deadline (10 min) fired, the shard closed attempt 1 as a missed start ...
    closed = attempt_outcomes(sim, eid, 0)
    assert [a["outcome"] for a in closed] == ["start_timeout", "completed"], closed
    assert "did not start" in closed[0]["reason"]
    # The job row keeps that reason (not the "cancelled" the backend reports after the cancel).
    assert first["state"] == JobState.FAILED.value and "did not start" in first["detail"], first
    # ... and the job was cancelled in the cloud, not left running.
    ledger = {e.job_name: e for e in ledger_of(sim.cloud, eid)}
    stuck = ledger[job_name(eid, 0, 1)]
    assert stuck.state is JobState.CANCELLED and stuck.started_at is None
    assert stuck.ended_at is not None
    waited = (stuck.ended_at - stuck.submitted_at).total_seconds()
    assert 600 <= waited < 660, waited
    # Then a retry on the same tier (a missed start is transient), after a backoff, which ran
    # every task of the shard.
    assert second["tier"] == first["tier"] == Tier.AZURE_ML.value
    assert second["state"] == JobState.COMPLETED.value
    backoff = (_time(second["submitted_at"]) - _time(first["ended_at"])).total_seconds()
    assert 48 <= backoff <= 72, backoff  # the first backoff: 60 s +-20 % jitter
    assert all(t["attempt"] == 2 for t in final["tasks"] if t["shard"] == 0)
    assert all(len(jobs_of_shard(rows, s)) == 1 for s in (1, 2))


def test_no_nested_virtualization_fails_over_to_batch_at_once(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(_first(0), NoNestedVirtualization(), times=1)
    eid = start(sim, SMOKE)
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert set(_outcomes(final).values()) == {"completed"}
    first, second = jobs_of_shard(rows, 0)
    assert first["tier"] == Tier.AZURE_ML.value and first["state"] == JobState.FAILED.value
    assert first["failure_kind"] == "permanent_for_tier"
    closed = attempt_outcomes(sim, eid, 0)
    assert [(a["tier"], a["outcome"]) for a in closed] == [
        ("azureml", "job_failed"),
        ("batch", "completed"),
    ], closed
    assert closed[0]["failure_kind"] == "permanent_for_tier"
    assert second["tier"] == Tier.BATCH.value and second["state"] == JobState.COMPLETED.value
    # Immediate: no backoff (the base delay is 60 s +-20 %) between the failure and failover.
    gap = (_time(second["submitted_at"]) - _time(first["ended_at"])).total_seconds()
    assert 0 <= gap < 30, gap
    shard0 = next(s for s in final["shards"] if s["shard"] == 0)
    assert shard0["failovers"] == 1 and shard0["tier"] == Tier.BATCH.value
    assert final["summary"]["failovers"] == 1


def test_hang_mid_run_sweeper_resumes_only_remaining_tasks(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    recorder = SpecRecorder()
    sim.cloud.script(recorder, LostEvents(statuses=frozenset()))
    sim.cloud.script(_first(0), HangAfter(2), times=1)
    eid = start(sim, {**SMOKE, "heartbeat_timeout_minutes": 5})
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert set(_outcomes(final).values()) == {"completed"}
    first, second = jobs_of_shard(rows, 0)
    # The sweeper noticed the silence, cancelled the job and told the shard.
    assert first["stuck"] is True and "no heartbeat" in first["detail"], first
    closed = attempt_outcomes(sim, eid, 0)
    assert [a["outcome"] for a in closed] == ["stuck", "completed"], closed
    assert sim.cloud.ledger[first["job_name"]].state is JobState.CANCELLED
    assert second["tier"] == first["tier"] == Tier.AZURE_ML.value
    spec1 = recorder.specs[first["job_name"]]
    spec2 = recorder.specs[second["job_name"]]
    done_in_1 = spec1.task_ids[:2]
    # Attempt 2 ran only what attempt 1 left without a result.
    assert spec2.task_ids == spec1.task_ids[2:]
    assert sorted(spec1.task_ids) == _shard_tasks(rows, 0)
    by_id = {t["task_id"]: t for t in final["tasks"]}
    assert all(by_id[t]["attempt"] == 1 for t in done_in_1)
    assert all(by_id[t]["attempt"] == 2 for t in spec2.task_ids)
    assert sim.cloud.ledger[second["job_name"]].tasks_run == 2


def test_tier_that_keeps_failing_trips_the_breaker(make_simulation: MakeSimulation) -> None:
    sim = make_simulation(profile="none")
    # Azure ML never starts a container for shards 0-2 (every attempt): three failures at the
    # 10-minute start deadline open the breaker (threshold 3). Shard 3 runs fine on Azure ML
    # until its runner hangs after one task; the sweeper notices that 10 minutes later, well
    # after the breaker opened.
    sim.cloud.script(
        lambda spec: spec.tier is Tier.AZURE_ML and spec.shard_index < 3, NeverStarts()
    )
    sim.cloud.script(_first(3), HangAfter(1), times=1)
    eid = start(sim, {"task_set": "waa-smoke", "workers": 4})
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert set(_outcomes(final).values()) == {"completed"}
    assert rows["breaker"].get("azureml", 0) >= 3, rows["breaker"]
    closed = attempt_outcomes(sim, eid, 3)
    assert [(a["tier"], a["outcome"]) for a in closed] == [
        ("azureml", "stuck"),
        ("batch", "completed"),
    ], closed
    # A hang is transient and Azure ML had an attempt left for shard 3 (two per tier; see the
    # hang scenario, which retries on Azure ML): only the open breaker sends it to Batch.
    first_fail = min(
        _time(j["ended_at"])
        for j in rows["jobs"]
        if j["tier"] == "azureml" and j["shard_index"] < 3
    )
    stuck = jobs_of_shard(rows, 3)[0]
    assert _time(stuck["ended_at"]) > first_fail + timedelta(minutes=1), (stuck, first_fail)
    assert any("tier azureml" in alert for alert in final["summary"]["alerts"])
    # Shards 0-2 each decided on a retry right at the deadline (some before all three
    # failures were counted) and backed off; none may send that retry to Azure ML once the
    # breaker is open.
    failures = sorted(
        _time(j["ended_at"])
        for j in rows["jobs"]
        if j["tier"] == "azureml" and j["state"] != "completed"
    )
    opened = failures[2]
    late = [j for j in rows["jobs"] if j["tier"] == "azureml" and _time(j["submitted_at"]) > opened]
    assert not late, [j["job_name"] for j in late]


def test_failed_cancel_of_a_stale_attempt_is_retried(
    make_simulation: MakeSimulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(_first(0), NeverStarts(), times=1)
    # The first cancel of shard 0's attempt 1 (after its start deadline) fails with a 503.
    backend = sim.cloud.backend(Tier.AZURE_ML)
    real_cancel = backend.cancel
    refused: list[str] = []

    def flaky_cancel(name: str) -> None:
        if name.endswith("-s0-a1") and not refused:
            refused.append(name)
            raise TransientBackendError("HTTP 503 Service Unavailable (simulated)", code="503")
        real_cancel(name)

    monkeypatch.setattr(backend, "cancel", flaky_cancel)
    eid = start(sim, SMOKE)
    final = sim.wait(eid, timeout=WAIT)
    assert refused == [job_name(eid, 0, 1)]
    # The cancel must be retried (the sweeper owns that) and attempt 2 must not run while
    # attempt 1's job still runs in the cloud.
    assert_invariants(sim, eid, final)
    assert set(_outcomes(final).values()) == {"completed"}


def test_transient_submission_errors_are_retried_by_the_policy(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(_first(0), TransientSubmitErrors(count=2, status_code=429), times=1)
    sim.cloud.script(_first(1), TransientSubmitErrors(count=1, status_code=503), times=1)
    eid = start(sim, SMOKE)
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert set(_outcomes(final).values()) == {"completed"}
    # The Durable retry policy retried inside attempt 1: one job per shard, no new attempt.
    assert sorted((j["shard_index"], j["attempt"]) for j in rows["jobs"]) == [
        (0, 1),
        (1, 1),
        (2, 1),
    ]
    assert [e.job_name for e in ledger_of(sim.cloud, eid)] == [
        job_name(eid, s, 1) for s in range(3)
    ]
    assert rows["breaker"] == {}
    history = sim.host.engine.get_status(shard_instance_id(eid, 0), show_history=True)
    assert history is not None
    failed_submits = [
        e
        for e in history.history or []
        if e.get("EventType") == 6  # TaskFailed
    ]
    assert len(failed_submits) == 2, failed_submits


def test_duplicated_late_reordered_and_lost_events_change_nothing(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    # Shard 0: every Azure ML event twice. Shard 1: the early statuses arrive long after the
    # job completed (out of order). Shard 2: every Azure ML event lost.
    sim.cloud.script(_first(0), DuplicatedEvents(), times=1)
    sim.cloud.script(
        _first(1),
        LateEvents(delay_seconds=3 * 3600, statuses=frozenset({"Queued", "Preparing", "Running"})),
        times=1,
    )
    # Shard 2: every Azure ML event lost, and the runner's final "finished" message too: only
    # the sweeper, asking the backend, can learn that the job ended.
    sim.cloud.script(_first(2), LostEvents(), times=1)
    sim.cloud.script(_first(2), LostMessages(kinds=frozenset({MessageKind.FINISHED})), times=1)
    eid = start(sim, SMOKE)
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert set(_outcomes(final).values()) == {"completed"}
    assert len(rows["jobs"]) == 3
    assert all(j["state"] == JobState.COMPLETED.value for j in rows["jobs"])
    assert final["summary"]["attempts"] == 3
    ledger = {e.job_name: e for e in ledger_of(sim.cloud, eid)}
    silent = ledger[job_name(eid, 2, 1)]
    assert silent.events_sent > 0 and silent.events_lost == silent.events_sent
    assert silent.messages_lost == 1
    reconciled = next(j for j in rows["jobs"] if j["job_name"] == silent.job_name)
    assert "backend reported" in reconciled["detail"], reconciled


def test_late_event_of_cancelled_attempt_changes_nothing(make_simulation: MakeSimulation) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(_first(0), NeverStarts(), times=1)
    eid = start(sim, SMOKE)
    old, new = job_name(eid, 0, 1), job_name(eid, 0, 2)
    store = runtime.services().store

    def attempt_2_running() -> bool:
        job = store.get_job(eid, new)
        return bool(job and job.get("started_at") and job["state"] == JobState.RUNNING.value)

    def replay_attempt_1() -> list[int]:
        codes = []
        # Azure ML reports the cancelled attempt's job as completed, twice, then failed ...
        for status, kind in (
            ("Completed", AML_RUN_COMPLETED),
            ("Completed", AML_RUN_STATUS_CHANGED),
            ("Failed", AML_RUN_STATUS_CHANGED),
        ):
            codes.append(_post_event_grid(sim, [_aml_event(old, eid, status, kind)]).status_code)
        # ... and its ended / started events reach the shard instance directly.
        instance = shard_instance_id(eid, 0)
        sim.host.engine.raise_event(
            instance, names.ended_event(1), json.dumps({"state": "completed", "reason": "late"})
        )
        sim.host.engine.raise_event(instance, names.started_event(1), json.dumps({}))
        # The old attempt's runner (its token is genuine) reports a result: refused.
        secret = runtime.services().settings.heartbeat_secret.get_secret_value()
        token = heartbeat_token(secret, old)
        task = store_rows(eid)["tasks"][0]["task_id"]
        r = _post_heartbeat(
            sim,
            {
                "job_name": old,
                "kind": "task_result",
                "task_result": {"task_id": task, "status": "failed", "reason": "stale"},
            },
            token,
        )
        codes.append(r.status_code)
        return codes

    watch = VirtualWatch(sim.host.clock, attempt_2_running, replay_attempt_1)
    codes = watch.wait(WAIT)
    assert all(200 <= c < 300 for c in codes[:3]), codes
    assert codes[3] == 403, codes
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert set(_outcomes(final).values()) == {"completed"}
    first, second = jobs_of_shard(rows, 0)
    closed = attempt_outcomes(sim, eid, 0)
    assert [a["outcome"] for a in closed] == ["start_timeout", "completed"], closed
    assert first["state"] == JobState.FAILED.value and "did not start" in first["detail"], first
    assert second["state"] == JobState.COMPLETED.value
    assert all(t["attempt"] == 2 for t in final["tasks"] if t["shard"] == 0)
    assert len(rows["jobs"]) == 4  # no third attempt on shard 0


def test_forged_and_stale_heartbeat_tokens_are_rejected(make_simulation: MakeSimulation) -> None:
    sim = make_simulation(profile="none")
    eid = start(sim, SMOKE)
    store = runtime.services().store
    secret = runtime.services().settings.heartbeat_secret.get_secret_value()
    victim = job_name(eid, 0, 1)

    def running() -> bool:
        job = store.get_job(eid, victim)
        return bool(job and job["state"] == JobState.RUNNING.value)

    def forge() -> dict[str, Any]:
        task = next(t for t in store_rows(eid)["tasks"] if t["outcome"] == "running")["task_id"]
        result = {"task_id": task, "status": "failed", "reason": "forged"}
        msg = {"job_name": victim, "kind": "task_result", "task_result": result}
        finished = {"job_name": victim, "kind": "finished", "exit_code": 1}
        return {
            "task": task,
            "none": _post_heartbeat(sim, msg, None).status_code,
            "empty": _post_heartbeat(sim, msg, "").status_code,
            "wrong": _post_heartbeat(sim, msg, "0" * 64).status_code,
            "other_job": _post_heartbeat(
                sim, finished, heartbeat_token(secret, job_name(eid, 1, 1))
            ).status_code,
            "other_secret": _post_heartbeat(
                sim, finished, heartbeat_token("not-the-secret", victim)
            ).status_code,
        }

    forged = VirtualWatch(sim.host.clock, running, forge).wait(WAIT)
    assert forged["none"] == 401 and forged["empty"] == 401, forged
    assert forged["wrong"] == forged["other_job"] == forged["other_secret"] == 403, forged
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)
    # Nothing forged took effect: the task completed, the job was not ended by a fake message.
    forged_task = next(t for t in final["tasks"] if t["task_id"] == forged["task"])
    assert forged_task["outcome"] == "completed", (forged_task, final["shards"])
    assert all(j["state"] == JobState.COMPLETED.value for j in rows["jobs"])

    # An ended job's genuine token is refused too, and changes nothing.
    stale = _post_heartbeat(
        sim,
        {
            "job_name": victim,
            "kind": "task_result",
            "task_result": {"task_id": forged["task"], "status": "failed", "reason": "stale"},
        },
        heartbeat_token(secret, victim),
    )
    assert stale.status_code == 403, stale.text
    assert _outcomes(sim.status(eid))[forged["task"]] == "completed"


def test_budget_cap_stops_submitting(make_simulation: MakeSimulation) -> None:
    from domain.progress import job_estimate_usd

    sim = make_simulation(profile="none")
    budget = 0.25
    eid = start(sim, {**SMOKE, "budget_usd": budget})
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    estimates = [
        job_estimate_usd(_shard_tasks(rows, s), rows["evaluation"]["vm_size"], False)
        for s in range(3)
    ]
    # The budget holds one shard's job, not two.
    assert min(estimates) <= budget < sorted(estimates)[0] + sorted(estimates)[1]
    not_run = [t for t in final["tasks"] if t["outcome"] == "not_run"]
    assert not_run and all("budget" in t["reason"] for t in not_run), not_run
    assert final["counts"]["completed"] == 12 - len(not_run) > 0
    assert len(rows["jobs"]) == 1
    # Money: what the cloud billed and what the control plane charged stay within the budget
    # plus one job's overrun of its reservation.
    ledger = ledger_of(sim.cloud, eid)
    reserved = {j["job_name"]: float(j["reserved_usd"]) for j in rows["jobs"]}
    overrun = max(max(0.0, e.cost_usd - reserved[e.job_name]) for e in ledger)
    assert sum(e.cost_usd for e in ledger) <= budget + overrun + 1e-9
    charged = final["summary"]["cost_usd"]
    charged_overrun = max(
        max(0.0, float(j["cost_usd"]) - float(j["reserved_usd"])) for j in rows["jobs"]
    )
    assert charged <= budget + charged_overrun + 1e-4, (charged, budget)


def test_cancel_mid_run(make_simulation: MakeSimulation) -> None:
    sim = make_simulation(profile="none")
    eid = start(sim, SMOKE)
    store = runtime.services().store

    def some_done() -> bool:
        tasks = store_rows(eid)["tasks"]
        return sum(t["outcome"] == "completed" for t in tasks) >= 2

    response = VirtualWatch(sim.host.clock, some_done, lambda: sim.cancel(eid)).wait(WAIT)
    assert response.status_code == 202, response.text
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert final["state"] == "cancelled"
    outcomes = _outcomes(final)
    assert 2 <= list(outcomes.values()).count("completed") < 12
    not_run = [t for t in final["tasks"] if t["outcome"] != "completed"]
    assert not_run and all(
        t["outcome"] == "not_run" and "cancelled" in t["reason"] for t in not_run
    ), not_run
    # No job left running in the cloud, none left in the active-jobs partition.
    assert all(e.state.is_terminal for e in ledger_of(sim.cloud, eid))
    assert [a for a in store.active_jobs() if a["evaluation_id"] == eid] == []
    # A second cancel of an ended evaluation is refused.
    assert sim.cancel(eid).status_code == 409
    assert len(rows["jobs"]) == 3


def test_idempotency_key_starts_one_evaluation(make_simulation: MakeSimulation) -> None:
    sim = make_simulation(profile="none")
    body = {**SMOKE, "idempotency_key": "nightly-2026-01-01"}
    first = sim.start_evaluation(body)
    second = sim.start_evaluation(body)
    assert first.status_code == 202, first.text
    assert second.status_code == 200, second.text
    eid = first.json()["evaluation_id"]
    assert second.json()["evaluation_id"] == eid and second.json()["created"] is False
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)
    # A third try after the end still names the same evaluation and starts nothing.
    third = sim.start_evaluation(body)
    assert third.json()["evaluation_id"] == eid

    evaluations = [s for s in sim.host.engine.query() if s.name == names.EVALUATION_ORCHESTRATOR]
    assert [s.instance_id for s in evaluations] == [eid]
    shards = [s for s in sim.host.engine.query() if s.name == names.SHARD_ORCHESTRATOR]
    assert len(shards) == 3
    assert len(rows["jobs"]) == 3
    listed = sim.http.get(f"{sim.base_url}/api/evaluations", timeout=30).json()
    assert [e["evaluation_id"] for e in listed["evaluations"]] == [eid]


def test_devhost_restarted_mid_evaluation_finishes(
    make_simulation: MakeSimulation, azurite_connection_string: str
) -> None:
    prefix, hub = f"rs{uuid.uuid4().hex[:8]}", f"hub{uuid.uuid4().hex[:8]}"
    sim = make_simulation(profile="none", store="table", table_prefix=prefix, task_hub=hub)
    eid = start(sim, SMOKE)

    def some_done() -> bool:
        return sum(t["outcome"] == "completed" for t in store_rows(eid)["tasks"]) >= 3

    VirtualWatch(sim.host.clock, some_done, lambda: None).wait(WAIT)
    before = {t["task_id"]: t["outcome"] for t in store_rows(eid)["tasks"]}
    sim2 = restart(sim, azurite_connection_string, table_prefix=prefix, task_hub=hub)
    try:
        final = sim2.wait(eid, timeout=WAIT)
        rows = assert_invariants(sim2, eid, final)
    finally:
        sim2.stop()
    # The same outcome a run without the restart has: every task completed; what was done
    # before the restart was kept, not run again.
    assert set(_outcomes(final).values()) == {"completed"}
    by_id = {t["task_id"]: t for t in final["tasks"]}
    for task, outcome in before.items():
        if outcome == "completed":
            assert by_id[task]["attempt"] == 1
    assert final["state"] == "completed"
    assert len(rows["jobs"]) >= 3


def test_activity_reexecution_after_crash_creates_no_second_job(
    make_simulation: MakeSimulation, azurite_connection_string: str
) -> None:
    prefix, hub = f"cr{uuid.uuid4().hex[:8]}", f"hub{uuid.uuid4().hex[:8]}"
    injector = CrashInjector(after_activity={names.SUBMIT_JOB: 1})
    sim = make_simulation(
        profile="none", store="table", table_prefix=prefix, task_hub=hub, crash_injector=injector
    )
    eid = start(sim, SMOKE)
    sim.host.engine.wait_crashed(timeout=WAIT)
    submitted = [e.job_name for e in ledger_of(sim.cloud, eid)]
    assert submitted, "the crash came after a submission"
    assert len(submitted) == len(set(submitted)), submitted
    registered = {j["job_name"]: j["submitted_at"] for j in store_rows(eid)["jobs"]}
    # Every job that reached the cloud before the crash was registered first.
    assert set(submitted) <= set(registered), (submitted, registered)

    sim2 = restart(sim, azurite_connection_string, table_prefix=prefix, task_hub=hub)
    try:
        final = sim2.wait(eid, timeout=WAIT)
        rows = assert_invariants(sim2, eid, final)
        entries = ledger_of(sim2.cloud, eid)
    finally:
        sim2.stop()
    assert set(_outcomes(final).values()) == {"completed"}
    # The re-executed submit found its job by name: one job per shard, attempt 1, registered
    # once (the row written before the crash was kept), one submission per name in the cloud.
    assert sorted((j["shard_index"], j["attempt"]) for j in rows["jobs"]) == [
        (0, 1),
        (1, 1),
        (2, 1),
    ]
    for name, at in registered.items():
        assert next(j for j in rows["jobs"] if j["job_name"] == name)["submitted_at"] == at
    assert sorted(e.job_name for e in entries) == sorted(job_name(eid, s, 1) for s in range(3))


START_TIMEOUT = "container_start_timeout_minutes"
HEARTBEAT_TIMEOUT = "heartbeat_timeout_minutes"
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("not json", b"{not json", "body"),
    ("array body", [], "body"),
    ("no tasks", {}, "tasks"),
    ("both sources", {"tasks": ["a1"], "task_set": "waa-smoke"}, "tasks"),
    ("empty list", {"tasks": []}, "tasks"),
    ("bad task id", {"tasks": ["ok", "rm -rf /"]}, "tasks"),
    ("duplicate id", {"tasks": ["a1", "a1"]}, "tasks"),
    ("tasks not list", {"tasks": "a1"}, "tasks"),
    ("bad domain label", {"tasks": {"bad domain!": ["a1"]}}, "tasks"),
    ("duplicate across domains", {"tasks": {"x": ["a1"], "y": ["a1"]}}, "tasks"),
    ("unknown task set", {"task_set": "nope"}, "task_set"),
    ("zero workers", {**SMOKE, "workers": 0}, "workers"),
    ("too many workers", {**SMOKE, "workers": 10_000}, "workers"),
    ("workers as string", {**SMOKE, "workers": "3"}, "workers"),
    ("unpriced vm", {**SMOKE, "vm_size": "Standard_NC96"}, "vm_size"),
    ("no tiers", {**SMOKE, "tiers": []}, "tiers"),
    ("unknown tier", {**SMOKE, "tiers": ["gcp"]}, "tiers"),
    ("repeated tier", {**SMOKE, "tiers": ["batch", "batch"]}, "tiers"),
    ("spot not bool", {**SMOKE, "spot": "yes"}, "spot"),
    ("zero budget", {**SMOKE, "budget_usd": 0}, "budget_usd"),
    ("negative budget", {**SMOKE, "budget_usd": -5}, "budget_usd"),
    ("start timeout 0", {**SMOKE, START_TIMEOUT: 0}, START_TIMEOUT),
    ("heartbeat timeout huge", {**SMOKE, HEARTBEAT_TIMEOUT: 1000}, HEARTBEAT_TIMEOUT),
    ("job timeout tiny", {**SMOKE, "job_timeout_hours": 0.01}, "job_timeout_hours"),
    (
        "job shorter than start",
        {**SMOKE, START_TIMEOUT: 120, "job_timeout_hours": 1},
        "job_timeout_hours",
    ),
    ("bad agent", {**SMOKE, "agent": "navi; rm"}, "agent"),
    ("empty model", {**SMOKE, "model": ""}, "model"),
    ("max_steps 0", {**SMOKE, "max_steps": 0}, "max_steps"),
    ("max_steps float", {**SMOKE, "max_steps": 1.5}, "max_steps"),
    ("bad idempotency key", {**SMOKE, "idempotency_key": "has space"}, "idempotency_key"),
    ("unknown policy", {**SMOKE, "policy": "yolo"}, "policy"),
    ("right_size not bool", {**SMOKE, "right_size": 1}, "right_size"),
    # Issue 10: the distribution's rules (domain/requests.py `_consistent_distribution`).
    ("right_size with the queue", {**SMOKE, "right_size": True}, "right_size"),
    ("unknown distribution", {**SMOKE, "distribution": "push"}, "distribution"),
    ("target and workers", {**SMOKE, "target_hours": 2, "workers": 3}, "target_hours"),
    ("target too short", {**SMOKE, "target_hours": 0.25}, "target_hours"),
    ("tail copies static", {**SMOKE, "distribution": "static", "tail_copies": True}, "tail_copies"),
    ("unknown field", {**SMOKE, "colour": "blue"}, "colour"),
]


def test_bad_requests_get_400_naming_the_field_and_unknown_ids_404(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    url = f"{sim.base_url}/api/evaluations"
    wrong: list[str] = []
    for label, body, field in BAD_BODIES:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=30)
        answer = r.json() if r.headers.get("Content-Type", "").startswith("application/") else {}
        if (
            r.status_code != 400
            or answer.get("field") != field
            or field not in str(answer.get("error", ""))
        ):
            wrong.append(f"{label}: {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)

    for path in ("/api/evaluations/0123456789ab", "/api/evaluations/unknown"):
        r = requests.get(sim.base_url + path, timeout=30)
        assert r.status_code == 404 and r.json()["field"] == "evaluation_id", r.text
        r = requests.post(sim.base_url + path + "/cancel", timeout=30)
        assert r.status_code == 404 and r.json()["field"] == "evaluation_id", r.text
    # None of it started anything: no evaluation, no orchestration, no job.
    assert requests.get(url, timeout=30).json()["evaluations"] == []
    assert sim.host.engine.query() == []
    assert sim.cloud.ledger == {}
    assert runtime.services().store.active_jobs() == []


@pytest.fixture(autouse=True)
def _fresh_heartbeat_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # A known secret for every scenario, so tests can mint genuine tokens.
    monkeypatch.setenv("HEARTBEAT_SECRET", f"e2e-{uuid.uuid4().hex}")


def test_completed_job_with_lost_results_is_stopped_before_failover(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    # Shard 0: attempt 1 never starts; attempt 2 (Azure ML's last) runs, but every task
    # result is lost on the way, so the job "finishes" with all of its tasks still open and
    # the shard fails over to Batch at once, while attempt 2's container is still exiting.
    sim.cloud.script(_first(0), NeverStarts(), times=1)
    sim.cloud.script(
        _first(0, 2), LostMessages(kinds=frozenset({MessageKind.TASK_RESULT})), times=1
    )
    eid = start(sim, SMOKE)
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert set(_outcomes(final).values()) == {"completed"}
    assert [j["tier"] for j in jobs_of_shard(rows, 0)] == ["azureml", "azureml", "batch"]
    assert all(t["attempt"] == 3 for t in final["tasks"] if t["shard"] == 0)


@pytest.mark.parametrize(("profile", "seed"), [("seed", 7), ("chaos", 7), ("chaos", 11)])
def test_random_fault_profiles_keep_the_invariants(
    make_simulation: MakeSimulation, profile: str, seed: int
) -> None:
    sim = make_simulation(profile=profile, seed=seed)
    # The key fixes the evaluation id, and with it every draw of the simulated cloud.
    body = {**SMOKE, "spot": True, "idempotency_key": f"profile-{profile}-{seed}"}
    eid = start(sim, body)
    final = sim.wait(eid, timeout=WAIT)
    assert_invariants(sim, eid, final)
    assert final["state"] == "completed"
