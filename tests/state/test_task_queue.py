"""The task queue in the state store (`StateStore.claim` / `claim_task`, `release_tasks`,
`record_task_result` on claimed rows), on the in-memory table and on Azurite (`store`,
tests/state/conftest.py): claims in queue order with one partition query and ETag writes, the
idempotent re-ask, a lost race moving on to the next candidate, two claimers racing for the
last task (threads: exactly one gets it), tail copies, release with its count and the poison
limit, and a late result of a job that lost its claim changing nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient

from adapters.state.table_store import ConcurrencyError, StateStore, eval_partition
from domain import bounds, queue
from tests.state.test_state_store import AT, EID, Interleaved, etag_of, evaluation_row, task

A, B, C = "waa-a1b2c3d4e5f6-s0-a1", "waa-a1b2c3d4e5f6-s1-a1", "waa-a1b2c3d4e5f6-s2-a1"


def create(store: StateStore, tasks: dict[str, str]) -> None:
    """An evaluation whose task rows are `tasks` (task id -> domain), all pending."""
    store.create_evaluation(
        evaluation_row(distribution="queue"),
        [{"shard_index": i, "status": "waiting", "attempt": 0} for i in range(3)],
        [
            {"task_id": t, "domain": d, "shard_index": 0, "outcome": "pending"}
            for t, d in tasks.items()
        ],
    )


def claim(store: StateStore, job: str, *, now: datetime = AT, **kw: Any) -> dict[str, Any] | None:
    kw.setdefault("attempt", 1)
    kw.setdefault("tail_copy_factor", 0.0)
    return store.claim(EID, job, now=now, **kw).row


def result(store: StateStore, task_id: str, outcome: str, job: str, **kw: Any) -> bool:
    kw.setdefault("retry_limit", 0)
    return store.record_task_result(
        EID,
        task_id,
        outcome=outcome,
        reason=kw.pop("reason", ""),
        score=1.0 if outcome == "completed" else 0.0,
        attempt=1,
        job_name=job,
        duration_seconds=60.0,
        at=AT,
        **kw,
    )


def test_claims_go_longest_first_one_task_per_job(store: StateStore, table: TableClient) -> None:
    create(store, {"n1": "notepad", "v1": "vs_code", "c1": "chrome", "c0": "chrome"})
    first = claim(store, A, attempt=2)
    assert first is not None and first["task_id"] == "v1"
    stored = task(store, "v1")
    assert (stored["outcome"], stored["job_name"], stored["attempt"]) == ("running", A, 2)
    assert stored["claimed_at"] == AT.isoformat()
    # Asked again (the answer was lost): the same task, and nothing written.
    before = etag_of(table, eval_partition(EID), "task-v1")
    again = claim(store, A, attempt=2)
    assert again is not None and again["task_id"] == "v1"
    assert etag_of(table, eval_partition(EID), "task-v1") == before
    # Other jobs take the next ones in order: chrome (ties by id), then notepad.
    got = [claim(store, job) for job in (B, C)]
    assert [g["task_id"] for g in got if g] == ["c0", "c1"]
    # A finishes, asks again: the last one; then the queue is empty for it.
    assert result(store, "v1", "completed", A)
    last = claim(store, A)
    assert last is not None and last["task_id"] == "n1"
    assert result(store, "n1", "completed", A)
    empty = store.claim(EID, A, attempt=1, now=AT, tail_copy_factor=0.0)
    assert (empty.row, empty.reason) == (None, queue.QUEUE_EMPTY)


def test_a_job_does_not_claim_a_task_it_failed(store: StateStore) -> None:
    create(store, {"v1": "vs_code", "n1": "notepad"})
    assert claim(store, A)["task_id"] == "v1"  # type: ignore[index]
    result(store, "v1", "failed", A, retry_limit=1, reason="crashed")  # pending again
    row = task(store, "v1")
    assert (row["outcome"], row["failed_in"], row["last_failure"]) == ("pending", A, "crashed")
    assert claim(store, A)["task_id"] == "n1"  # type: ignore[index]
    assert claim(store, B)["task_id"] == "v1"  # type: ignore[index]


def test_the_deadline_leaves_long_tasks_to_a_fresh_job(store: StateStore) -> None:
    create(store, {"v1": "vs_code", "n1": "notepad"})
    deadline = AT + timedelta(minutes=15)  # 19 min needed for vs_code, 10 for notepad
    got = claim(store, A, deadline=deadline)
    assert got is not None and got["task_id"] == "n1"
    result(store, "n1", "completed", A)
    late = store.claim(EID, A, attempt=1, now=AT, tail_copy_factor=0.0, deadline=deadline)
    assert (late.row, late.reason) == (None, queue.DEADLINE)
    assert task(store, "v1")["outcome"] == "pending"


def test_a_lost_race_moves_on_to_the_next_candidate(table: TableClient) -> None:
    store = StateStore(table)
    create(store, {"v1": "vs_code", "n1": "notepad"})
    # B claims v1 between A's query and A's read of the row.
    racing = StateStore(
        Interleaved(table, "get_entity", lambda: claim(store, B))  # type: ignore[arg-type]
    )
    got = claim(racing, A)
    assert got is not None and got["task_id"] == "n1"
    assert (task(store, "v1")["job_name"], task(store, "n1")["job_name"]) == (B, A)


def test_a_lost_etag_write_is_retried_on_the_fresh_row(table: TableClient) -> None:
    store = StateStore(table)
    create(store, {"v1": "vs_code"})
    # Something else writes the row (an upload record, say) between A's read and its write:
    # the ETag refuses A's write; read again, still pending, A claims it.
    racing = Interleaved(
        table,
        "update_entity",
        lambda: table.update_entity(
            {"PartitionKey": eval_partition(EID), "RowKey": "task-v1", "touched": True}
        ),
    )
    got = claim(StateStore(racing), A)  # type: ignore[arg-type]
    assert got is not None and got["task_id"] == "v1"
    assert len(racing.refusals) == 1
    row = task(store, "v1")
    assert (row["job_name"], row["touched"]) == (A, True)


@pytest.mark.parametrize("round_", range(3))
def test_two_claimers_racing_for_the_last_task_one_gets_it(store: StateStore, round_: int) -> None:
    create(store, {"last": "chrome"})
    start = threading.Barrier(2)
    got: dict[str, dict[str, Any] | None] = {}
    errors: list[BaseException] = []

    def ask(job: str) -> None:
        try:
            start.wait()
            got[job] = claim(store, job)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=ask, args=(job,)) for job in (A, B)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    winners = [job for job, row in got.items() if row is not None]
    assert len(got) == 2 and len(winners) == 1, got
    assert task(store, "last")["job_name"] == winners[0]
    assert task(store, "last")["outcome"] == "running"


def test_many_claimers_each_get_a_different_task(store: StateStore) -> None:
    tasks = {f"t{i:02d}": ("vs_code", "chrome", "notepad")[i % 3] for i in range(12)}
    create(store, tasks)
    jobs = [f"waa-a1b2c3d4e5f6-s{i}-a1" for i in range(8)]
    start = threading.Barrier(len(jobs))
    got: dict[str, str] = {}

    def ask(job: str) -> None:
        start.wait()
        row = claim(store, job)
        assert row is not None
        got[job] = str(row["task_id"])

    threads = [threading.Thread(target=ask, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == len(jobs) and len(set(got.values())) == len(jobs)
    for job, task_id in got.items():
        assert task(store, task_id)["job_name"] == job
    # The longest ones went first: every vs_code and chrome task (8 of them) is taken.
    assert {tasks[t] for t in got.values()} == {"vs_code", "chrome"}


def test_a_claimer_that_keeps_losing_gives_up_bounded(table: TableClient) -> None:
    store = StateStore(table)
    n = bounds.QUEUE_CLAIM_CANDIDATES + 2
    create(store, {f"t{i:02d}": "chrome" for i in range(n)})

    class AlwaysBeaten:
        """Before each read of a row, another job claims that very row."""

        def __init__(self) -> None:
            self.others = 0

        def __getattr__(self, name: str) -> Any:
            attribute = getattr(table, name)
            if name != "get_entity":
                return attribute

            def call(pk: str, rk: str, **kw: Any) -> Any:
                if rk.startswith("task-"):
                    self.others += 1
                    store._mutate(
                        pk,
                        rk,
                        lambda r: queue.claimed(
                            r, job_name=f"waa-other-s{self.others}-a1", attempt=1, now=AT
                        ),
                    )
                return attribute(pk, rk, **kw)

            return call

    beaten = AlwaysBeaten()
    with pytest.raises(ConcurrencyError):
        claim(StateStore(beaten), A)  # type: ignore[arg-type]
    assert beaten.others == bounds.QUEUE_CLAIM_CANDIDATES


def test_tail_copy_when_nothing_is_pending(store: StateStore) -> None:
    create(store, {"c1": "chrome", "n1": "notepad"})
    assert claim(store, A)["task_id"] == "c1"  # type: ignore[index]
    assert claim(store, B)["task_id"] == "n1"  # type: ignore[index]
    assert result(store, "n1", "completed", B)
    # 1.5 x 7.5 min = 11.25 min: not yet at 11 min, a copy at 12.
    at11, at12 = AT + timedelta(minutes=11), AT + timedelta(minutes=12)
    assert claim(store, B, now=at11, tail_copy_factor=1.5) is None
    assert claim(store, B, now=at12, tail_copy_factor=0.0) is None  # no copies asked for
    copy = store.claim(EID, B, attempt=3, now=at12, tail_copy_factor=1.5)
    assert copy.row is not None and copy.duplicate and copy.new
    row = task(store, "c1")
    assert (row["job_name"], row["copy_job"], row["copy_attempt"]) == (A, B, 3)
    assert row["copy_claimed_at"] == at12.isoformat()
    # B asks again: the same copy; C gets nothing (one copy at most).
    again = store.claim(EID, B, attempt=3, now=at12, tail_copy_factor=1.5)
    assert again.row is not None and again.duplicate and not again.new
    assert claim(store, C, now=at12, tail_copy_factor=1.5) is None
    # The copy reports first: its result is the task's; A's later one changes nothing.
    assert result(store, "c1", "completed", B)
    assert not result(store, "c1", "failed", A)
    done = task(store, "c1")
    assert (done["outcome"], done["job_name"]) == ("completed", B)


def test_release_of_the_copy_holder_clears_the_copy_only(store: StateStore) -> None:
    create(store, {"c1": "chrome"})
    claim(store, A)
    store.claim(EID, B, attempt=2, now=AT + timedelta(hours=1), tail_copy_factor=1.5)
    store.release_tasks(EID, B, "evicted")
    row = task(store, "c1")
    assert (row["outcome"], row["job_name"], row["copy_job"]) == ("running", A, "")
    assert not row.get("released")
    # Then A ends too: pending again, counted once.
    store.release_tasks(EID, A, "heartbeats stopped")
    row = task(store, "c1")
    assert (row["outcome"], row["released"], row["last_release"]) == (
        "pending",
        1,
        "heartbeats stopped",
    )


def test_release_of_the_first_job_hands_the_task_to_its_copy(store: StateStore) -> None:
    create(store, {"c1": "chrome"})
    claim(store, A)
    store.claim(EID, B, attempt=2, now=AT + timedelta(hours=1), tail_copy_factor=1.5)
    store.release_tasks(EID, A, "evicted")
    row = task(store, "c1")
    assert (row["outcome"], row["job_name"], row["attempt"], row["copy_job"]) == (
        "running",
        B,
        2,
        "",
    )
    assert result(store, "c1", "completed", B)


def test_a_task_whose_jobs_keep_ending_is_not_run_at_the_limit(store: StateStore) -> None:
    create(store, {"poison": "vs_code", "ok": "notepad"})
    for n in range(1, bounds.QUEUE_MAX_RELEASES + 1):
        job = f"waa-a1b2c3d4e5f6-s0-a{n}"
        got = claim(store, job, attempt=n)
        assert got is not None and got["task_id"] == "poison"
        store.release_tasks(EID, job, f"container lost #{n}", at=AT + timedelta(hours=n))
    row = task(store, "poison")
    assert row["outcome"] == "not_run" and row["released"] == bounds.QUEUE_MAX_RELEASES
    assert row["reason"] == "not run: 3 jobs ended while running it (last: container lost #3)"
    assert row["finished_at"] == (AT + timedelta(hours=3)).isoformat()
    # The queue goes on with the rest.
    assert claim(store, "waa-a1b2c3d4e5f6-s0-a9")["task_id"] == "ok"  # type: ignore[index]


def test_a_failed_run_counts_against_retries_not_releases(store: StateStore) -> None:
    create(store, {"v1": "vs_code"})
    claim(store, A)
    result(store, "v1", "failed", A, retry_limit=1)
    store.release_tasks(EID, A, "runner finished")  # the job ends after reporting: no release
    row = task(store, "v1")
    assert (row["outcome"], row["failed_in"]) == ("pending", A)
    assert not row.get("released")


def test_a_late_result_of_a_job_that_lost_its_claim_changes_nothing(store: StateStore) -> None:
    create(store, {"v1": "vs_code"})
    claim(store, A)
    store.release_tasks(EID, A, "cancelled")
    claim(store, B, attempt=1)
    assert not result(store, "v1", "completed", A)
    assert not result(store, "v1", "failed", A, retry_limit=2)
    row = task(store, "v1")
    assert (row["outcome"], row["job_name"], row.get("failed_in", "")) == ("running", B, "")
    assert result(store, "v1", "completed", B)
    # And once final, nobody's later result changes it.
    assert not result(store, "v1", "failed", A)
    assert task(store, "v1")["outcome"] == "completed"


def test_static_shard_release_is_unchanged(store: StateStore) -> None:
    create(store, {"t1": "chrome", "t2": "chrome"})
    for n in range(1, bounds.QUEUE_MAX_RELEASES + 2):
        job = f"waa-a1b2c3d4e5f6-s0-a{n}"
        store.mark_tasks_running(EID, ["t1", "t2"], attempt=n, job_name=job)
        store.release_tasks(EID, job, "x")
    for t in ("t1", "t2"):
        row = task(store, t)
        assert row["outcome"] == "pending" and not row.get("released")


def test_claimed_rows_outlive_a_new_store(store: StateStore, table: TableClient) -> None:
    # A restart (a new process, a new store on the same table) finds the claims as they were.
    create(store, {"v1": "vs_code", "c1": "chrome"})
    claim(store, A)
    fresh = StateStore(table)
    again = fresh.claim(EID, A, attempt=1, now=datetime.now(UTC), tail_copy_factor=0.0).row
    assert again is not None and again["task_id"] == "v1"
    assert claim(fresh, B)["task_id"] == "c1"  # type: ignore[index]
