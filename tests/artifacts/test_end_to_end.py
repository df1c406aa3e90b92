"""End to end on the devhost: simulated jobs upload every completed task's artifacts to Azurite
Blob through the heartbeat endpoint's upload URLs, and the status says where they are."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from azure.storage.blob import BlobServiceClient

from adapters.logs import JsonFormatter
from devhost.simulation import Simulation

pytestmark = pytest.mark.azurite

CONTAINER = "waa-artifacts"
FILES = ("result.txt", "traj.jsonl", "screenshot.png")


def test_every_completed_task_has_its_artifacts_in_blob_storage(
    make_simulation: Callable[..., Simulation],
    blob_service: BlobServiceClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = make_simulation(profile="none")
    r = sim.start_evaluation({"task_set": "waa-smoke", "workers": 3})
    assert r.status_code == 202, r.text
    eid = r.json()["evaluation_id"]
    final = sim.wait(eid, timeout=180)

    container = blob_service.get_container_client(CONTAINER)
    container_url = container.url.rstrip("/")
    blobs = {b.name: b.size for b in container.list_blobs(name_starts_with=f"{eid}/")}
    completed = [t for t in final["tasks"] if t["outcome"] == "completed"]
    assert completed and len(completed) == len(final["tasks"]), final["tasks"]
    for task in completed:
        prefix = f"{eid}/{task['domain']}/{task['task_id']}/attempt-{task['attempt']}/"
        for name in FILES:
            assert prefix + name in blobs, (prefix + name, sorted(blobs))
            assert blobs[prefix + name] > 0
        score = container.download_blob(prefix + "result.txt").readall().decode()
        assert float(score) == task["score"]
        # The status shows the folder, never a SAS.
        assert task["artifacts"] == f"{container_url}/{prefix}"
        assert task["artifact_files"] == len(FILES)
        assert "?" not in task["artifacts"]
    # Nothing but the completed tasks' files was written.
    assert len(blobs) == len(FILES) * len(completed)

    assert final["summary"]["artifacts"] == {
        "container_url": container_url,
        "prefix": f"{container_url}/{eid}/",
    }

    # The upload URLs' signatures never reach a log.
    logged = "\n".join(JsonFormatter().format(rec) for rec in caplog.records)
    assert "upload URLs under" in logged  # the app did log the grants, by their folder
    assert "sig=" not in logged and "sig%3D" not in logged


def test_without_uploads_the_status_shows_no_artifacts(
    make_simulation: Callable[..., Simulation], blob_service: BlobServiceClient
) -> None:
    # The policy benchmark's setting: the simulated jobs upload nothing.
    sim = make_simulation(profile="none", artifacts=False)
    r = sim.start_evaluation({"tasks": ["task-a", "task-b"], "workers": 1})
    eid = r.json()["evaluation_id"]
    final = sim.wait(eid, timeout=120)
    assert {t["outcome"] for t in final["tasks"]} == {"completed"}
    assert all("artifacts" not in t for t in final["tasks"])
    assert "artifacts" not in final["summary"]
    container = blob_service.get_container_client(CONTAINER)
    if container.exists():
        assert not list(container.list_blobs(name_starts_with=f"{eid}/"))
