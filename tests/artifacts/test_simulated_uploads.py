"""The simulated runner's upload (adapters/compute/simulated/artifacts.py), on a manual clock:
after a completed task's result, artifact_urls, one PUT per file (retried), then the report;
409 skips it; and the world (every draw, every other message) is the same with uploads on."""

from __future__ import annotations

import json
from typing import Any

from adapters.compute.simulated import FaultProfile, TierFaults
from adapters.compute.simulated.artifacts import SCREENSHOT, task_files
from domain.jobs import Tier
from domain.messages import TaskResult, TaskRunStatus
from tests.simulated.support import HEARTBEAT_URL, make_cloud, spec

BLOB = "http://127.0.0.1:10000/devstoreaccount1/waa-artifacts/"


class FakeApp:
    """The heartbeat endpoint's artifact kinds and the Blob service's PUT, recorded in order
    with the runner's other messages (`log`)."""

    def __init__(self, log: list[tuple[str, Any]], *, urls_status: int = 200) -> None:
        self.log = log
        self.urls_status = urls_status
        self.put_failures: dict[str, list[int]] = {}

    def __call__(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        if method == "POST":
            assert url == HEARTBEAT_URL and headers["Authorization"] == "Bearer t0ken-for-tests"
            msg = json.loads(body)
            self.log.append((msg["kind"], msg["artifacts"]))
            if msg["kind"] == "artifacts_uploaded":
                return 202, b"{}"
            if self.urls_status != 200:
                return self.urls_status, b'{"error": "not configured"}'
            task = msg["artifacts"]["task_id"]
            urls = {
                f["path"]: f"{BLOB}{task}/{f['path']}?sv=x&sp=cw&sig=s"
                for f in msg["artifacts"]["files"]
            }
            return 200, json.dumps({"accepted": True, "urls": urls}).encode()
        assert method == "PUT" and headers["x-ms-blob-type"] == "BlockBlob"
        path = url.split("?")[0].rsplit("/", 1)[1]
        self.log.append(("PUT", path))
        failures = self.put_failures.get(path, [])
        return (failures.pop(0), b"") if failures else (201, b"")


def _world(*, uploads: bool, urls_status: int = 200, tasks: int = 3) -> tuple[Any, list[Any]]:
    log: list[tuple[str, Any]] = []
    cloud, sched, rec = make_cloud("none", upload_artifacts=uploads)

    def answer(url: str, headers: dict[str, str], body: Any) -> int:
        if isinstance(body, dict):
            log.append((body["kind"], body.get("task_result", {}).get("task_id")))
        return 200

    rec.answer = answer
    app = FakeApp(log, urls_status=urls_status)
    if cloud.artifacts is not None:
        cloud.artifacts.request = app
    cloud.backend(Tier.AZURE_ML).submit(spec(tasks=tasks))
    sched.run_all()
    return (cloud, rec, app), log


def test_each_completed_task_uploads_after_its_result() -> None:
    (cloud, _, _), log = _world(uploads=True)
    results = [i for i, (kind, _) in enumerate(log) if kind == "task_result"]
    assert len(results) == 3
    for i in results:
        task = log[i][1]
        kind, asked = log[i + 1]
        assert kind == "artifact_urls" and asked["task_id"] == task
        assert [f["path"] for f in asked["files"]] == ["result.txt", "traj.jsonl", "screenshot.png"]
        assert [log[i + k] for k in (2, 3, 4)] == [
            ("PUT", "result.txt"),
            ("PUT", "traj.jsonl"),
            ("PUT", "screenshot.png"),
        ]
        kind, report = log[i + 5]
        assert kind == "artifacts_uploaded" and report["task_id"] == task
        assert len(report["files"]) == 3 and report["failed"] == []
    assert cloud.artifacts.uploads == 9
    assert log[-1][0] == "finished"  # all uploads before the runner says it is done


def test_a_put_that_fails_twice_then_succeeds_is_uploaded_and_a_refused_one_reported() -> None:
    log: list[tuple[str, Any]] = []
    cloud, sched, rec = make_cloud("none", upload_artifacts=True)
    app = FakeApp(log)
    app.put_failures = {"traj.jsonl": [503, 500], "screenshot.png": [403]}
    assert cloud.artifacts is not None
    cloud.artifacts.request = app
    cloud.backend(Tier.AZURE_ML).submit(spec(tasks=1))
    sched.run_all()
    puts = [p for k, p in log if k == "PUT"]
    assert puts == ["result.txt", "traj.jsonl", "traj.jsonl", "traj.jsonl", "screenshot.png"]
    (report,) = [a for k, a in log if k == "artifacts_uploaded"]
    assert [f["path"] for f in report["files"]] == ["result.txt", "traj.jsonl"]
    assert report["failed"] == ["screenshot.png"]
    # The score went first and is untouched by the failed upload.
    assert [m.body["kind"] for m in rec.messages()].count("task_result") == 1


def test_409_means_no_upload_and_no_report() -> None:
    _, log = _world(uploads=True, urls_status=409)
    kinds = [k for k, _ in log]
    assert kinds.count("artifact_urls") == 3
    assert "PUT" not in kinds and "artifacts_uploaded" not in kinds


def test_failed_tasks_upload_nothing_and_uploads_do_not_change_the_world() -> None:
    off, log_off = _world(uploads=False)
    on, log_on = _world(uploads=True)
    assert off[0].artifacts is None
    assert off[0].ledger == on[0].ledger
    messages = [(p.at, p.body) for p in off[1].posts]
    assert messages == [(p.at, p.body) for p in on[1].posts]
    assert log_off == [
        e for e in log_on if e[0] not in ("artifact_urls", "PUT", "artifacts_uploaded")
    ]

    failing = FaultProfile(
        name="f", azureml=TierFaults(task_failure=1.0), batch=TierFaults(), vm=TierFaults()
    )
    log: list[tuple[str, Any]] = []
    cloud, sched, _ = make_cloud(failing, upload_artifacts=True)
    assert cloud.artifacts is not None
    cloud.artifacts.request = FakeApp(log)
    cloud.backend(Tier.AZURE_ML).submit(spec(tasks=2))
    sched.run_all()
    assert log == []  # only completed tasks upload (as the brief of the simulator says)


def test_the_files_are_wellformed_stand_ins() -> None:
    files = task_files(TaskResult(task_id="t", status=TaskRunStatus.COMPLETED, score=0.5))
    assert files["result.txt"] == b"0.5\n"
    lines = files["traj.jsonl"].decode().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["step_num"] for line in lines)
    assert files["screenshot.png"] == SCREENSHOT and SCREENSHOT.startswith(b"\x89PNG\r\n\x1a\n")
