from __future__ import annotations

from typing import Any

from domain.alerts import Alert, AlertKind, alerts, job_alert_kind


def job(state: str, **fields: Any) -> dict[str, Any]:
    return {"job_name": "j", "state": state, **fields}


def test_jobs_are_classified_by_typed_fields_not_by_their_detail() -> None:
    # A detail that reads like another alert moves nothing.
    assert job_alert_kind(job("failed", detail="did not start; no heartbeat")) is (
        AlertKind.JOBS_FAILED
    )
    assert job_alert_kind(job("failed", attempt_outcome="start_timeout")) is (
        AlertKind.JOBS_NEVER_STARTED
    )
    assert job_alert_kind(job("failed", stuck=True, attempt_outcome="stuck")) is (
        AlertKind.JOBS_STUCK
    )
    # The run deadline (no sweeper verdict) is a plain failure, as before.
    assert job_alert_kind(job("failed", attempt_outcome="stuck")) is AlertKind.JOBS_FAILED
    assert job_alert_kind(job("completed", attempt_outcome="completed")) is None
    assert job_alert_kind(job("cancelled", attempt_outcome="cancelled")) is None


def test_alert_texts_counts_and_order() -> None:
    jobs = [
        job("failed", stuck=True, attempt_outcome="stuck"),
        job("failed", attempt_outcome="start_timeout"),
        job("failed", attempt_outcome="start_timeout"),
        job("failed", attempt_outcome="job_failed"),
        job("completed", attempt_outcome="completed"),
    ]
    tasks = [
        {"outcome": "not_run", "reason": "budget exhausted"},
        {"outcome": "not_run", "reason": "budget exhausted"},
        {"outcome": "failed", "reason": "agent crashed"},
        {"outcome": "completed", "failed_in": "j"},
        {"outcome": "completed"},
    ]
    assert alerts(jobs, {"batch": 1, "azureml": 3}, tasks) == [
        Alert(AlertKind.JOBS_FAILED, 1, "1 job(s) failed"),
        Alert(
            AlertKind.JOBS_NEVER_STARTED,
            2,
            "2 job(s) never started (start deadline hit, job cancelled)",
        ),
        Alert(
            AlertKind.JOBS_STUCK,
            1,
            "1 job(s) stuck mid-run (no heartbeat, cancelled by the sweeper)",
        ),
        Alert(AlertKind.TIER_FAILURES, 3, "tier azureml: 3 failure(s) in this evaluation"),
        Alert(AlertKind.TIER_FAILURES, 1, "tier batch: 1 failure(s) in this evaluation"),
        Alert(AlertKind.TASKS_NOT_RUN, 2, "2 task(s) not run: budget exhausted"),
        Alert(AlertKind.TASKS_FAILED, 1, "1 task(s) failed: agent crashed"),
        Alert(AlertKind.TASKS_RERUN, 1, "1 task(s) completed on a re-run after a failed run"),
    ]


def test_only_the_commonest_reasons_are_listed() -> None:
    tasks = [{"outcome": "not_run", "reason": f"r{i % 5}"} for i in range(10)]
    listed = [a for a in alerts([], {}, tasks) if a.kind is AlertKind.TASKS_NOT_RUN]
    assert len(listed) == 3 and all(a.count == 2 for a in listed)


def test_a_clean_run_has_no_alerts() -> None:
    assert alerts([job("completed")], {}, [{"outcome": "completed"}]) == []
