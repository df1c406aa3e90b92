"""The status document of a queue-distributed evaluation (issue 10), from rows written through
the state store: the evaluation's `distribution`, and per slot (`shard-NNN` row) the task its
job runs now (`current_task`, `current_task_since`, which the next_task endpoint writes on a
claim) while that is true of the task rows."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from adapters.state import views
from adapters.state.table_store import StateStore, utcnow_iso
from domain.jobs import JobState
from domain.requests import parse_evaluation_request, request_settings
from tests.state.test_state_store import AT, EID, evaluation_row, job

JOB0 = "waa-a1b2c3d4e5f6-s0-a1"
JOB1 = "waa-a1b2c3d4e5f6-s1-a1"
SINCE = utcnow_iso(AT + timedelta(minutes=20))


def create_queue(store: StateStore, **extra: Any) -> None:
    # Queue rows: one `shard-NNN` row per slot; the task rows are the queue.
    store.create_evaluation(
        evaluation_row(distribution="queue", **extra),
        [{"shard_index": i, "task_count": 2, "status": "waiting", "attempt": 0} for i in range(2)],
        # `shard_index` on a queue's task row is the planned slot, a hint only (the ETA's
        # projection reads it); any slot's job may claim the task.
        [
            {"task_id": t, "domain": "chrome", "shard_index": n % 2, "outcome": "pending"}
            for n, t in enumerate(("t1", "t2", "t3", "t4"))
        ],
    )
    for slot, name in enumerate((JOB0, JOB1)):
        store.register_job(job(name, shard_index=slot, instance_id=f"{EID}:w{slot}", queue=True))
        store.update_shard(EID, slot, job_name=name, attempt=1, status="running", tier="azureml")


def claim(store: StateStore, slot: int, job_name: str, task_id: str) -> None:
    # What a claim leaves behind: the task row running under the job, the slot row naming it.
    store.mark_tasks_running(EID, [task_id], attempt=1, job_name=job_name)
    store.update_shard(EID, slot, current_task=task_id, current_task_since=SINCE)


def view_of(store: StateStore) -> dict[str, Any]:
    rows = store.get_evaluation_rows(EID)
    assert rows is not None
    return views.evaluation_view(rows, AT + timedelta(minutes=30))


def slots(view: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    return [(s["current_task"], s["current_task_since"]) for s in view["shards"]]


def test_each_slot_shows_the_task_it_runs(store: StateStore) -> None:
    create_queue(store)
    view = view_of(store)
    assert view["distribution"] == "queue"
    assert slots(view) == [(None, None), (None, None)]
    claim(store, 0, JOB0, "t1")
    claim(store, 1, JOB1, "t2")
    view = view_of(store)
    assert slots(view) == [("t1", SINCE), ("t2", SINCE)]
    assert [t["outcome"] for t in view["tasks"]] == ["running", "pending", "running", "pending"]
    assert view["counts"]["running"] == 2


def test_a_finished_or_released_task_is_no_longer_in_progress(store: StateStore) -> None:
    create_queue(store)
    claim(store, 0, JOB0, "t1")
    claim(store, 1, JOB1, "t2")
    # The result came in: slot 0 is between tasks although its row still names t1.
    assert store.record_task_result(
        EID,
        "t1",
        outcome="completed",
        reason="",
        score=1.0,
        attempt=1,
        job_name=JOB0,
        duration_seconds=60.0,
        at=AT,
    )
    assert slots(view_of(store)) == [(None, None), ("t2", SINCE)]
    # Slot 1's job ended: it runs nothing, and t2 goes back to the queue.
    store.advance_job(EID, JOB1, JOB1_END := JobState.FAILED, at=AT)
    assert JOB1_END.is_terminal
    assert slots(view_of(store)) == [(None, None), (None, None)]
    store.release_tasks(EID, JOB1)
    assert slots(view_of(store)) == [(None, None), (None, None)]


def test_a_task_claimed_by_another_job_is_not_this_slots(store: StateStore) -> None:
    create_queue(store)
    claim(store, 0, JOB0, "t1")
    # Slot 1's row names t1 (a stale write) but t1 runs under slot 0's job.
    store.update_shard(EID, 1, current_task="t1", current_task_since=SINCE)
    assert slots(view_of(store)) == [("t1", SINCE), (None, None)]


def test_a_tail_copy_is_shown_on_the_slot_that_runs_it() -> None:
    # The copy holder is the task row's `copy_job` (written by the claim code).
    rows: dict[str, Any] = {
        "evaluation": evaluation_row(distribution="queue"),
        "shards": [
            {"shard_index": 0, "job_name": JOB0, "current_task": "t1", "current_task_since": "a"},
            {"shard_index": 1, "job_name": JOB1, "current_task": "t1", "current_task_since": "b"},
        ],
        "tasks": [
            {
                "task_id": "t1",
                "domain": "chrome",
                "shard_index": 0,
                "outcome": "running",
                "job_name": JOB0,
                "copy_job": JOB1,
            }
        ],
        "jobs": [
            {**job(JOB0), "state": "running"},
            {**job(JOB1, shard_index=1), "state": "running"},
        ],
        "breaker": {},
        "alerts": [],
    }
    view = views.evaluation_view(rows, AT)
    assert slots(view) == [("t1", "a"), ("t1", "b")]


def test_the_distribution_of_older_rows(store: StateStore) -> None:
    # A row without the column: its stored settings say, else it ran static shards.
    assert views.distribution(evaluation_row()) == "static"
    request = parse_evaluation_request(json.dumps({"tasks": ["a"]}).encode(), 10)
    assert views.distribution(evaluation_row(request=request_settings(request))) == "queue"
    assert views.distribution(evaluation_row(distribution="static")) == "static"
    store.create_evaluation(
        evaluation_row(),
        [{"shard_index": 0, "task_count": 1}],
        [{"task_id": "t1", "domain": "chrome", "shard_index": 0, "outcome": "pending"}],
    )
    view = view_of(store)
    assert view["distribution"] == "static"
    assert slots(view) == [(None, None)]
