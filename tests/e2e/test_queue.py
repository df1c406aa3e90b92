"""End-to-end scenarios of the task queue (issue 10): the app on the devhost (virtual time),
state in Azurite, the simulated Azure running queue jobs that ask `next_task` over HTTP.

Each scenario ends with `assert_invariants` (one outcome per task, never two active jobs per
slot, in the job rows and in the cloud's ledger) plus its own claims: a job that dies mid-task
gives its task back; a job that never starts costs its slot one start deadline while the others
drain the queue; two jobs racing for the last task, one gets it; a late result from a cancelled
job changes nothing; the random fault profiles; a restart of the devhost with claims
outstanding.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import requests

from adapters import runtime
from adapters.compute.simulated import HangAfter, NeverStarts, RunnerCrash
from adapters.state.table_store import parse_time
from devhost.simulation import Simulation
from domain.jobs import JobSpec, JobState
from domain.messages import RunnerFailureCode, heartbeat_token
from domain.naming import job_name
from tests.e2e.scenario_support import (
    VirtualWatch,
    assert_invariants,
    attempt_outcomes,
    ledger_of,
    restart,
    start,
    store_rows,
)

pytestmark = pytest.mark.azurite

MakeSimulation = Callable[..., Simulation]
SMOKE = {"task_set": "waa-smoke", "workers": 3}  # distribution "queue", the default
# Real seconds an evaluation may take (virtual time skips): a safety net, not a timed assertion.
WAIT = 180.0


@pytest.fixture(autouse=True)
def _fresh_heartbeat_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # A known secret for every scenario, so tests can mint genuine tokens.
    monkeypatch.setenv("HEARTBEAT_SECRET", f"e2e-{uuid.uuid4().hex}")


def _first(slot: int, attempt: int = 1) -> Callable[[JobSpec], bool]:
    return lambda spec: spec.shard_index == slot and spec.attempt == attempt


def _time(value: str | None) -> datetime:
    parsed = parse_time(value)
    assert parsed is not None, value
    return parsed


def _tasks(eid: str) -> dict[str, dict[str, Any]]:
    return {t["task_id"]: t for t in store_rows(eid)["tasks"]}


def _held_by(eid: str, job: str) -> list[str]:
    return [
        t
        for t, row in _tasks(eid).items()
        if row["outcome"] == "running" and row["job_name"] == job
    ]


def _token(job: str) -> str:
    secret = runtime.services().settings.heartbeat_secret.get_secret_value()
    return heartbeat_token(secret, job)


def _post(sim: Simulation, job: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{sim.base_url}/api/heartbeats",
        json={"job_name": job, **body},
        headers={"Authorization": f"Bearer {_token(job)}"},
        timeout=60,
    )


# --------------------------------------------------------------------------------------------


def test_a_job_dying_mid_task_gives_it_back_and_another_job_finishes_it(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    eid = start(sim, SMOKE)
    victim = job_name(eid, 0, 1)

    def mid_second_task() -> bool:
        # The victim finished one task (its result recorded) and now runs another.
        entry = sim.cloud.ledger.get(victim)
        return bool(entry and entry.task_spans and _held_by(eid, victim))

    def crash() -> dict[str, Any]:
        held = _held_by(eid, victim)
        done = [t for t, row in _tasks(eid).items() if row["outcome"] == "completed"]
        sim.cloud.inject(victim, RunnerCrash(code=RunnerFailureCode.TASK_CRASHED))
        return {"held": held, "done": [t for t in done if _tasks(eid)[t]["job_name"] == victim]}

    seen = VirtualWatch(sim.host.clock, mid_second_task, crash).wait(WAIT)
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert final["state"] == "completed"
    assert {t["outcome"] for t in rows["tasks"]} == {"completed"}
    by_id = {t["task_id"]: t for t in rows["tasks"]}
    (task,) = seen["held"]
    # The task the dead job held was given back and completed by another job ...
    assert by_id[task]["job_name"] != victim, by_id[task]
    assert int(by_id[task].get("released") or 0) == 1, by_id[task]
    # ... without counting as the task's own failure (an infrastructure end).
    assert not by_id[task].get("failed_in"), by_id[task]
    # The dead job's finished results stand.
    assert seen["done"], "the victim had finished a task before it died"
    for t in seen["done"]:
        assert (by_id[t]["outcome"], by_id[t]["job_name"]) == ("completed", victim), by_id[t]
    dead = next(j for j in rows["jobs"] if j["job_name"] == victim)
    assert dead["state"] == JobState.FAILED.value, dead
    ledger = {e.job_name: e for e in ledger_of(sim.cloud, eid)}
    # (The app cancels it on the runner's failure report, racing the container's own exit.)
    assert ledger[victim].state in (JobState.FAILED, JobState.CANCELLED), ledger[victim]
    assert [s[0] for s in ledger[victim].task_spans] == seen["done"]
    # Exactly one job ran the given-back task to its end, and it was not the victim.
    ran_it = [e.job_name for e in ledger.values() if any(s[0] == task for s in e.task_spans)]
    assert ran_it == [by_id[task]["job_name"]], ran_it


def test_a_job_that_never_starts_costs_its_slot_one_start_deadline(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(_first(0), NeverStarts(), times=1)
    eid = start(sim, SMOKE)
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    assert final["state"] == "completed"
    assert {t["outcome"] for t in rows["tasks"]} == {"completed"}
    stuck_name = job_name(eid, 0, 1)
    ledger = {e.job_name: e for e in ledger_of(sim.cloud, eid)}
    stuck = ledger[stuck_name]
    # Cancelled at its start deadline (10 min), never started, claimed and ran nothing.
    assert stuck.state is JobState.CANCELLED and stuck.started_at is None
    assert stuck.ended_at is not None
    waited = (stuck.ended_at - stuck.submitted_at).total_seconds()
    assert 600 <= waited < 660, waited
    assert stuck.tasks_run == 0 and stuck.task_spans == ()
    assert all(t["job_name"] != stuck_name for t in rows["tasks"])
    assert all(not t.get("released") for t in rows["tasks"]), "nothing was claimed and released"
    # Meanwhile the other slots drained the queue: their jobs ran tasks inside that deadline.
    during = [
        (e.job_name, task)
        for e in ledger.values()
        if e.shard_index != 0
        for task, began, _end in e.task_spans
        if stuck.submitted_at <= began < stuck.ended_at
    ]
    assert {name for name, _ in during} >= {job_name(eid, 1, 1), job_name(eid, 2, 1)}, during
    # One start deadline: the slot's first attempt ended on it, no later one did.
    closed = attempt_outcomes(sim, eid, 0)
    assert [a["outcome"] for a in closed][:1] == ["start_timeout"], closed
    assert [a["outcome"] for a in closed].count("start_timeout") == 1, closed


def test_two_jobs_racing_for_the_last_task_one_gets_it(make_simulation: MakeSimulation) -> None:
    sim = make_simulation(profile="none")
    # Neither slot's first job ever starts: both job rows exist (queue jobs, registered by the
    # app's submit_job, their tokens genuine) and nothing claims a task but this test. Two
    # tasks (the slots are capped by the task count): the first job takes and reports the
    # longer one, then both race for the last.
    sim.cloud.script(lambda spec: spec.attempt == 1, NeverStarts())
    eid = start(sim, {"tasks": {"vs_code": ["first"], "chrome": ["last"]}, "workers": 2})
    jobs = [job_name(eid, 0, 1), job_name(eid, 1, 1)]
    store = runtime.services().store

    def both_submitted() -> bool:
        return all(store.get_job(eid, j) is not None for j in jobs)

    def report(job: str, task: str) -> None:
        r = _post(
            sim,
            job,
            {
                "kind": "task_result",
                "task_result": {"task_id": task, "status": "completed", "score": 1.0},
            },
        )
        assert r.status_code == 202, r.text

    def race() -> dict[str, Any]:
        first = _post(sim, jobs[0], {"kind": "next_task"})
        assert first.status_code == 200 and first.json()["task_id"] == "first", first.text
        report(jobs[0], "first")
        barrier = threading.Barrier(len(jobs))
        answers: dict[str, requests.Response] = {}

        def ask(job: str) -> None:
            barrier.wait()
            answers[job] = _post(sim, job, {"kind": "next_task"})

        threads = [threading.Thread(target=ask, args=(j,)) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        bodies = {j: r.json() for j, r in answers.items() if r.status_code == 200}
        assert len(bodies) == 2, {j: (r.status_code, r.text) for j, r in answers.items()}
        winners = [j for j, b in bodies.items() if b["task_id"] == "last"]
        assert len(winners) == 1, bodies
        (winner,) = winners
        loser = next(j for j in jobs if j != winner)
        assert bodies[loser]["exit"] is True and bodies[loser]["reason"] == "queue empty", bodies
        row = store.get_task(eid, "last")
        assert row is not None and (row["outcome"], row["job_name"]) == ("running", winner)
        # The winner runs it and reports; the result is recorded as the winner's.
        report(winner, "last")
        return {"winner": winner, "loser": loser}

    raced = VirtualWatch(sim.host.clock, both_submitted, race).wait(WAIT)
    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)

    by_id = {t["task_id"]: t for t in rows["tasks"]}
    assert (by_id["first"]["outcome"], by_id["first"]["job_name"]) == ("completed", jobs[0])
    task = by_id["last"]
    assert (task["outcome"], task["job_name"]) == ("completed", raced["winner"]), task
    assert float(task["score"]) == 1.0
    assert final["state"] == "completed"


def test_a_late_result_from_a_cancelled_job_changes_nothing(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    # Slot 0's first job hangs holding its second task; stuck detection cancels it after 5
    # silent minutes, its claim is released and another job runs the task.
    sim.cloud.script(_first(0), HangAfter(1), times=1)
    eid = start(sim, {**SMOKE, "heartbeat_timeout_minutes": 5})
    hung = job_name(eid, 0, 1)
    store = runtime.services().store

    def hung_holding() -> bool:
        entry = sim.cloud.ledger.get(hung)
        return bool(entry and entry.fault_at is not None and _held_by(eid, hung))

    (task,) = VirtualWatch(sim.host.clock, hung_holding, lambda: _held_by(eid, hung)).wait(WAIT)

    def redone() -> bool:
        job = store.get_job(eid, hung)
        row = store.get_task(eid, task)
        return bool(
            job
            and JobState(job["state"]).is_terminal
            and row
            and row["outcome"] == "completed"
            and row["job_name"] != hung
        )

    def late_result() -> dict[str, Any]:
        before = store.get_task(eid, task)
        assert before is not None
        r = _post(
            sim,
            hung,
            {
                "kind": "task_result",
                "task_result": {"task_id": task, "status": "failed", "score": 0.0, "reason": "x"},
            },
        )
        after = store.get_task(eid, task)
        return {"status": r.status_code, "text": r.text, "before": before, "after": after}

    late = VirtualWatch(sim.host.clock, redone, late_result).wait(WAIT)
    assert late["status"] == 403, late["text"]
    keys = ("outcome", "score", "job_name", "attempt", "reason")
    assert {k: late["after"].get(k) for k in keys} == {k: late["before"].get(k) for k in keys}

    final = sim.wait(eid, timeout=WAIT)
    rows = assert_invariants(sim, eid, final)
    assert final["state"] == "completed"
    assert {t["outcome"] for t in rows["tasks"]} == {"completed"}
    row = next(t for t in rows["tasks"] if t["task_id"] == task)
    assert {k: row.get(k) for k in keys} == {k: late["before"].get(k) for k in keys}
    cancelled = next(j for j in rows["jobs"] if j["job_name"] == hung)
    assert cancelled["stuck"] is True, cancelled
    assert sim.cloud.ledger[hung].state is JobState.CANCELLED


@pytest.mark.parametrize(("profile", "seed"), [("seed", 3), ("chaos", 5)])
def test_random_fault_profiles_keep_the_invariants_on_the_full_set(
    make_simulation: MakeSimulation, profile: str, seed: int
) -> None:
    sim = make_simulation(profile=profile, seed=seed)
    # The key fixes the evaluation id, and with it every draw of the simulated cloud.
    body = {
        "task_set": "waa-full",
        "workers": 8,
        "spot": True,
        "idempotency_key": f"queue-{profile}-{seed}",
    }
    eid = start(sim, body)
    final = sim.wait(eid, timeout=4 * WAIT)
    rows = assert_invariants(sim, eid, final)
    assert final["state"] == "completed"
    assert len(rows["tasks"]) == 154
    # Every job was a queue job, and a task's recorded result is from a job that ran it.
    ledger = {e.job_name: e for e in ledger_of(sim.cloud, eid)}
    assert all(e.queue for e in ledger.values())
    for t in rows["tasks"]:
        if t["outcome"] == "completed":
            ran = ledger[t["job_name"]].task_spans
            assert any(s[0] == t["task_id"] for s in ran), (t, ran)


def test_devhost_restart_with_claims_outstanding(
    make_simulation: MakeSimulation, azurite_connection_string: str
) -> None:
    prefix, hub = f"rq{uuid.uuid4().hex[:8]}", f"hub{uuid.uuid4().hex[:8]}"
    sim = make_simulation(profile="none", store="table", table_prefix=prefix, task_hub=hub)
    eid = start(sim, SMOKE)

    def claims_outstanding() -> bool:
        rows = store_rows(eid)["tasks"]
        done = sum(t["outcome"] == "completed" for t in rows)
        return done >= 3 and sum(t["outcome"] == "running" for t in rows) >= 2

    VirtualWatch(sim.host.clock, claims_outstanding, lambda: None).wait(WAIT)
    before = _tasks(eid)
    old_jobs = {j["job_name"] for j in store_rows(eid)["jobs"]}
    held = {t: row["job_name"] for t, row in before.items() if row["outcome"] == "running"}
    assert len(held) >= 2
    sim2 = restart(sim, azurite_connection_string, table_prefix=prefix, task_hub=hub)
    try:
        final = sim2.wait(eid, timeout=2 * WAIT)
        rows = assert_invariants(sim2, eid, final)
        new_ledger = ledger_of(sim2.cloud, eid)
    finally:
        sim2.stop()

    assert final["state"] == "completed"
    assert {t["outcome"] for t in rows["tasks"]} == {"completed"}
    by_id = {t["task_id"]: t for t in rows["tasks"]}
    jobs = {j["job_name"]: j for j in rows["jobs"]}
    # The old host's jobs vanished with it: the new host ended every one of them.
    for name in old_jobs:
        assert JobState(jobs[name]["state"]).is_terminal, jobs[name]
    # The outstanding claims were released and other (new) jobs finished those tasks.
    for task, old in held.items():
        assert by_id[task]["job_name"] not in old_jobs, (task, old, by_id[task])
        assert int(by_id[task].get("released") or 0) >= 1, by_id[task]
    # What was done before the restart stands, and no task was run again to a second outcome.
    done_before = {t for t, row in before.items() if row["outcome"] == "completed"}
    for task in done_before:
        assert by_id[task]["job_name"] == before[task]["job_name"], (task, by_id[task])
    rerun = [s[0] for e in new_ledger for s in e.task_spans if s[0] in done_before]
    assert not rerun, rerun
    ran_after = [s[0] for e in new_ledger for s in e.task_spans]
    assert len(ran_after) == len(set(ran_after)), ran_after
