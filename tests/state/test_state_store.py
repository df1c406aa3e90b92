"""`StateStore` (adapters/state/table_store.py) tested directly, method by method.

Every test takes `store` (tests/state/conftest.py): it runs on the in-memory TableClient
(milliseconds) and, marked `azurite`, on a fresh table in Azurite, with the same assertions, so
the store's promises hold on the real client and the fake stays honest. What is asserted is
what each method's docstring and the README promise: forward-only job states, one outcome per
task with the retry rule, ETag-guarded read-modify-writes that lose no update, idempotent
registration, the `active` partition, transactions of at most 100 operations, and property
sizes checked before anything reaches the service.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.data.tables import TableClient

from adapters.state.table_store import (
    ConcurrencyError,
    StateStore,
    eval_partition,
    shard_key,
    utcnow_iso,
)
from domain.jobs import FailureKind, JobState

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
EID = "a1b2c3d4e5f6"


def evaluation_row(eid: str = EID, *, at: datetime = AT, **extra: Any) -> dict[str, Any]:
    # The shape triggers/http_api.py writes.
    return {
        "evaluation_id": eid,
        "created_at": at.isoformat(),
        "state": "running",
        "policy": "resilient",
        "workers": 2,
        "vm_size": "Standard_D4s_v5",
        "spot": False,
        "tiers": "azureml,batch,vm",
        "task_count": 3,
        "shard_count": 2,
        "spent_usd": 0.0,
        "reserved_usd": 0.0,
        **extra,
    }


def create(
    store: StateStore,
    eid: str = EID,
    tasks: list[str] | None = None,
    *,
    at: datetime = AT,
    **extra: Any,
) -> list[str]:
    task_ids = tasks if tasks is not None else ["t1", "t2", "t3"]
    store.create_evaluation(
        evaluation_row(eid, at=at, **extra),
        [{"shard_index": i, "status": "waiting", "attempt": 0} for i in range(2)],
        [
            {"task_id": t, "domain": "chrome", "shard_index": n % 2, "outcome": "pending"}
            for n, t in enumerate(task_ids)
        ],
    )
    return task_ids


def job(name: str = "waa-a1b2c3d4e5f6-s0-a1", eid: str = EID, **extra: Any) -> dict[str, Any]:
    # The shape activities/attempts.py submit_job registers.
    return {
        "job_name": name,
        "evaluation_id": eid,
        "shard_index": 0,
        "attempt": 1,
        "instance_id": f"{eid}:s0",
        "tier": "azureml",
        "vm_size": "Standard_D4s_v5",
        "spot": False,
        "task_count": 2,
        "reserved_usd": 0.5,
        "submitted_at": utcnow_iso(AT),
        **extra,
    }


def task(store: StateStore, task_id: str, eid: str = EID) -> dict[str, Any]:
    rows = store.get_evaluation_rows(eid)
    assert rows is not None
    return next(t for t in rows["tasks"] if t["task_id"] == task_id)


def etag_of(table: TableClient, pk: str, rk: str) -> str:
    return str(table.get_entity(pk, rk).metadata["etag"])


class Interleaved:
    """A TableClient whose next call of one method first lets a competing writer run: the
    read-modify-write in flight then holds a stale ETag (or finds the row it wanted to create
    already there), the race the store's ETag loop exists for, made deterministic."""

    def __init__(self, table: TableClient, method: str, competitor: Callable[[], Any]) -> None:
        self._table = table
        self._method = method
        self._competitor: Callable[[], Any] | None = competitor
        self.refusals: list[Exception] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._table, name)
        if name != self._method:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._competitor is not None:
                competitor, self._competitor = self._competitor, None
                competitor()
            try:
                return attribute(*args, **kwargs)
            except (ResourceModifiedError, ResourceExistsError) as error:
                self.refusals.append(error)
                raise

        return call


