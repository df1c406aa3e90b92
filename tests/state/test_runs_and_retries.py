"""Runs of several trials and retry links in the state store (issue 9, part 8), on the fake and
on Azurite: a run key "<task>#<k>" is a task row of its own although "#" may not appear in a
Table key, and `retried_by` grows once per retry however often it is linked."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableClient

from adapters.state import views
from adapters.state.table_store import TASK_PREFIX, StateStore, eval_partition, task_row_key
from tests.state.test_state_store import AT, EID, evaluation_row, task

RUNS = ["t1#0", "t2#0", "t1#1", "t2#1"]


def create(store: StateStore, eid: str = EID, tasks: list[str] = RUNS, **extra: object) -> None:
    # The rows triggers/http_api.py writes, one task row per run.
    store.create_evaluation(
        evaluation_row(eid, task_count=len(tasks), trials=2, **extra),
        [
            {
                "shard_index": i,
                "task_count": 2,
                "expected_minutes": 15.0,
                "vm_size": "Standard_D4s_v5",
                "status": "waiting",
                "attempt": 0,
            }
            for i in range(2)
        ],
        [
            {"task_id": t, "domain": "chrome", "shard_index": n % 2, "outcome": "pending"}
            for n, t in enumerate(tasks)
        ],
    )


def test_a_run_key_is_not_a_table_key_as_it_is(table: TableClient) -> None:
    # The Table service refuses "#" in a key (the fake as Azurite): hence `task_row_key`.
    with pytest.raises((HttpResponseError, ValueError)):
        table.create_entity({"PartitionKey": "p", "RowKey": TASK_PREFIX + "t1#0"})
    assert task_row_key("t1#0") == "task-t1~0" and task_row_key("t1") == "task-t1"


def test_each_run_has_its_own_row_and_outcome(store: StateStore) -> None:
    create(store)
    store.mark_tasks_running(EID, ["t1#0", "t1#1"], attempt=1, job_name="waa-x-s0-a1")
    assert task(store, "t1#1")["outcome"] == "running"
    assert task(store, "t2#1")["outcome"] == "pending"
    recorded = store.record_task_result(
        EID,
        "t1#1",
        outcome="completed",
        reason="",
        score=1.0,
        attempt=1,
        job_name="waa-x-s0-a1",
        duration_seconds=60.0,
        at=AT,
    )
    assert recorded
    assert task(store, "t1#1")["score"] == 1.0 and task(store, "t1#0")["outcome"] == "running"
    assert store.tasks_without_outcome(EID, RUNS) == ["t1#0", "t2#0", "t2#1"]
    closed = store.close_tasks(EID, RUNS, outcome="not_run", reason="shard ended", at=AT)
    assert closed == 3
    rows = store.get_evaluation_rows(EID)
    assert rows is not None
    view = views.evaluation_view(rows, AT)
    by_run = {t["task_id"]: t for t in view["tasks"]}
    assert set(by_run) == set(RUNS)
    assert (by_run["t1#1"]["task"], by_run["t1#1"]["trial"]) == ("t1", 1)
    assert view["counts"]["total"] == 4 and view["counts"]["completed"] == 1


def test_retries_are_linked_once_each_in_order(store: StateStore, table: TableClient) -> None:
    create(store)
    create(store, "retry1", retry_of=EID)
    assert store.link_retry(EID, "retry1") == ["retry1"]
    assert store.link_retry(EID, "retry1") == ["retry1"]  # a repeated request links once
    assert store.link_retry(EID, "retry2") == ["retry1", "retry2"]
    assert table.get_entity(eval_partition(EID), "evaluation")["retried_by"] == "retry1,retry2"
    rows = store.get_evaluation_rows(EID)
    retry = store.get_evaluation_rows("retry1")
    assert rows is not None and retry is not None
    source_view = views.evaluation_view(rows, AT, include_tasks=False)
    retry_view = views.evaluation_view(retry, AT, include_tasks=False)
    assert (source_view["retry_of"], source_view["retried_by"]) == (None, ["retry1", "retry2"])
    assert (retry_view["retry_of"], retry_view["retried_by"]) == (EID, [])
    assert store.link_retry("no-such-evaluation", "x") == []
