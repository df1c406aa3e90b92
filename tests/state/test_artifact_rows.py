"""Task rows record where their artifacts went; the status and the summary show it."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.state import views
from adapters.state.table_store import StateStore

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
EID = "e-art"
CONTAINER = "http://127.0.0.1:10000/devstoreaccount1/waa-artifacts"


def _evaluation(store: StateStore) -> None:
    store.create_evaluation(
        {
            "evaluation_id": EID,
            "created_at": NOW.isoformat(),
            "state": "running",
            "policy": "resilient",
            "workers": 1,
            "vm_size": "Standard_D4s_v5",
            "spot": False,
            "tiers": "azureml",
            "task_count": 2,
            "shard_count": 1,
            "spent_usd": 0.0,
            "reserved_usd": 0.0,
        },
        [{"shard_index": 0, "task_count": 2, "status": "waiting", "attempt": 0}],
        [
            {"task_id": t, "domain": "vlc", "shard_index": 0, "outcome": "pending"}
            for t in ("t-1", "t-2")
        ],
    )
    store.mark_tasks_running(EID, ["t-1", "t-2"], attempt=1, job_name="waa-e-art-s0-a1")


def test_a_task_row_records_its_artifacts_for_its_own_job(store: StateStore) -> None:
    _evaluation(store)
    assert store.get_task(EID, "nope") is None
    prefix = f"{CONTAINER}/{EID}/vlc/t-1/attempt-1/"
    recorded = store.record_artifacts(
        EID,
        "t-1",
        job_name="waa-e-art-s0-a1",
        prefix_url=prefix,
        container_url=CONTAINER,
        files=3,
        failed=1,
    )
    assert recorded
    row = store.get_task(EID, "t-1")
    assert row is not None
    assert (row["artifacts"], row["artifact_files"], row["artifact_failed"]) == (prefix, 3, 1)
    # Another job (an older attempt's straggler) changes nothing.
    assert not store.record_artifacts(
        EID,
        "t-2",
        job_name="waa-e-art-s0-a9",
        prefix_url=prefix,
        container_url=CONTAINER,
        files=3,
        failed=0,
    )

    rows = store.get_evaluation_rows(EID)
    assert rows is not None
    view = views.evaluation_view(rows, NOW)
    tasks = {t["task_id"]: t for t in view["tasks"]}
    assert tasks["t-1"]["artifacts"] == prefix and tasks["t-1"]["artifact_files"] == 3
    assert "artifacts" not in tasks["t-2"]  # absent until uploaded
    summary = views.summary(rows, NOW)
    assert summary["artifacts"] == {"container_url": CONTAINER, "prefix": f"{CONTAINER}/{EID}/"}


def test_no_artifacts_no_location(store: StateStore) -> None:
    _evaluation(store)
    rows = store.get_evaluation_rows(EID)
    assert rows is not None
    assert "artifacts" not in views.summary(rows, NOW)