# ----------------------------------------------------------------------------- evaluations
def test_create_evaluation_and_read_it_back_as_one_partition(store: StateStore) -> None:
    create(store, budget_usd=5.0)
    rows = store.get_evaluation_rows(EID)

    assert rows is not None
    evaluation = rows["evaluation"]
    assert {k: evaluation[k] for k in evaluation_row()} == evaluation_row()
    assert evaluation["budget_usd"] == 5.0
    assert (evaluation["PartitionKey"], evaluation["RowKey"]) == (eval_partition(EID), "evaluation")
    assert [s["RowKey"] for s in rows["shards"]] == [shard_key(0), shard_key(1)]
    assert [(t["task_id"], t["outcome"]) for t in rows["tasks"]] == [
        ("t1", "pending"),
        ("t2", "pending"),
        ("t3", "pending"),
    ]
    assert rows["jobs"] == [] and rows["breaker"] == {}
    assert store.get_evaluation(EID) == evaluation
    assert store.get_evaluation_rows("unknown") is None
    assert store.get_evaluation("unknown") is None


def test_create_evaluation_again_writes_the_same_rows(store: StateStore) -> None:
    create(store)
    first = store.get_evaluation_rows(EID)
    create(store)  # a retried request
    assert store.get_evaluation_rows(EID) == first
    assert [e["evaluation_id"] for e in store.list_evaluations(10)] == [EID]


def test_list_evaluations_newest_first(store: StateStore) -> None:
    for n, eid in enumerate(["e00000000001", "e00000000002", "e00000000003"]):
        create(store, eid, at=AT + timedelta(minutes=n))
    assert [e["evaluation_id"] for e in store.list_evaluations(10)] == [
        "e00000000003",
        "e00000000002",
        "e00000000001",
    ]
    assert [e["evaluation_id"] for e in store.list_evaluations(2)] == [
        "e00000000003",
        "e00000000002",
    ]


