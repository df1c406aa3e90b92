"""The job row's changes (domain.job_state) and the task row's (domain.outcomes), as pure
functions: what the state store applies inside its ETag read-modify-write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from domain.job_state import (
    advanced,
    after_heartbeat,
    attempt_closed,
    marked_stuck,
    stuck_detail,
)
from domain.jobs import FailureKind, JobState
from domain.outcomes import (
    MAX_REASON_CHARS,
    ResultVerdict,
    failed_in,
    judge_result,
    task_released,
    task_running,
)
from domain.policy import AttemptOutcome

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
JOB = {"job_name": "waa-e1-s0-a1", "state": "submitted"}


def test_advanced_moves_forward_and_stamps_times() -> None:
    running = advanced(JOB, JobState.RUNNING, at=T0)
    assert running is not None
    assert running["state"] == "running" and running["running_at"] == T0.isoformat()
    assert "ended_at" not in running
    ended = advanced(
        running,
        JobState.FAILED,
        at=T0 + timedelta(minutes=5),
        detail="x" * 3000,
        failure_kind=FailureKind.TRANSIENT,
    )
    assert ended is not None
    assert ended["running_at"] == T0.isoformat()  # kept from the first time it ran
    assert ended["ended_at"] == (T0 + timedelta(minutes=5)).isoformat()
    assert len(ended["detail"]) == MAX_REASON_CHARS
    assert ended["failure_kind"] == "transient"


def test_advanced_refuses_backwards_and_past_terminal() -> None:
    running = {**JOB, "state": "running"}
    assert advanced(running, JobState.QUEUED, at=T0) is None
    assert advanced(running, JobState.RUNNING, at=T0) is None
    done = {**JOB, "state": "completed"}
    assert advanced(done, JobState.FAILED, at=T0) is None


def test_advanced_keeps_detail_and_kind_unless_given() -> None:
    row = {**JOB, "detail": "earlier", "failure_kind": "job_failed"}
    new = advanced(row, JobState.CANCELLED, at=T0)
    assert new is not None and (new["detail"], new["failure_kind"]) == ("earlier", "job_failed")


def test_first_heartbeat_starts_the_job() -> None:
    first = after_heartbeat({**JOB, "state": "preparing"}, T0)
    assert first is not None
    assert (first["state"], first["heartbeats"]) == ("running", 1)
    assert first["started_at"] == first["running_at"] == first["last_heartbeat_at"]
    later = after_heartbeat(first, T0 + timedelta(seconds=30))
    assert later is not None
    assert later["heartbeats"] == 2 and later["started_at"] == T0.isoformat()
    assert later["last_heartbeat_at"] == (T0 + timedelta(seconds=30)).isoformat()
    assert after_heartbeat({**JOB, "state": "failed"}, T0) is None


def _watched(**fields: object) -> dict[str, object]:
    return {
        **JOB,
        "state": "running",
        "stuck_detection": True,
        "heartbeat_timeout_seconds": 600.0,
        "started_at": T0.isoformat(),
        "last_heartbeat_at": T0.isoformat(),
        **fields,
    }


def test_stuck_only_past_the_limit_and_only_when_started_and_watched() -> None:
    assert stuck_detail(_watched(), T0 + timedelta(seconds=600)) is None
    late = T0 + timedelta(minutes=12)
    assert stuck_detail(_watched(), late) == (
        "stuck: no heartbeat for 12 min (limit 10 min); cancelled"
    )
    assert stuck_detail(_watched(stuck_detection=False), late) is None
    assert stuck_detail(_watched(started_at=None), late) is None
    assert stuck_detail(_watched(last_heartbeat_at=None), late) is None


def test_marked_stuck_is_a_flagged_transient_failure_once() -> None:
    stuck = marked_stuck(_watched(), T0, "stuck: no heartbeat")
    assert stuck is not None
    assert (stuck["state"], stuck["stuck"], stuck["failure_kind"]) == ("failed", True, "transient")
    assert stuck["ended_at"] == T0.isoformat() and stuck["detail"] == "stuck: no heartbeat"
    assert marked_stuck(stuck, T0, "again") is None


def test_attempt_closed_records_the_outcome_once() -> None:
    closed = attempt_closed({**JOB, "ended_signalled": True}, AttemptOutcome.START_TIMEOUT)
    assert closed is not None and closed["attempt_outcome"] == "start_timeout"
    assert closed["ended_signalled"] is True
    assert attempt_closed(closed, AttemptOutcome.START_TIMEOUT) is None


TASK = {"task_id": "t1", "outcome": "running", "job_name": "job-a"}


def test_a_failure_within_the_retries_is_retried_once_per_job() -> None:
    def judge(row: dict[str, Any], outcome: str, job: str) -> ResultVerdict:
        return judge_result(row, outcome=outcome, job_name=job, retry_limit=1)

    assert judge(TASK, "failed", "job-a") is ResultVerdict.RETRY
    pending = {**TASK, "outcome": "pending", "failed_in": "job-a"}
    assert failed_in(pending) == ["job-a"]
    # The same job's failure again (a re-sent message) counts once, also at the limit.
    assert judge(pending, "failed", "job-a") is ResultVerdict.IGNORED
    assert judge(pending, "failed", "job-b") is ResultVerdict.FINAL
    assert judge_result(TASK, outcome="failed", job_name="job-a", retry_limit=0) is (
        ResultVerdict.FINAL
    )
    # A job the running task is not with (it lost its claim) changes nothing (domain/queue.py).
    assert judge_result(TASK, outcome="failed", job_name="a", retry_limit=0) is (
        ResultVerdict.IGNORED
    )


def test_the_first_final_result_wins() -> None:
    assert judge_result(TASK, outcome="completed", job_name="job-a", retry_limit=1) is (
        ResultVerdict.FINAL
    )
    for outcome in ("completed", "failed", "not_run"):
        done = {**TASK, "outcome": outcome}
        assert judge_result(done, outcome="completed", job_name="job-b", retry_limit=1) is (
            ResultVerdict.IGNORED
        )


def test_running_and_released() -> None:
    fresh = {"task_id": "t1", "outcome": "pending"}
    running = task_running(fresh, attempt=2, job_name="job-b")
    assert running is not None and (running["outcome"], running["attempt"]) == ("running", 2)
    assert task_running(running, attempt=2, job_name="job-b") is None
    assert task_running({**fresh, "outcome": "completed"}, attempt=2, job_name="job-b") is None
    assert task_released(running, "job-a") is None  # another job's task
    released = task_released(running, "job-b")
    assert released is not None and released["outcome"] == "pending"
