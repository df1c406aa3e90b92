from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

import pytest

from adapters import runtime
from adapters.compute.simulated import FaultProfile, NeverStarts, TierFaults
from adapters.logs import JsonFormatter
from devhost.simulation import Simulation
from domain.jobs import JobSpec
from domain.messages import heartbeat_token
from domain.naming import job_name


def test_happy_path_every_task_completes(make_simulation: Callable[..., Simulation]) -> None:
    sim = make_simulation(profile="none")
    r = sim.start_evaluation({"task_set": "waa-smoke", "workers": 3})
    assert r.status_code == 202, r.text
    eid = r.json()["evaluation_id"]
    seen: list[dict[str, Any]] = []
    final = sim.wait(eid, timeout=120, on_progress=seen.append)
    outcomes = {t["task_id"]: t["outcome"] for t in final["tasks"]}
    assert set(outcomes.values()) == {"completed"}, final
    assert final["state"] == "completed"
    assert final["eta_seconds"] == 0.0
    assert final["cost"]["so_far_usd"] > 0
    assert final["cost"]["per_completed_task_usd"] > 0
    # While running, the status shows a positive ETA and per-shard progress.
    running = [
        v
        for v in seen
        if v["state"] == "running"
        and v["counts"]["completed"] > 0
        and v["counts"]["pending"] + v["counts"]["running"] > 0
    ]
    assert running, "no status read while tasks were running"
    assert all(v["eta_seconds"] is not None and v["eta_seconds"] > 0 for v in running)
    assert all(s["tier"] == "azureml" for s in running[-1]["shards"])


def _always_failing_tasks_on_azureml() -> FaultProfile:
    return FaultProfile(
        name="tasks-fail-on-azureml",
        azureml=TierFaults(task_failure=1.0),
        batch=TierFaults(),
        vm=TierFaults(),
    )


def test_a_failed_task_runs_again_before_its_failure_is_final(
    make_simulation: Callable[..., Simulation],
) -> None:
    sim = make_simulation(profile="none")
    sim.new_cloud(_always_failing_tasks_on_azureml(), 7)
    tasks = ["366de66e-cbae-4d72-b042-26390db2b145-WOS", "my-own-task"]
    r = sim.start_evaluation(
        {"tasks": tasks, "workers": 1, "tiers": ["azureml"], "task_retries": 1}
    )
    final = sim.wait(r.json()["evaluation_id"], timeout=120)
    for task in final["tasks"]:
        assert task["outcome"] == "failed", task
        assert task["reason"], task
        assert task["failed_runs"] == 1, task  # one recorded retry, then the final failure
    jobs = sorted(e.job_name for e in sim.cloud.ledger_entries())
    assert [j.rsplit("-", 1)[1] for j in jobs] == ["a1", "a2"]


def test_without_task_retries_a_failed_run_is_final(
    make_simulation: Callable[..., Simulation],
) -> None:
    sim = make_simulation(profile="none")
    sim.new_cloud(_always_failing_tasks_on_azureml(), 7)
    r = sim.start_evaluation(
        {"tasks": ["task-a", "task-b"], "workers": 1, "tiers": ["azureml"], "task_retries": 0}
    )
    final = sim.wait(r.json()["evaluation_id"], timeout=120)
    assert {t["outcome"] for t in final["tasks"]} == {"failed"}
    assert {t["failed_runs"] for t in final["tasks"]} == {0}
    assert len(sim.cloud.ledger_entries()) == 1


def test_tasks_of_an_ended_attempt_are_not_shown_running(
    make_simulation: Callable[..., Simulation],
) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(lambda spec: spec.attempt == 1, NeverStarts(), times=1)
    running_at_resubmit: list[list[str]] = []

    def look_when_attempt_2_is_submitted(spec: JobSpec) -> bool:
        if spec.attempt == 2:
            rows = runtime.services().store.get_evaluation_rows(spec.evaluation_id)
            assert rows is not None
            running_at_resubmit.append(
                [t["task_id"] for t in rows["tasks"] if t["outcome"] == "running"]
            )
        return False

    sim.cloud.script(look_when_attempt_2_is_submitted, NeverStarts())
    r = sim.start_evaluation({"task_set": "waa-smoke", "workers": 1})
    final = sim.wait(r.json()["evaluation_id"], timeout=120)
    assert {t["outcome"] for t in final["tasks"]} == {"completed"}
    # Attempt 1's job was cancelled at its start deadline: when attempt 2 is submitted, none
    # of the shard's tasks may still be shown as running.
    assert running_at_resubmit == [[]]


def test_logs_carry_the_ids_and_never_the_token(
    make_simulation: Callable[..., Simulation], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = make_simulation(profile="none")
    r = sim.start_evaluation({"tasks": ["task-a"], "workers": 1})
    eid = r.json()["evaluation_id"]
    sim.wait(eid, timeout=120)
    name = job_name(eid, 0, 1)
    submitted = [rec for rec in caplog.records if rec.getMessage().startswith("job submitted")]
    assert submitted, "no 'job submitted' record"
    rec = submitted[0]
    assert (rec.evaluation_id, rec.shard, rec.attempt, rec.job_name) == (eid, 0, 1, name)  # type: ignore[attr-defined]
    line = JsonFormatter().format(rec)
    assert json.loads(line)["job_name"] == name
    token = heartbeat_token(os.environ["HEARTBEAT_SECRET"], name)
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert token not in everything and os.environ["HEARTBEAT_SECRET"] not in everything