def test_create_evaluation_writes_transactions_of_at_most_100(
    store: StateStore, table: TableClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1 evaluation + 2 shards + 250 tasks = 253 rows of one partition. The fake refuses a
    # 101-operation transaction as the service does (Azurite breaks the connection).
    sent: list[int] = []
    submit = table.submit_transaction

    def spy(operations: Any, **kwargs: Any) -> Any:
        operations = list(operations)
        sent.append(len(operations))
        return submit(operations, **kwargs)

    monkeypatch.setattr(table, "submit_transaction", spy)
    task_ids = create(store, tasks=[f"task{n:03d}" for n in range(250)])

    assert sent == [100, 100, 53]
    rows = store.get_evaluation_rows(EID)
    assert rows is not None
    assert sorted(t["task_id"] for t in rows["tasks"]) == task_ids


def test_idempotency_key_maps_to_the_first_evaluation(store: StateStore) -> None:
    assert store.claim_idempotency_key("key-1", "e00000000001", AT) == "e00000000001"
    assert store.claim_idempotency_key("key-1", "e00000000002", AT) == "e00000000001"
    assert store.claim_idempotency_key("key-2", "e00000000002", AT) == "e00000000002"


def test_update_evaluation_and_shard(store: StateStore, table: TableClient) -> None:
    create(store)
    row = store.update_evaluation(EID, state="finalizing")
    assert row is not None and row["state"] == "finalizing"
    assert store.get_evaluation(EID)["state"] == "finalizing"  # type: ignore[index]
    # Setting what is already there writes nothing (the ETag stays).
    before = etag_of(table, eval_partition(EID), "evaluation")
    store.update_evaluation(EID, state="finalizing")
    assert etag_of(table, eval_partition(EID), "evaluation") == before
    assert store.update_evaluation("unknown", state="x") is None

    store.update_shard(EID, 1, tier="batch", attempt=2, status="submitted")
    rows = store.get_evaluation_rows(EID)
    assert rows is not None
    shard = rows["shards"][1]
    assert (shard["tier"], shard["attempt"], shard["status"]) == ("batch", 2, "submitted")


# ----------------------------------------------------------------------------- budget
def test_reserve_budget_up_to_the_budget(store: StateStore) -> None:
    create(store, budget_usd=1.0, spent_usd=0.2)
    assert store.reserve_budget(EID, 0.5) is True
    assert store.reserve_budget(EID, 0.3) is True  # spent + reserved reach the budget exactly
    assert store.reserve_budget(EID, 0.01) is False
    evaluation = store.get_evaluation(EID)
    assert evaluation is not None
    assert evaluation["reserved_usd"] == pytest.approx(0.8)


def test_reserve_budget_without_a_budget_always_grants(store: StateStore) -> None:
    create(store)
    assert all(store.reserve_budget(EID, 100.0) for _ in range(3))
    assert store.get_evaluation(EID)["reserved_usd"] == pytest.approx(300.0)  # type: ignore[index]


def test_reserve_budget_race_one_of_two_loses(table: TableClient) -> None:
    # Two reservations of 0.6 against a budget of 1.0. The second reads the row, then the
    # first commits before the second writes: the second's ETag is stale, its write is
    # refused, it re-reads, and now 0.6 + 0.6 would pass the budget.
    StateStore(table).create_evaluation(evaluation_row(budget_usd=1.0), [], [])
    first: list[bool] = []
    racing = Interleaved(
        table, "update_entity", lambda: first.append(StateStore(table).reserve_budget(EID, 0.6))
    )
    second = StateStore(racing).reserve_budget(EID, 0.6)  # type: ignore[arg-type]

    assert first == [True] and second is False
    assert [type(e) for e in racing.refusals] == [ResourceModifiedError]
    assert StateStore(table).get_evaluation(EID)["reserved_usd"] == pytest.approx(0.6)  # type: ignore[index]


def test_reserve_budget_under_concurrent_threads(store: StateStore) -> None:
    create(store, budget_usd=1.0)
    start = threading.Barrier(8)
    granted: list[bool] = []

    def reserve() -> None:
        start.wait()
        granted.append(store.reserve_budget(EID, 0.3))

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(granted) == [False] * 5 + [True] * 3
    assert store.get_evaluation(EID)["reserved_usd"] == pytest.approx(0.9)  # type: ignore[index]


def test_a_write_that_always_loses_gives_up(table: TableClient) -> None:
    StateStore(table).create_evaluation(evaluation_row(), [], [])
    bumps = 0

    class AlwaysStale(Interleaved):
        def __getattr__(self, name: str) -> Any:
            nonlocal bumps
            if name == "update_entity":
                bumps += 1
                StateStore(table).update_evaluation(EID, bump=bumps)
            return getattr(self._table, name)

    with pytest.raises(ConcurrencyError):
        StateStore(AlwaysStale(table, "", lambda: None)).update_evaluation(EID, state="x")  # type: ignore[arg-type]
    assert bumps == 20
    assert StateStore(table).get_evaluation(EID)["state"] == "running"  # type: ignore[index]


# ----------------------------------------------------------------------------- jobs
def test_register_job_writes_index_active_and_job_rows(store: StateStore) -> None:
    create(store)
    row, created = store.register_job(job())

    assert created is True
    assert row["state"] == JobState.SUBMITTED.value
    assert store.get_job(EID, job()["job_name"]) == row
    index = store.lookup_job(job()["job_name"])
    assert index is not None
    assert {
        k: index[k] for k in ("evaluation_id", "shard_index", "attempt", "instance_id", "tier")
    } == {k: job()[k] for k in ("evaluation_id", "shard_index", "attempt", "instance_id", "tier")}
    assert [a["RowKey"] for a in store.active_jobs()] == [job()["job_name"]]
    rows = store.get_evaluation_rows(EID)
    assert rows is not None and [j["job_name"] for j in rows["jobs"]] == [job()["job_name"]]


def test_register_job_is_idempotent_on_the_job_name(store: StateStore) -> None:
    create(store)
    store.register_job(job(reserved_usd=0.5))
    store.record_heartbeat(EID, job()["job_name"], AT)
    again, created = store.register_job(job(reserved_usd=9.0))  # a re-delivered activity

    assert created is False
    assert again["reserved_usd"] == 0.5 and again["state"] == JobState.RUNNING.value
    assert len(store.active_jobs()) == 1


def test_register_job_after_the_job_ended_does_not_make_it_active(store: StateStore) -> None:
    create(store)
    store.register_job(job())
    store.advance_job(EID, job()["job_name"], JobState.FAILED, at=AT)
    assert store.active_jobs() == []
    row, created = store.register_job(job())
    assert (row["state"], created) == (JobState.FAILED.value, False)
    assert store.active_jobs() == []


def test_advance_job_moves_forward_only(store: StateStore) -> None:
    create(store)
    name = job()["job_name"]
    store.register_job(job())

    row, changed = store.advance_job(EID, name, JobState.QUEUED, at=AT)
    assert changed and row is not None and row["state"] == "queued"
    row, changed = store.advance_job(EID, name, JobState.RUNNING, at=AT + timedelta(minutes=1))
    assert (
        changed and row is not None and row["running_at"] == utcnow_iso(AT + timedelta(minutes=1))
    )
    # A late, out-of-order event for an earlier state changes nothing.
    row, changed = store.advance_job(EID, name, JobState.PREPARING, at=AT + timedelta(minutes=2))
    assert not changed and row is not None and row["state"] == "running"
    row, changed = store.advance_job(EID, name, JobState.RUNNING, at=AT + timedelta(minutes=3))
    assert not changed

    row, changed = store.advance_job(
        EID,
        name,
        JobState.FAILED,
        at=AT + timedelta(minutes=4),
        detail="x" * 5000,
        failure_kind=FailureKind.PERMANENT_FOR_TIER,
    )
    assert changed and row is not None
    assert row["ended_at"] == utcnow_iso(AT + timedelta(minutes=4))
    assert row["detail"] == "x" * 2000
    assert row["failure_kind"] == FailureKind.PERMANENT_FOR_TIER.value
    assert store.active_jobs() == []  # terminal: out of the sweeper's partition

    # Terminal is final, even for another terminal state.
    row, changed = store.advance_job(EID, name, JobState.COMPLETED, at=AT + timedelta(minutes=5))
    assert not changed and row is not None and row["state"] == "failed"
    assert store.get_job(EID, name)["state"] == "failed"  # type: ignore[index]
    assert store.advance_job(EID, "no-such-job", JobState.RUNNING, at=AT) == (None, False)


def test_update_job_applies_a_change_and_drops_ended_jobs_from_active(store: StateStore) -> None:
    create(store)
    name = job()["job_name"]
    store.register_job(job())
    row, changed = store.update_job(EID, name, lambda r: None)
    assert not changed and row is not None and row["state"] == "submitted"
    row, changed = store.update_job(EID, name, lambda r: {**r, "backend_job_id": "b-1"})
    assert changed and store.get_job(EID, name)["backend_job_id"] == "b-1"  # type: ignore[index]
    assert len(store.active_jobs()) == 1
    store.update_job(EID, name, lambda r: {**r, "state": JobState.CANCELLED.value})
    assert store.active_jobs() == []


def test_record_heartbeat(store: StateStore) -> None:
    create(store)
    name = job()["job_name"]
    store.register_job(job())

    row = store.record_heartbeat(EID, name, AT)
    assert row is not None
    assert (row["state"], row["heartbeats"]) == ("running", 1)
    assert row["started_at"] == row["running_at"] == row["last_heartbeat_at"] == utcnow_iso(AT)

    later = AT + timedelta(seconds=30)
    row = store.record_heartbeat(EID, name, later)
    assert row is not None
    assert row["heartbeats"] == 2
    assert row["last_heartbeat_at"] == utcnow_iso(later)
    assert row["started_at"] == utcnow_iso(AT)  # the first sign of life stays the start

    store.advance_job(EID, name, JobState.COMPLETED, at=later)
    row = store.record_heartbeat(EID, name, later + timedelta(seconds=30))
    assert row is not None and (row["state"], row["heartbeats"]) == ("completed", 2)
    assert store.record_heartbeat(EID, "no-such-job", AT) is None


def test_record_heartbeat_keeps_an_earlier_running_at(store: StateStore) -> None:
    create(store)
    name = job()["job_name"]
    store.register_job(job())
    store.advance_job(EID, name, JobState.RUNNING, at=AT)  # the backend said so first
    row = store.record_heartbeat(EID, name, AT + timedelta(minutes=1))
    assert row is not None
    assert row["running_at"] == utcnow_iso(AT)
    assert row["started_at"] == utcnow_iso(AT + timedelta(minutes=1))


def test_active_partition_and_cancel_pending(store: StateStore) -> None:
    create(store)
    names = [job(f"waa-{EID}-s{i}-a1")["job_name"] for i in range(2)]
    for i, name in enumerate(names):
        store.register_job(job(name, shard_index=i))
    assert sorted(a["RowKey"] for a in store.active_jobs()) == sorted(names)
    assert {a["evaluation_id"] for a in store.active_jobs()} == {EID}

    store.remove_active(names[0])
    store.remove_active(names[0])  # already gone: not an error
    store.remove_active("never-registered")
    assert [a["RowKey"] for a in store.active_jobs()] == [names[1]]

    # A job whose cancel failed stays (or comes back) in the active partition although its
    # row is terminal, so the sweeper retries the cancel.
    store.advance_job(EID, names[1], JobState.CANCELLED, at=AT)
    assert store.active_jobs() == []
    store.mark_cancel_pending(EID, names[1])
    assert [a["RowKey"] for a in store.active_jobs()] == [names[1]]
    assert store.get_job(EID, names[1])["cancel_pending"] is True  # type: ignore[index]
    store.clear_cancel_pending(EID, names[1])
    assert store.active_jobs() == []
    assert store.get_job(EID, names[1])["cancel_pending"] is False  # type: ignore[index]


# ----------------------------------------------------------------------------- tasks
def result(store: StateStore, task_id: str, outcome: str, job_name: str, **kw: Any) -> bool:
    return store.record_task_result(
        EID,
        task_id,
        outcome=outcome,
        reason=kw.pop("reason", f"{outcome} in {job_name}"),
        score=kw.pop("score", None),
        attempt=kw.pop("attempt", 1),
        job_name=job_name,
        duration_seconds=kw.pop("duration_seconds", None),
        at=kw.pop("at", AT),
        **kw,
    )


def test_the_first_final_result_wins(store: StateStore) -> None:
    create(store)
    assert result(store, "t1", "completed", "job-a", score=1.0, duration_seconds=420.0) is True
    row = task(store, "t1")
    assert (row["outcome"], row["score"], row["duration_seconds"]) == ("completed", 1.0, 420.0)
    assert (row["attempt"], row["job_name"], row["finished_at"]) == (1, "job-a", utcnow_iso(AT))

    # A duplicate, and a late result of an older attempt, change nothing.
    assert result(store, "t1", "completed", "job-a", score=0.0) is False
    assert result(store, "t1", "failed", "job-b", attempt=2) is False
    assert result(store, "t1", "not_run", "") is False
    assert task(store, "t1") == row

    # A run that scored 0 is completed, not failed; the score is kept.
    assert result(store, "t2", "completed", "job-a", score=0.0) is True
    assert task(store, "t2")["score"] == 0.0
    assert result(store, "no-such-task", "completed", "job-a") is False


def test_a_failed_run_is_retried_up_to_the_limit(store: StateStore) -> None:
    create(store)
    # retry_limit=1: the first failure leaves the task pending with its failure noted ...
    assert result(store, "t1", "failed", "job-a", reason="agent crashed", retry_limit=1) is False
    row = task(store, "t1")
    assert (row["outcome"], row["failed_in"], row["last_failure"]) == (
        "pending",
        "job-a",
        "agent crashed",
    )
    # ... and a failure in another job is final.
    assert result(store, "t1", "failed", "job-b", reason="crashed again", retry_limit=1) is True
    row = task(store, "t1")
    assert (row["outcome"], row["reason"], row["job_name"]) == ("failed", "crashed again", "job-b")


def test_a_duplicated_failure_is_not_a_second_failure(store: StateStore) -> None:
    create(store)
    assert result(store, "t1", "failed", "job-a", retry_limit=2) is False
    row = task(store, "t1")
    assert result(store, "t1", "failed", "job-a", reason="again", retry_limit=2) is False
    assert task(store, "t1") == row


def test_a_duplicated_failure_at_the_retry_limit_is_not_a_second_failure(
    store: StateStore,
) -> None:
    create(store)
    assert result(store, "t1", "failed", "job-a", retry_limit=1) is False
    row = task(store, "t1")
    assert result(store, "t1", "failed", "job-a", reason="again", retry_limit=1) is False
    assert task(store, "t1") == row


def test_a_retried_task_can_still_complete(store: StateStore) -> None:
    create(store)
    assert result(store, "t1", "failed", "job-a", retry_limit=2) is False
    assert result(store, "t1", "failed", "job-b", retry_limit=2) is False
    assert task(store, "t1")["failed_in"] == "job-a,job-b"
    assert result(store, "t1", "completed", "job-c", attempt=3, score=1.0, retry_limit=2) is True
    assert task(store, "t1")["outcome"] == "completed"
    # Without retries a failure is final at once.
    assert result(store, "t2", "failed", "job-a", retry_limit=0) is True
    assert task(store, "t2")["outcome"] == "failed"


def test_a_long_reason_is_cut_to_2000_characters(store: StateStore) -> None:
    create(store)
    result(store, "t1", "failed", "job-a", reason="r" * 50_000)
    assert task(store, "t1")["reason"] == "r" * 2000
    result(store, "t2", "failed", "job-a", reason="f" * 50_000, retry_limit=1)
    assert task(store, "t2")["last_failure"] == "f" * 2000


def test_close_tasks_gives_only_open_tasks_the_outcome(store: StateStore) -> None:
    create(store, tasks=["t1", "t2", "t3", "t4"])
    result(store, "t1", "completed", "job-a", score=1.0)
    store.mark_tasks_running(EID, ["t2"], attempt=1, job_name="job-a")
    result(store, "t3", "failed", "job-a", retry_limit=1)  # pending, one retry left

    closed = store.close_tasks(
        EID, ["t1", "t2", "t3", "t4"], outcome="not_run", reason="budget exhausted", at=AT
    )

    assert closed == 3
    assert task(store, "t1")["outcome"] == "completed"
    for task_id in ("t2", "t3", "t4"):
        row = task(store, task_id)
        assert (row["outcome"], row["reason"], row["attempt"], row["job_name"]) == (
            "not_run",
            "budget exhausted",
            0,
            "",
        )
    assert store.close_tasks(EID, ["t1", "t2"], outcome="not_run", reason="again", at=AT) == 0


def test_tasks_without_outcome(store: StateStore) -> None:
    create(store, tasks=["t1", "t2", "t3"])
    result(store, "t2", "completed", "job-a")
    store.mark_tasks_running(EID, ["t3"], attempt=1, job_name="job-a")
    assert store.tasks_without_outcome(EID, ["t3", "t2", "t1", "unknown"]) == [
        "t3",
        "t1",
        "unknown",
    ]


def test_mark_tasks_running_and_release_them(store: StateStore, table: TableClient) -> None:
    create(store, tasks=["t1", "t2", "t3", "t4"])
    result(store, "t4", "completed", "job-0", attempt=0)
    store.mark_tasks_running(EID, ["t1", "t2", "t4"], attempt=1, job_name="job-a")
    store.mark_tasks_running(EID, ["t3"], attempt=1, job_name="job-b")

    assert [(task(store, t)["outcome"], task(store, t)["job_name"]) for t in ("t1", "t2")] == [
        ("running", "job-a"),
        ("running", "job-a"),
    ]
    assert task(store, "t4")["outcome"] == "completed"  # a final outcome is never reopened
    # Marking again for the same job writes nothing.
    before = etag_of(table, eval_partition(EID), "task-t1")
    store.mark_tasks_running(EID, ["t1"], attempt=1, job_name="job-a")
    assert etag_of(table, eval_partition(EID), "task-t1") == before

    result(store, "t2", "completed", "job-a")
    store.release_tasks(EID, "job-a")  # job-a ended without reporting t1

    assert task(store, "t1")["outcome"] == "pending"
    assert task(store, "t2")["outcome"] == "completed"
    assert (task(store, "t3")["outcome"], task(store, "t3")["job_name"]) == ("running", "job-b")


# ----------------------------------------------------------------------------- breaker
def test_record_tier_failure_counts_each_job_once(store: StateStore) -> None:
    create(store)
    assert store.record_tier_failure(EID, "azureml", "job-a") == {"azureml": 1}
    assert store.record_tier_failure(EID, "azureml", "job-a") == {"azureml": 1}  # re-delivered
    assert store.record_tier_failure(EID, "azureml", "job-b") == {"azureml": 2}
    assert store.record_tier_failure(EID, "batch", "job-c") == {"azureml": 2, "batch": 1}
    rows = store.get_evaluation_rows(EID)
    assert rows is not None and rows["breaker"] == {"azureml": 2, "batch": 1}


def test_record_tier_failure_race_on_the_first_failure(table: TableClient) -> None:
    # Both find no breaker row; the competitor creates it first, so this call's create is
    # refused, it retries as an update, and both failures are counted.
    StateStore(table).create_evaluation(evaluation_row(), [], [])
    racing = Interleaved(
        table,
        "create_entity",
        lambda: StateStore(table).record_tier_failure(EID, "azureml", "job-b"),
    )
    counted = StateStore(racing).record_tier_failure(EID, "azureml", "job-a")  # type: ignore[arg-type]
    assert counted == {"azureml": 2}
    assert [type(e) for e in racing.refusals] == [ResourceExistsError]


# ----------------------------------------------------------------------------- sizes
def test_string_properties_are_checked_before_they_are_sent(store: StateStore) -> None:
    create(store)
    # 32,000 characters is the store's own limit, under the service's 32,768 (64 KiB UTF-16).
    row, _ = store.register_job(job("job-fits", note="n" * 32_000))
    assert len(row["note"]) == 32_000
    assert len(store.get_job(EID, "job-fits")["note"]) == 32_000  # type: ignore[index]

    with pytest.raises(ValueError, match="'note' is 32001 characters"):
        store.register_job(job("job-too-big", note="n" * 32_001))
    assert store.get_job(EID, "job-too-big") is None
    with pytest.raises(ValueError, match="characters"):
        store.update_evaluation(EID, summary="s" * 40_000)
    assert "summary" not in store.get_evaluation(EID)  # type: ignore[operator]
    with pytest.raises(ValueError, match="characters"):
        create(store, "e00000000009", tasks=["t" * 40_000])


def test_property_count_is_checked_before_it_is_sent(store: StateStore) -> None:
    create(store)
    fields = {f"f{i}": i for i in range(250)}
    with pytest.raises(ValueError, match="properties"):
        store.update_evaluation(EID, **fields)
    assert "f0" not in store.get_evaluation(EID)  # type: ignore[operator]


def test_a_cancel_pending_job_stays_active_through_later_writes(store: StateStore) -> None:
    create(store)
    name = job(f"waa-{EID}-s0-a1")["job_name"]
    store.register_job(job(name))
    store.advance_job(EID, name, JobState.FAILED, at=AT)
    store.mark_cancel_pending(EID, name)
    # finish_attempt goes on to record the attempt's outcome and cost on the row.
    store.update_job(EID, name, lambda r: {**r, "attempt_outcome": "start_timeout"})
    assert [a["RowKey"] for a in store.active_jobs()] == [name]
    store.clear_cancel_pending(EID, name)
    assert store.active_jobs() == []
