"""The real shard runner in queue mode against the real app's `next_task` endpoint on the
devhost (the app through the real Python worker code, state in Azurite).

The evaluation's rows and its queue jobs' rows (`queue`, `tail_copy_factor`, `expected_tasks`,
as submit_job registers them) are written through the app's own store, as
tests/e2e/test_next_task_endpoint.py does: no orchestration submits these jobs, the runner
processes started here play them. Real time."""

from __future__ import annotations

import json
import os
from typing import Any

from devhost.simulation import Simulation
from domain.messages import heartbeat_token
from shard_runner import runner
from tests.support.queue_rows import queue_evaluation, queue_job, store

EID = "r0e1d2c3b4a5"


_store = store


def _evaluation(tasks: dict[str, str], slots: int) -> None:
    queue_evaluation(EID, tasks, slots=slots)


def _job(slot: int, *, queue: bool = True, task_retries: int = 0) -> str:
    return queue_job(EID, slot, queue=queue, task_retries=task_retries)


def _env(sim: Simulation, name: str) -> dict[str, str]:
    return {
        "WAA_JOB_NAME": name,
        "WAA_HEARTBEAT_URL": f"{sim.base_url}/api/heartbeats",
        "WAA_HEARTBEAT_TOKEN": heartbeat_token(os.environ["HEARTBEAT_SECRET"], name),
        "WAA_TASK_SOURCE": "queue",
        "WAA_JOB_TIMEOUT_SECONDS": str(4 * 3600),
    }


def _tasks() -> dict[str, dict[str, Any]]:
    rows = _store().get_evaluation_rows(EID)
    assert rows is not None
    return {str(t["task_id"]): t for t in rows["tasks"]}


def test_the_runner_drains_the_queue_of_the_real_app(sim: Simulation, start_runner: Any) -> None:
    # crash-1 fails (task_retries 0: for good); ok-0.5#2 is trial 2 of ok-0.5.
    _evaluation({"ok-1": "chrome", "crash-1": "notepad", "ok-0.5#2": "vs_code"}, slots=1)
    name = _job(0)

    run = start_runner([], **_env(sim, name))
    assert run.wait(timeout=180) == runner.EXIT_OK, run.stderr

    rows = _tasks()
    assert {t: (r["outcome"], r["job_name"]) for t, r in rows.items()} == {
        "ok-1": ("completed", name),
        "crash-1": ("failed", name),
        "ok-0.5#2": ("completed", name),
    }
    assert rows["ok-1"]["score"] == 1.0 and rows["ok-0.5#2"]["score"] == 0.5
    assert "boom" in rows["crash-1"]["reason"]
    # Each task ran once, in the queue's order (longest expected first), in its row's domain.
    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert summary["queue"]["stopped"] == "the control plane says exit: queue empty"
    assert summary["queue"]["asks"] == 4
    assert sorted(r["task_id"] for r in summary["results"]) == sorted(rows)
    for item, domain, trial in (("ok-1", "chrome", "0"), ("ok-0.5#2", "vs_code", "2")):
        folder = run.output_dir / "tasks" / runner.item_dir_name(item)
        argv = json.loads((folder / "argv.json").read_text())
        assert argv["meta"] == {domain: [item.split("#")[0]]}
        assert argv["argv"][argv["argv"].index("--trial_id") + 1] == trial
    # The slot shows no task in progress once the queue said exit; the job finished well.
    rows_all = _store().get_evaluation_rows(EID)
    assert rows_all is not None
    assert next(s for s in rows_all["shards"] if int(s["shard_index"]) == 0)["current_task"] == ""
    job = _store().get_job(EID, name)
    assert job is not None and job["state"] == "completed", job
    assert heartbeat_token(os.environ["HEARTBEAT_SECRET"], name) not in run.stderr


def test_a_static_shards_job_in_queue_mode_stops_with_a_config_error(
    sim: Simulation, start_runner: Any
) -> None:
    _evaluation({"ok-1": "chrome"}, slots=1)
    name = _job(0, queue=False)

    run = start_runner([], **_env(sim, name))
    assert run.wait(timeout=120) == runner.EXIT_CONFIG, run.stderr
    assert "HTTP 409" in run.stderr and "runs a static shard's tasks" in run.stderr
    assert _tasks()["ok-1"]["outcome"] == "pending"  # nothing claimed, nothing run
    job = _store().get_job(EID, name)
    assert job is not None and job["state"] == "failed"
    assert "WAA_TASK_SOURCE=queue" in job["detail"]


def test_two_runners_asking_one_queue_run_each_task_once(
    sim: Simulation, start_runner: Any, tmp_path: Any
) -> None:
    tasks = {"ok-1": "chrome", "ok-0.75": "notepad", "ok-0.5": "vs_code", "ok-0.25": "vlc"}
    _evaluation(tasks, slots=2)
    names = [_job(0), _job(1)]

    runs = [
        start_runner([], WAA_OUTPUT_DIR=str(tmp_path / f"out{slot}"), **_env(sim, name))
        for slot, name in enumerate(names)
    ]
    for run in runs:
        assert run.wait(timeout=180) == runner.EXIT_OK, run.stderr

    rows = _tasks()
    assert {t: r["outcome"] for t, r in rows.items()} == dict.fromkeys(tasks, "completed")
    summaries = [json.loads((tmp_path / f"out{i}" / "summary.json").read_text()) for i in (0, 1)]
    ran = [[r["task_id"] for r in summary["results"]] for summary in summaries]
    assert sorted(ran[0] + ran[1]) == sorted(tasks)  # every task once, by one of the two
    for i, name in enumerate(names):
        assert {t for t, r in rows.items() if r["job_name"] == name} == set(ran[i])
