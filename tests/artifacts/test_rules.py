"""The pure rules of artifacts (domain/artifacts.py) and the message shapes that carry them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from domain import artifacts
from domain.messages import Artifacts, JobMessage, MessageKind
from orchestrations.waits import RUN_DEADLINE_GRACE


@pytest.mark.parametrize(
    "path",
    ["result.txt", "traj.jsonl", "shots/step_1.png", "a/b/c d.log", "x" * 512, "..a", "a..b"],
)
def test_relative_posix_paths_are_fine(path: str) -> None:
    assert artifacts.path_problem(path) is None


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "empty"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("/etc/passwd", "leading '/'"),
        ("a\\b", "'\\'"),
        ("C:\\x", "'\\'"),
        ("a//b", "empty or '.'"),
        ("./a", "empty or '.'"),
        ("a/", "empty or '.'"),
        ("a\nb", "control"),
        ("x" * 513, "512"),
    ],
)
def test_paths_that_could_leave_the_folder_or_not_round_trip_are_refused(
    path: str, why: str
) -> None:
    problem = artifacts.path_problem(path)
    assert problem is not None and why in problem, problem


def test_the_blob_folder_names_evaluation_domain_task_and_attempt() -> None:
    assert artifacts.blob_prefix("e1", "vlc", "task-9", 3) == "e1/vlc/task-9/attempt-3/"
    assert artifacts.evaluation_prefix("e1") == "e1/"


def test_the_deadline_is_the_run_deadline_of_the_shard_orchestration() -> None:
    assert artifacts.JOB_DEADLINE_GRACE == RUN_DEADLINE_GRACE
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert artifacts.job_deadline(at, 3600) == at + timedelta(hours=1) + RUN_DEADLINE_GRACE
    # A job row from before job rows kept their timeout: the policy's default, 4 hours.
    assert artifacts.job_deadline(at, None) == at + timedelta(hours=4) + RUN_DEADLINE_GRACE


def test_only_the_job_a_task_is_with_records_its_artifacts() -> None:
    row = {"task_id": "t", "job_name": "j-a1", "outcome": "completed"}
    new = artifacts.artifacts_recorded(
        row,
        job_name="j-a1",
        prefix_url="http://c/e/d/t/attempt-1/",
        container_url="http://c",
        files=3,
        failed=0,
    )
    assert new is not None and new["artifacts"] == "http://c/e/d/t/attempt-1/"
    assert new["artifact_files"] == 3 and new["artifacts_container"] == "http://c"
    # The same report again changes nothing; another job's report neither.
    same = {"prefix_url": "http://c/e/d/t/attempt-1/", "container_url": "http://c"}
    assert artifacts.artifacts_recorded(new, job_name="j-a1", files=3, failed=0, **same) is None
    assert artifacts.artifacts_recorded(row, job_name="j-a2", files=3, failed=0, **same) is None


def test_the_location_comes_from_the_tasks_that_uploaded() -> None:
    assert artifacts.location("e1", [{"task_id": "t"}]) is None
    tasks = [
        {
            "task_id": "t",
            "artifacts": "http://c/e1/d/t/attempt-1/",
            "artifacts_container": "http://c",
        }
    ]
    assert artifacts.location("e1", tasks) == {
        "container_url": "http://c",
        "prefix": "http://c/e1/",
    }


def test_the_messages_carry_artifacts_by_kind() -> None:
    msg = JobMessage.model_validate(
        {
            "job_name": "waa-e1-s0-a1",
            "kind": "artifact_urls",
            "artifacts": {"task_id": "t-1", "files": [{"path": "traj.jsonl", "size": 5}]},
        }
    )
    assert msg.kind is MessageKind.ARTIFACT_URLS and msg.artifacts is not None
    assert msg.artifacts.files[0].path == "traj.jsonl" and msg.artifacts.failed == []
    with pytest.raises(ValidationError):  # sizes beyond one Put Blob
        Artifacts.model_validate(
            {
                "task_id": "t",
                "files": [{"path": "a", "size": artifacts.MAX_ARTIFACT_FILE_BYTES + 1}],
            }
        )
    with pytest.raises(ValidationError):  # unknown fields are refused, as in every message
        Artifacts.model_validate({"task_id": "t", "files": [], "sas": "x"})
