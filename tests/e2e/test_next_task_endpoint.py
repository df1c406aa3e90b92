"""POST /api/heartbeats, kind next_task (the task queue, issue 10), on the devhost: the app runs
through the real Python worker code, the state in Azurite. The evaluation's rows and its queue
jobs' rows (`queue`, `tail_copy_factor`, `expected_tasks`, as submit_job registers them) are
written here through the app's own store, so each rule of the endpoint is asked directly: the
claim in queue order and the slot row's task in progress, the idempotent re-ask, exit on an
empty queue / a cancelled evaluation / a close deadline, 409 for a static shard's job, 403 for
an ended job, two jobs racing over HTTP for the last task (one gets it), a tail copy, and a
late result of a job that lost its claim changing nothing."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests

from adapters import runtime
from adapters.state.table_store import utcnow_iso
from devhost.simulation import Simulation
from domain.jobs import JobState
from domain.messages import heartbeat_token
from tests.support.queue_rows import queue_evaluation, queue_job, store

pytestmark = pytest.mark.azurite

MakeSimulation = Callable[..., Simulation]
EID = "q0e1d2c3b4a5"


def _sim(make_simulation: MakeSimulation) -> Simulation:
    # Real time: the devhost does not skip ahead to sweeps, which would look for these hand-made
    # jobs in the simulated cloud.
    return make_simulation(time_mode="real")


_store = store


def _evaluation(tasks: dict[str, str], *, slots: int = 3, eid: str = EID) -> None:
    queue_evaluation(eid, tasks, slots=slots)


def _job(slot: int, attempt: int = 1, *, eid: str = EID, **row: Any) -> str:
    return queue_job(eid, slot, attempt, **row)


def _post(sim: Simulation, job: str, kind: str = "next_task", **extra: Any) -> requests.Response:
    token = heartbeat_token(os.environ["HEARTBEAT_SECRET"], job)
    return requests.post(
        f"{sim.base_url}/api/heartbeats",
        json={"job_name": job, "kind": kind, **extra},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def _ask(sim: Simulation, job: str) -> dict[str, Any]:
    r = _post(sim, job)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["kind"]) == (True, "next_task")
    return body


def _result(sim: Simulation, job: str, task_id: str, status: str = "completed") -> None:
    r = _post(
        sim,
        job,
        "task_result",
        task_result={"task_id": task_id, "status": status, "score": 1.0, "reason": "r"},
    )
    assert r.status_code == 202, r.text


def _task(task_id: str) -> dict[str, Any]:
    row = _store().get_task(EID, task_id)
    assert row is not None
    return row


def _slot(slot: int) -> dict[str, Any]:
    rows = _store().get_evaluation_rows(EID)
    assert rows is not None
    return next(s for s in rows["shards"] if int(s["shard_index"]) == slot)


def test_a_job_drains_the_queue_longest_first_then_exits(make_simulation: MakeSimulation) -> None:
    sim = _sim(make_simulation)
    _evaluation({"n1": "notepad", "v1": "vs_code"})
    job = _job(1, attempt=2)

    first = _ask(sim, job)
    assert {k: first[k] for k in ("task_id", "domain", "duplicate", "exit", "reason")} == {
        "task_id": "v1",
        "domain": "vs_code",
        "duplicate": False,
        "exit": False,
        "reason": "",
    }
    row = _task("v1")
    assert (row["outcome"], row["job_name"], row["attempt"]) == ("running", job, 2)
    slot = _slot(1)
    assert slot["current_task"] == "v1" and slot["current_task_since"] == row["claimed_at"]
    # The answer was lost, the runner asks again: the same task.
    assert _ask(sim, job)["task_id"] == "v1"
    assert _task("v1")["claimed_at"] == row["claimed_at"]

    _result(sim, job, "v1")
    second = _ask(sim, job)
    assert (second["task_id"], second["domain"]) == ("n1", "notepad")
    assert _slot(1)["current_task"] == "n1"
    _result(sim, job, "n1")

    done = _ask(sim, job)
    assert (done["task_id"], done["exit"], done["reason"]) == (None, True, "queue empty")
    assert (_slot(1)["current_task"], _slot(1)["current_task_since"]) == ("", "")
    assert {_task(t)["outcome"] for t in ("v1", "n1")} == {"completed"}
    # The message counted as a heartbeat too.
    job_row = _store().get_job(EID, job)
    assert job_row is not None and int(job_row["heartbeats"]) >= 5


def test_a_static_shards_job_gets_409_and_an_ended_job_403(
    make_simulation: MakeSimulation,
) -> None:
    sim = _sim(make_simulation)
    _evaluation({"c1": "chrome"})
    static = _job(0, queue=False)
    r = _post(sim, static)
    assert r.status_code == 409 and r.json()["field"] == "job_name", r.text
    assert _task("c1")["outcome"] == "pending"

    ended = _job(1)
    _store().advance_job(EID, ended, JobState.FAILED, at=runtime.now(), detail="evicted")
    r = _post(sim, ended)
    assert r.status_code == 403, r.text
    forged = requests.post(
        f"{sim.base_url}/api/heartbeats",
        json={"job_name": ended, "kind": "next_task"},
        headers={"Authorization": "Bearer " + "0" * 64},
        timeout=30,
    )
    assert forged.status_code == 403
    assert _task("c1")["outcome"] == "pending"


def test_a_cancelled_evaluation_and_a_close_deadline_mean_exit(
    make_simulation: MakeSimulation,
) -> None:
    sim = _sim(make_simulation)
    _evaluation({"v1": "vs_code", "n1": "notepad"})
    now = runtime.now()
    # 15 minutes left of a 1-hour timeout: vs_code (2 x 9.5 min) does not fit, notepad does.
    closing = _job(0, submitted=now - timedelta(minutes=45), timeout_seconds=3600)
    assert _ask(sim, closing)["task_id"] == "n1"
    _result(sim, closing, "n1")
    late = _ask(sim, closing)
    assert (late["task_id"], late["exit"], late["reason"]) == (None, True, "deadline")
    assert _task("v1")["outcome"] == "pending"

    fresh = _job(1)
    _store().update_evaluation(EID, cancel_requested=True)
    cancelled = _ask(sim, fresh)
    assert (cancelled["task_id"], cancelled["exit"]) == (None, True)
    assert cancelled["reason"] == "cancelled by user"
    assert _task("v1")["outcome"] == "pending"  # nothing claimed


def test_two_jobs_racing_for_the_last_task_one_gets_it(make_simulation: MakeSimulation) -> None:
    sim = _sim(make_simulation)
    _evaluation({"last": "chrome"})
    jobs = [_job(0), _job(1)]
    start = threading.Barrier(len(jobs))
    answers: dict[str, dict[str, Any]] = {}

    def ask(job: str) -> None:
        start.wait()
        answers[job] = _ask(sim, job)

    threads = [threading.Thread(target=ask, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == 2
    winners = [job for job, a in answers.items() if a["task_id"] == "last"]
    assert len(winners) == 1, answers
    loser = next(job for job in jobs if job not in winners)
    assert answers[loser]["exit"] is True and answers[loser]["reason"] == "queue empty"
    assert _task("last")["job_name"] == winners[0]
    slot_of = {job: int(job.rsplit("-s", 1)[1].split("-")[0]) for job in jobs}
    assert _slot(slot_of[winners[0]])["current_task"] == "last"
    assert _slot(slot_of[loser]).get("current_task", "") == ""


def test_a_late_result_of_a_job_that_lost_its_claim_changes_nothing(
    make_simulation: MakeSimulation,
) -> None:
    sim = _sim(make_simulation)
    _evaluation({"v1": "vs_code"})
    first = _job(0)
    assert _ask(sim, first)["task_id"] == "v1"
    # The control plane released the task from the first job (its finish_attempt ran while
    # the job's last message was still in flight), and another slot claimed it.
    _store().release_tasks(EID, first, "heartbeats stopped")
    second = _job(1)
    assert _ask(sim, second)["task_id"] == "v1"
    _result(sim, first, "v1", "failed")
    row = _task("v1")
    assert (row["outcome"], row["job_name"], row.get("failed_in", "")) == ("running", second, "")
    _result(sim, second, "v1")
    assert (_task("v1")["outcome"], _task("v1")["job_name"]) == ("completed", second)


def test_an_idle_job_runs_a_tail_copy_of_an_overdue_task(make_simulation: MakeSimulation) -> None:
    sim = _sim(make_simulation)
    _evaluation({"c1": "chrome"})
    primary = _job(0)
    assert _ask(sim, primary)["task_id"] == "c1"
    # The task has run for an hour, far past 1.5 x its 7.5 expected minutes.
    _store()._mutate(
        f"eval-{EID}",
        "task-c1",
        lambda r: {**r, "claimed_at": utcnow_iso(runtime.now() - timedelta(hours=1))},
    )
    without = _job(1)  # a job of an evaluation without tail copies
    assert _ask(sim, without)["exit"] is True
    idle = _job(2, tail_copy_factor=1.5)
    copy = _ask(sim, idle)
    assert (copy["task_id"], copy["duplicate"], copy["exit"]) == ("c1", True, False)
    row = _task("c1")
    assert (row["job_name"], row["copy_job"]) == (primary, idle)
    assert _slot(2)["current_task"] == "c1"
    assert _slot(2)["current_task_since"] == row["copy_claimed_at"]
    # The copy finishes first: its result is the task's.
    _result(sim, idle, "c1")
    assert (_task("c1")["outcome"], _task("c1")["job_name"]) == ("completed", idle)
