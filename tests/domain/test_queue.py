"""The task queue's rules (domain/queue.py, and the queue's parts of domain/outcomes.py), as
pure functions: ordering, claim, the idempotent re-ask, tail copies, release with its count
and the poison-task limit, late results of a job that lost its claim, and the exit decisions
of next_task (queue empty, cancelled, deadline)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain import bounds, queue
from domain.outcomes import (
    ResultVerdict,
    judge_result,
    not_run_after_releases,
    task_released,
    task_retried,
)
from domain.planning import DOMAIN_MINUTES, UNKNOWN_DOMAIN_MINUTES

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
A, B, C = "waa-e1-s0-a1", "waa-e1-s1-a1", "waa-e1-s2-a1"


def row(task_id: str, domain: str = "chrome", outcome: str = "pending", **extra: Any) -> dict:
    return {
        "RowKey": f"task-{task_id}",
        "task_id": task_id,
        "domain": domain,
        "outcome": outcome,
        **extra,
    }


def running(task_id: str, job: str, since: datetime, domain: str = "chrome", **extra: Any):
    return row(
        task_id,
        domain,
        "running",
        job_name=job,
        attempt=1,
        claimed_at=since.isoformat(),
        **extra,
    )


def plan(rows: list[dict], job: str = A, **kw: Any) -> queue.Claim | list[queue.Candidate]:
    kw.setdefault("now", T0)
    kw.setdefault("tail_copy_factor", 0.0)
    kw.setdefault("deadline", None)
    return queue.plan(rows, job, **kw)


# ----------------------------------------------------------------------------- ordering
def test_longest_expected_first_ties_by_task_id() -> None:
    rows = [
        row("n2", "notepad"),
        row("c1", "chrome"),
        row("x9", "libreoffice_calc"),
        row("n1", "notepad"),
        row("u1", "some_new_app"),
        row("v1", "vs_code"),
    ]
    order = [r["task_id"] for r in queue.queue_order(rows)]
    # vs_code and libreoffice_calc are both 9.5 min: by task id; unknown domains count 8.
    assert DOMAIN_MINUTES["vs_code"] == DOMAIN_MINUTES["libreoffice_calc"]
    assert order == ["v1", "x9", "u1", "c1", "n1", "n2"]
    assert queue.row_minutes(row("u1", "some_new_app")) == UNKNOWN_DOMAIN_MINUTES
    found = plan(rows)
    assert isinstance(found, list)
    assert [c.row["task_id"] for c in found] == order
    assert not any(c.duplicate for c in found)


# ----------------------------------------------------------------------------- claim
def test_claim_takes_a_pending_row_the_job_has_not_failed() -> None:
    fresh = row("t1")
    taken = queue.claimed(fresh, job_name=A, attempt=3, now=T0)
    assert taken is not None
    assert (taken["outcome"], taken["job_name"], taken["attempt"]) == ("running", A, 3)
    assert taken["claimed_at"] == T0.isoformat()
    assert (taken["copy_job"], taken["copy_claimed_at"]) == ("", "")
    # Not claimable: running (another claimer won the race), final, or failed by this job.
    assert queue.claimed(taken, job_name=B, attempt=1, now=T0) is None
    for outcome in ("completed", "failed", "not_run"):
        assert queue.claimed(row("t1", outcome=outcome), job_name=A, attempt=1, now=T0) is None
    failed = row("t1", failed_in=f"{A},{C}")
    assert queue.claimed(failed, job_name=A, attempt=1, now=T0) is None
    assert queue.claimed(failed, job_name=B, attempt=1, now=T0) is not None


def test_the_candidates_skip_rows_the_job_failed_and_rows_not_pending() -> None:
    rows = [
        row("t1", "vs_code", failed_in=A),
        row("t2", "chrome"),
        row("t3", "notepad", "completed"),
        running("t4", B, T0),
    ]
    found = plan(rows)
    assert isinstance(found, list) and [c.row["task_id"] for c in found] == ["t2"]
    # Another job may take the one A failed.
    found_b = plan(rows, C)
    assert isinstance(found_b, list) and [c.row["task_id"] for c in found_b] == ["t1", "t2"]


def test_a_job_asking_again_gets_the_task_it_holds_without_a_write() -> None:
    rows = [row("t1", "vs_code"), running("t2", A, T0 - timedelta(minutes=1))]
    again = plan(rows)
    assert isinstance(again, queue.Claim)
    assert again.row is not None and again.row["task_id"] == "t2"
    assert (again.duplicate, again.new, again.exit) == (False, False, False)
    # Also when its deadline has come close, and also as a tail copy.
    late = plan(rows, deadline=T0 + timedelta(minutes=1))
    assert isinstance(late, queue.Claim) and late.row is not None
    copy = running("t3", B, T0 - timedelta(hours=1), copy_job=C, copy_attempt=2)
    as_copy = plan([copy], C)
    assert isinstance(as_copy, queue.Claim) and as_copy.row is not None
    assert as_copy.duplicate is True
    assert queue.answer(as_copy)["duplicate"] is True


# ----------------------------------------------------------------------------- exits
def test_nothing_to_claim_is_queue_empty() -> None:
    for rows in ([], [row("t1", outcome="completed")], [running("t1", B, T0)]):
        empty = plan(rows, tail_copy_factor=1.5)
        assert isinstance(empty, queue.Claim)
        assert (empty.row, empty.reason, empty.exit) == (None, queue.QUEUE_EMPTY, True)
        assert queue.answer(empty) == {
            "task_id": None,
            "domain": "",
            "duplicate": False,
            "exit": True,
            "reason": "queue empty",
        }
    # Only rows this job failed: nothing for it.
    only_failed = plan([row("t1", failed_in=A)])
    assert isinstance(only_failed, queue.Claim) and only_failed.reason == queue.QUEUE_EMPTY


def test_a_cancelled_evaluation_exits_whatever_the_queue_holds() -> None:
    found = plan([running("t1", A, T0)])
    assert isinstance(found, queue.Claim)
    answer = queue.answer(found, cancel_requested=True)
    assert answer["exit"] is True and answer["task_id"] is None
    assert answer["reason"] == queue.CANCELLED


def test_the_deadline_rule() -> None:
    job = {"submitted_at": T0.isoformat(), "job_timeout_seconds": 3600.0}
    deadline = queue.job_deadline(job)
    assert deadline == T0 + timedelta(hours=1)
    assert queue.job_deadline({"submitted_at": T0.isoformat()}) is None
    assert queue.job_deadline({"job_timeout_seconds": 60}) is None
    vs_code = row("t1", "vs_code")  # 9.5 min: needs 19 min before the deadline
    notepad = row("t2", "notepad")  # 5 min: needs 10
    need = timedelta(minutes=2 * DOMAIN_MINUTES["vs_code"])
    assert queue.fits(vs_code, deadline=deadline, now=deadline - need)
    assert not queue.fits(vs_code, deadline=deadline, now=deadline - need + timedelta(seconds=1))
    assert queue.fits(vs_code, deadline=None, now=T0 + timedelta(days=9))

    # 15 minutes left: the long task is left to a fresh job, the short one still fits.
    now = deadline - timedelta(minutes=15)
    found = plan([vs_code, notepad], now=now, deadline=deadline)
    assert isinstance(found, list) and [c.row["task_id"] for c in found] == ["t2"]
    # 5 minutes left: nothing fits.
    closing = plan([vs_code, notepad], now=deadline - timedelta(minutes=5), deadline=deadline)
    assert isinstance(closing, queue.Claim) and closing.reason == queue.DEADLINE
    assert queue.answer(closing)["reason"] == "deadline"


# ----------------------------------------------------------------------------- tail copies
def test_a_tail_copy_only_when_nothing_is_pending_and_the_task_is_overdue() -> None:
    minutes = DOMAIN_MINUTES["chrome"]
    overdue = running("t1", B, T0 - timedelta(minutes=1.5 * minutes + 1))
    on_time = running("t2", B, T0 - timedelta(minutes=1.5 * minutes - 1))
    found = plan([overdue, on_time], tail_copy_factor=1.5)
    assert isinstance(found, list)
    assert [(c.row["task_id"], c.duplicate) for c in found] == [("t1", True)]
    # Without the option (factor 0) no copy; with a pending row, the pending row.
    off = plan([overdue, on_time], tail_copy_factor=0.0)
    assert isinstance(off, queue.Claim) and off.reason == queue.QUEUE_EMPTY
    with_pending = plan([overdue, row("t3", "notepad")], tail_copy_factor=1.5)
    assert isinstance(with_pending, list)
    assert [(c.row["task_id"], c.duplicate) for c in with_pending] == [("t3", False)]
    # A pending row the job may not take (it failed it) still means "not idle yet": no copy.
    failed_pending = plan([overdue, row("t3", failed_in=A)], tail_copy_factor=1.5)
    assert isinstance(failed_pending, queue.Claim) and failed_pending.reason == "queue empty"


def test_the_copy_rule_row_by_row() -> None:
    since = T0 - timedelta(hours=1)
    base = running("t1", B, since)
    kw: dict[str, Any] = {"job_name": A, "now": T0, "tail_copy_factor": 1.5}
    assert queue.copy_due(base, **kw)
    copy = queue.copied(base, attempt=4, **kw)
    assert copy is not None
    assert (copy["copy_job"], copy["copy_attempt"], copy["copy_claimed_at"]) == (
        A,
        4,
        T0.isoformat(),
    )
    assert (copy["job_name"], copy["outcome"]) == (B, "running")  # the first job keeps it
    assert not queue.copy_due(copy, **{**kw, "job_name": C})  # one copy at most
    assert not queue.copy_due(base, **{**kw, "job_name": B})  # not of its own task
    assert not queue.copy_due({**base, "failed_in": A}, **kw)
    static = {k: v for k, v in base.items() if k != "claimed_at"}  # a static shard's task
    assert not queue.copy_due(static, **kw)
    assert not queue.copy_due(row("t1"), **kw)
    assert not queue.copy_due(base, **{**kw, "tail_copy_factor": 0.0})
    assert queue.copied(copy, attempt=1, **{**kw, "job_name": C}) is None
    # The copy's take of the candidate, and the primary's.
    assert queue.take(queue.Candidate(base, True), base, attempt=4, **kw) == copy
    taken = queue.take(queue.Candidate(row("t2"), False), row("t2"), attempt=2, **kw)
    assert taken is not None and taken["job_name"] == A


# ----------------------------------------------------------------------------- release
def test_release_counts_and_the_poison_limit() -> None:
    claimed = running("t1", A, T0)
    once = task_released(claimed, A, "container lost")
    assert once is not None
    assert (once["outcome"], once["released"], once["last_release"]) == (
        "pending",
        1,
        "container lost",
    )
    assert task_released(claimed, B) is None  # not B's task
    assert task_released(once, A) is None  # already released
    # Released QUEUE_MAX_RELEASES times by jobs that ended under it: not run, with the reason.
    current = once
    for n in range(2, bounds.QUEUE_MAX_RELEASES + 1):
        current = queue.claimed(current, job_name=f"waa-e1-s0-a{n}", attempt=n, now=T0)
        assert current is not None
        released = task_released(current, f"waa-e1-s0-a{n}", "heartbeats stopped", at=T0)
        assert released is not None
        current = released
    assert bounds.QUEUE_MAX_RELEASES == 3
    assert current["outcome"] == "not_run" and current["released"] == 3
    assert current["reason"] == (
        "not run: 3 jobs ended while running it (last: heartbeats stopped)"
    )
    assert current["finished_at"] == T0.isoformat()
    assert (
        not_run_after_releases(3, "") == "not run: 3 jobs ended while running it (last: job ended)"
    )


def test_a_static_shards_release_counts_nothing() -> None:
    handed = row("t1", outcome="running", job_name=A, attempt=1)  # no claimed_at
    for _ in range(bounds.QUEUE_MAX_RELEASES + 1):
        released = task_released(handed, A, "x")
        assert released is not None and released["outcome"] == "pending"
        assert "released" not in released
        handed = {**released, "outcome": "running"}


def test_release_with_a_tail_copy() -> None:
    both = running("t1", A, T0, copy_job=B, copy_attempt=2, copy_claimed_at="2026-01-01T13:00")
    # The copy's job ends: the copy is cleared, A still runs it; nothing counted.
    copy_gone = task_released(both, B, "evicted")
    assert copy_gone is not None
    assert (copy_gone["outcome"], copy_gone["job_name"], copy_gone["copy_job"]) == (
        "running",
        A,
        "",
    )
    assert "released" not in copy_gone
    # The first job ends while the copy runs: the copy becomes the task's job.
    first_gone = task_released(both, A, "evicted")
    assert first_gone is not None
    assert (first_gone["outcome"], first_gone["job_name"], first_gone["attempt"]) == (
        "running",
        B,
        2,
    )
    assert first_gone["claimed_at"] == "2026-01-01T13:00"
    assert (first_gone["copy_job"], first_gone["released"]) == ("", 1)


# ----------------------------------------------------------------------------- results
def test_a_late_result_of_a_job_that_lost_its_claim_is_ignored() -> None:
    now_b = running("t1", B, T0)  # A was released, B claimed it
    for outcome in ("completed", "failed"):
        assert judge_result(now_b, outcome=outcome, job_name=A, retry_limit=1) is (
            ResultVerdict.IGNORED
        )
    assert judge_result(now_b, outcome="completed", job_name=B, retry_limit=1) is (
        ResultVerdict.FINAL
    )
    # The copy holder's result counts like the first job's.
    with_copy = {**now_b, "copy_job": C}
    assert judge_result(with_copy, outcome="completed", job_name=C, retry_limit=1) is (
        ResultVerdict.FINAL
    )
    # The control plane's own verdict (no job) applies to a running task.
    assert judge_result(now_b, outcome="not_run", job_name="", retry_limit=0) is (
        ResultVerdict.FINAL
    )
    # A pending (released) task still takes a result: the work was done.
    released = task_released(now_b, B)
    assert released is not None
    assert judge_result(released, outcome="completed", job_name=B, retry_limit=0) is (
        ResultVerdict.FINAL
    )


@pytest.mark.parametrize("failing", [A, B])
def test_a_failed_run_while_the_other_copy_runs_keeps_the_task_running(failing: str) -> None:
    both = running("t1", A, T0, copy_job=B, copy_attempt=2, copy_claimed_at="2026-01-01T13:00")
    assert judge_result(both, outcome="failed", job_name=failing, retry_limit=1) is (
        ResultVerdict.RETRY
    )
    after = task_retried(both, failing, "crashed")
    other = B if failing == A else A
    assert (after["outcome"], after["job_name"], after["copy_job"]) == ("running", other, "")
    assert after["failed_in"] == failing and after["last_failure"] == "crashed"
    # Without a copy, a retried failure is pending again.
    alone = task_retried(running("t2", A, T0), A, "crashed")
    assert (alone["outcome"], alone["failed_in"]) == ("pending", A)


# ----------------------------------------------------------------------------- gaps (e2e pass)
def test_a_claim_lost_to_a_faster_job_moves_on_to_the_next_candidate() -> None:
    rows = [row("v1", "vs_code"), row("c1", "chrome")]
    found = plan(rows)
    assert isinstance(found, list) and [c.row["task_id"] for c in found] == ["v1", "c1"]
    kw: dict[str, Any] = {"job_name": A, "attempt": 1, "now": T0, "tail_copy_factor": 0.0}
    # Between the read and the ETag write, B claimed v1: the fresh row is not A's to take ...
    fresh_v1 = running("v1", B, T0, domain="vs_code")
    assert queue.take(found[0], fresh_v1, **kw) is None
    # ... and the next candidate is.
    taken = queue.take(found[1], rows[1], **kw)
    assert taken is not None and (taken["task_id"], taken["job_name"]) == ("c1", A)


def test_an_infrastructure_release_never_counts_as_the_tasks_failure() -> None:
    # A failed t1 once (its own run failed); B then claimed it and B's job ended (evicted).
    claimed_by_b = running("t1", B, T0, failed_in=A)
    released = task_released(claimed_by_b, B, "evicted")
    assert released is not None
    assert released["outcome"] == "pending"
    assert released["failed_in"] == A  # unchanged: the eviction is not a failure of the task
    # Pending again: any job that has not failed it may claim it, B's slot's next job too.
    assert queue.claimed(released, job_name="waa-e1-s1-a2", attempt=2, now=T0) is not None
    assert queue.claimed(released, job_name=A, attempt=1, now=T0) is None
    # The retries allow one failure: a result of the next job is still judged on A's alone.
    assert judge_result(released, outcome="failed", job_name=C, retry_limit=2) is (
        ResultVerdict.RETRY
    )


def test_the_first_final_result_wins() -> None:
    claimed = running("t1", A, T0, copy_job=B, copy_attempt=2)
    assert judge_result(claimed, outcome="completed", job_name=B, retry_limit=1) is (
        ResultVerdict.FINAL
    )
    done = {**claimed, "outcome": "completed", "job_name": B}
    for job, outcome in ((A, "completed"), (A, "failed"), (B, "failed"), ("", "not_run")):
        assert judge_result(done, outcome=outcome, job_name=job, retry_limit=1) is (
            ResultVerdict.IGNORED
        )
    # A released job's result for a final task changes nothing either, nor does its release.
    assert task_released(done, A, "ended") is None
