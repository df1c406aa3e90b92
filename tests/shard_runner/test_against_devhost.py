"""The real shard runner posting to the real heartbeat endpoint of the app on the devhost.

The simulated cloud accepts the job but never starts a container (NeverStarts); the shard
runner, started here as a process, plays that container: its first heartbeat is the
"container started" signal, its task results are recorded, its `finished` ends the attempt.
Real time, so nothing but the runner moves the evaluation on.
"""

from __future__ import annotations

import os
import time
from typing import Any

from adapters.compute.simulated import NeverStarts
from devhost.simulation import Simulation
from domain.messages import heartbeat_token
from domain.naming import job_name


def _wait_for_job(sim: Simulation, evaluation_id: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shard = sim.status(evaluation_id, tasks=False)["shards"][0]
        if shard["job_name"]:
            return str(shard["job_name"])
        time.sleep(0.1)
    raise AssertionError("the job was never submitted")


def test_runner_results_reach_the_control_plane(sim: Simulation, start_runner: Any) -> None:
    sim.cloud.script(lambda spec: True, NeverStarts())
    tasks = ["ok-0.75", "crash-1", "ok-1"]
    r = sim.start_evaluation(
        {"tasks": tasks, "workers": 1, "tiers": ["azureml"], "task_retries": 0}
    )
    assert r.status_code == 202, r.text
    eid = r.json()["evaluation_id"]
    name = _wait_for_job(sim, eid)
    assert name == job_name(eid, 0, 1)

    run = start_runner(
        tasks,
        WAA_JOB_NAME=name,
        WAA_HEARTBEAT_URL=f"{sim.base_url}/api/heartbeats",
        WAA_HEARTBEAT_TOKEN=heartbeat_token(os.environ["HEARTBEAT_SECRET"], name),
    )
    assert run.wait(timeout=120) == 1, run.stderr  # one task crashed
    final = sim.wait(eid, timeout=120)

    by_id = {t["task_id"]: t for t in final["tasks"]}
    assert by_id["ok-0.75"]["outcome"] == "completed" and by_id["ok-0.75"]["score"] == 0.75
    assert by_id["ok-1"]["outcome"] == "completed" and by_id["ok-1"]["score"] == 1.0
    assert by_id["crash-1"]["outcome"] == "failed"
    assert "boom" in by_id["crash-1"]["reason"]
    assert {t["attempt"] for t in final["tasks"]} == {1}
    # The runner's token never shows in what the runner logged.
    assert heartbeat_token(os.environ["HEARTBEAT_SECRET"], name) not in run.stderr


def test_golden_image_copy_and_artifacts_through_the_real_app(
    sim: Simulation, start_runner: Any, tmp_path: Any, azurite_connection_string: str
) -> None:
    """The runner copies the golden image while its heartbeats (with the copy's progress) reach
    the app, then uploads each task's folder to Azurite Blob with the SAS URLs the app mints."""
    from azure.storage.blob import BlobServiceClient

    from adapters import runtime

    golden = tmp_path / "golden"
    (golden / "disk").mkdir(parents=True)
    (golden / "disk" / "data.img").write_bytes(b"\0" * 300_000)
    (golden / "windows.boot").write_text("prepared")
    sim.cloud.script(lambda spec: True, NeverStarts())
    r = sim.start_evaluation({"tasks": ["ok-1"], "workers": 1, "tiers": ["azureml"]})
    assert r.status_code == 202, r.text
    eid = r.json()["evaluation_id"]
    name = _wait_for_job(sim, eid)

    run = start_runner(
        ["ok-1"],
        WAA_JOB_NAME=name,
        WAA_HEARTBEAT_URL=f"{sim.base_url}/api/heartbeats",
        WAA_HEARTBEAT_TOKEN=heartbeat_token(os.environ["HEARTBEAT_SECRET"], name),
        WAA_STORAGE_SOURCE=str(golden),
        WAA_STORAGE_DIR=str(tmp_path / "storage"),
    )
    assert run.wait(timeout=120) == 0, run.stderr
    final = sim.wait(eid, timeout=120)

    assert (tmp_path / "storage" / "disk" / "data.img").stat().st_size == 300_000
    copy = final["shards"][0]["image_copy"]
    assert copy["done"] is True and copy["copied_bytes"] == copy["total_bytes"] >= 300_000
    (task,) = final["tasks"]
    assert task["outcome"] == "completed" and task["artifact_files"] >= 1, task
    store = runtime.services().artifacts
    assert store is not None and task["artifacts"].startswith(store.container_url)
    prefix = task["artifacts"][len(store.container_url) + 1 :]
    service = BlobServiceClient.from_connection_string(azurite_connection_string)
    container = service.get_container_client(store.container_url.rsplit("/", 1)[-1])
    names = [b.name for b in container.list_blobs(name_starts_with=prefix)]
    assert any(n.endswith("/result.txt") for n in names), names
    assert final["summary"]["artifacts"]["prefix"].endswith(f"/{eid}/")
