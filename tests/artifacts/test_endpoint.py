"""POST /api/heartbeats, kinds artifact_urls and artifacts_uploaded, on the devhost: the same
authentication as every runner message, paths checked (400 naming the field), only for a task
of the job that sends it, 409 when artifacts are not configured."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from adapters import runtime
from devhost.simulation import Simulation
from domain.jobs import JobState
from domain.messages import heartbeat_token
from domain.naming import job_name
from tests.e2e.scenario_support import VirtualWatch, store_rows

pytestmark = pytest.mark.azurite

MakeSimulation = Callable[..., Simulation]
SMOKE = {"task_set": "waa-smoke", "workers": 3}
WAIT = 120.0
FILES = [{"path": "traj.jsonl", "size": 12}, {"path": "shots/step 1.png", "size": 3}]


def _post(sim: Simulation, body: dict[str, Any], job: str) -> requests.Response:
    token = heartbeat_token(os.environ["HEARTBEAT_SECRET"], job)
    headers = {"Authorization": f"Bearer {token}"}
    return requests.post(f"{sim.base_url}/api/heartbeats", json=body, headers=headers, timeout=30)


def _ask(job: str, task: str, files: list[dict[str, Any]] = FILES) -> dict[str, Any]:
    return {
        "job_name": job,
        "kind": "artifact_urls",
        "artifacts": {"task_id": task, "files": files},
    }


def _running(eid: str, job: str) -> Callable[[], bool]:
    """The job runs and holds a task (with the queue, once it has claimed one)."""

    def check() -> bool:
        store = runtime.services().store
        row = store.get_job(eid, job)
        if not (row and row["state"] == JobState.RUNNING.value):
            return False
        return any(_held(t, job) for t in store_rows(eid)["tasks"])

    return check


def _held(task: dict[str, Any], job: str) -> bool:
    return task.get("outcome") == "running" and task.get("job_name") == job


BAD_FILES = [
    ([{"path": "../escape.txt"}], "artifacts.files.0.path"),
    ([{"path": "a/../../b"}], "artifacts.files.0.path"),
    ([{"path": "/etc/passwd"}], "artifacts.files.0.path"),
    ([{"path": "ok.txt"}, {"path": "shots\\1.png"}], "artifacts.files.1.path"),
    ([{"path": "a" * 513}], "artifacts.files.0.path"),
    ([{"path": "a//b"}], "artifacts.files.0.path"),
    ([{"path": ""}], "artifacts.files.0.path"),
    ([{"path": "x.txt", "size": -1}], "artifacts.files.0.size"),
    ([{"path": "x.txt"}, {"path": "x.txt"}], "artifacts.files"),
    ([{"path": f"f{i}.txt"} for i in range(1001)], "artifacts.files"),
]


def test_bad_paths_are_refused_naming_the_field(make_simulation: MakeSimulation) -> None:
    sim = make_simulation()
    job = job_name("e0000000000000000000000000000000"[:12], 0, 1)
    for files, field in BAD_FILES:
        r = _post(sim, _ask(job, "task-a", files), job)
        assert r.status_code == 400, (files[:2], r.text)
        assert r.json()["field"] == field, (files[:2], r.json())
    # The same shapes in a report of what went up.
    bad_report = {
        "job_name": job,
        "kind": "artifacts_uploaded",
        "artifacts": {"task_id": "task-a", "files": [], "failed": ["../x"]},
    }
    r = _post(sim, bad_report, job)
    assert r.status_code == 400 and r.json()["field"] == "artifacts.failed.0", r.text


def test_a_path_of_512_characters_and_1000_files_are_fine_to_ask_for(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation()
    job = job_name("e0000000000000000000000000000000"[:12], 0, 1)
    files = [{"path": "d/" + "a" * 510}, *({"path": f"f{i}.txt"} for i in range(999))]
    # Well-formed: past the shape checks, refused only because there is no such job.
    assert _post(sim, _ask(job, "task-a", files), job).status_code == 404


def test_the_kinds_need_their_artifacts_and_a_valid_token(make_simulation: MakeSimulation) -> None:
    sim = make_simulation()
    job = job_name("e0000000000000000000000000000000"[:12], 0, 1)
    for kind in ("artifact_urls", "artifacts_uploaded"):
        r = _post(sim, {"job_name": job, "kind": kind}, job)
        assert r.status_code == 400 and r.json()["field"] == "artifacts", r.text
    forged = requests.post(
        f"{sim.base_url}/api/heartbeats",
        json=_ask(job, "task-a"),
        headers={"Authorization": "Bearer " + "0" * 64},
        timeout=30,
    )
    assert forged.status_code == 403


def test_urls_only_for_a_task_of_this_job(make_simulation: MakeSimulation) -> None:
    sim = make_simulation()
    eid = sim.start_evaluation(SMOKE).json()["evaluation_id"]
    job = job_name(eid, 0, 1)

    def probe() -> dict[str, Any]:
        tasks = store_rows(eid)["tasks"]
        mine = next(t for t in tasks if _held(t, job))
        other = next(t for t in tasks if t.get("job_name") != job)
        granted = _post(sim, _ask(job, mine["task_id"]), job)
        reported = _post(
            sim,
            {
                "job_name": job,
                "kind": "artifacts_uploaded",
                "artifacts": {
                    "task_id": mine["task_id"],
                    "files": FILES[:1],
                    "failed": [FILES[1]["path"]],
                },
            },
            job,
        )
        return {
            "mine": mine,
            "granted": (granted.status_code, granted.json()),
            "reported": reported.status_code,
            "row": runtime.services().store.get_task(eid, mine["task_id"]),
            "other": _post(sim, _ask(job, other["task_id"]), job).status_code,
            "unknown": _post(sim, _ask(job, "no-such-task"), job).status_code,
            "other_report": _post(
                sim,
                {
                    "job_name": job,
                    "kind": "artifacts_uploaded",
                    "artifacts": {"task_id": other["task_id"], "files": []},
                },
                job,
            ).status_code,
        }

    seen = VirtualWatch(sim.host.clock, _running(eid, job), probe).wait(WAIT)
    mine = seen["mine"]
    status, body = seen["granted"]
    assert status == 200, body
    prefix = f"{eid}/{mine['domain']}/{mine['task_id']}/attempt-1/"
    assert body["accepted"] is True and body["kind"] == "artifact_urls"
    assert body["prefix"].endswith("/waa-artifacts/" + prefix), body["prefix"]
    assert set(body["urls"]) == {f["path"] for f in FILES}
    for path, url in body["urls"].items():
        assert urlsplit(url).path.endswith(prefix + path.replace(" ", "%20"))
        assert parse_qs(urlsplit(url).query)["sp"] == ["cw"]
    assert body["expires_at"]
    assert seen["reported"] == 202
    row = seen["row"]
    assert row["artifacts"] == body["prefix"] and row["artifact_files"] == 1
    assert row["artifact_failed"] == 1
    assert seen["other"] == 403 and seen["other_report"] == 403
    assert seen["unknown"] == 404

    final = sim.wait(eid, timeout=WAIT)
    assert {t["outcome"] for t in final["tasks"]} == {"completed"}
    # The job has ended: its token is no longer accepted, for artifacts neither.
    assert _post(sim, _ask(job, mine["task_id"]), job).status_code == 403


def test_without_an_artifact_store_the_answer_is_409_and_the_runner_skips(
    make_simulation: MakeSimulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARTIFACTS_ENABLED", "false")
    sim = make_simulation()
    assert runtime.services().artifacts is None
    eid = sim.start_evaluation({"tasks": ["task-a", "task-b"], "workers": 1}).json()[
        "evaluation_id"
    ]
    job = job_name(eid, 0, 1)

    def probe() -> tuple[int, int]:
        report = {"job_name": job, "kind": "artifacts_uploaded"}
        report["artifacts"] = {"task_id": "task-a", "files": []}  # type: ignore[assignment]
        return (
            _post(sim, _ask(job, "task-a"), job).status_code,
            _post(sim, report, job).status_code,
        )

    codes = VirtualWatch(sim.host.clock, _running(eid, job), probe).wait(WAIT)
    assert codes == (409, 409)
    final = sim.wait(eid, timeout=WAIT)
    # The simulated runner was told 409 and skipped its uploads; the scores are all there.
    assert {t["outcome"] for t in final["tasks"]} == {"completed"}
    assert all("artifacts" not in t for t in final["tasks"])
    assert "artifacts" not in final["summary"]


def test_storage_that_does_not_answer_is_a_503_and_the_scores_still_arrive(
    make_simulation: MakeSimulation,
) -> None:
    from adapters.artifacts import ArtifactStore
    from adapters.settings import AppSettings
    from devhost.azurite import DEV_ACCOUNT, DEV_KEY, free_port

    sim = make_simulation()
    dead = (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{free_port()}/{DEV_ACCOUNT};"
    )
    settings = AppSettings(**{"AzureWebJobsStorage": dead, "HEARTBEAT_SECRET": "h" * 24})  # type: ignore[arg-type]
    runtime.services().artifacts = ArtifactStore.from_settings(settings, lambda: None)  # type: ignore[arg-type, return-value]
    eid = sim.start_evaluation({"tasks": ["task-a"], "workers": 1}).json()["evaluation_id"]
    job = job_name(eid, 0, 1)

    def probe() -> tuple[int, str]:
        r = _post(sim, _ask(job, "task-a"), job)
        return r.status_code, r.json()["error"]

    status, message = VirtualWatch(sim.host.clock, _running(eid, job), probe).wait(WAIT)
    assert status == 503 and "not available" in message
    final = sim.wait(eid, timeout=WAIT)
    assert [t["outcome"] for t in final["tasks"]] == ["completed"]
    assert "artifacts" not in final["tasks"][0]
