"""The shard runner as a process: fake WAA server, fake task command, local receiver."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from shard_runner import runner
from tests.shard_runner.conftest import JOB, TOKEN, FakeWaa, Receiver, wait_for


def _results(rec: Receiver) -> dict[str, dict[str, Any]]:
    return {m["task_result"]["task_id"]: m["task_result"] for m in rec.of_kind("task_result")}


def test_ready_runs_every_task_and_reports_each(
    start_runner: Any, receiver: Receiver, tmp_path: Path
) -> None:
    run = start_runner(["ok-0.75", "beats-1", "ok-1"])

    assert run.wait() == runner.EXIT_OK
    kinds = receiver.kinds()
    assert kinds[0] == "heartbeat"  # the "container started" signal comes first
    assert kinds[-1] == "finished"
    assert receiver.of_kind("finished")[0]["exit_code"] == 0
    assert [m["task_result"]["task_id"] for m in receiver.of_kind("task_result")] == [
        "ok-0.75",
        "beats-1",
        "ok-1",
    ]
    results = _results(receiver)
    assert results["ok-0.75"]["status"] == "completed"
    assert results["ok-0.75"]["score"] == 0.75
    assert results["beats-1"]["score"] == 0.5  # JSON result file
    assert results["ok-1"]["score"] == 1.0
    # beats-1 only finished after three heartbeats: they keep coming while a task runs.
    assert len(receiver.of_kind("heartbeat")) >= 3
    assert all(m["job_name"] == JOB and m["sent_at"] for m in receiver.messages)

    # WAA's run.py options, spelled out (the fake refuses abbreviations), with the configured
    # values and run.py's defaults; the domain came from the task catalog into the meta file.
    argv = json.loads((run.output_dir / "tasks" / "ok-1" / "argv.json").read_text())
    options = dict(zip(argv["argv"][::2], argv["argv"][1::2], strict=True))
    assert options == {
        "--agent_name": "navi",
        "--model": "gpt-4o-mini",
        "--som_origin": "a11y",
        "--a11y_backend": "win32",
        "--max_steps": "20",
        "--action_space": "pyautogui",
        "--observation_type": "a11y_tree",
        "--trial_id": "0",
        "--test_all_meta_path": str(run.output_dir / "tasks" / "ok-1" / "task_meta.json"),
        "--result_dir": str(run.output_dir / "tasks" / "ok-1"),
        "--emulator_ip": "20.20.20.21",
    }
    assert argv["meta"] == {"chrome": ["ok-1"]}
    # The score was read from WAA's layout:
    # <result_dir>/<action_space>/<observation_type>/<model>/<trial>/<domain>/<task>/.
    waa = run.output_dir / "tasks" / "ok-1" / "pyautogui" / "a11y_tree" / "gpt-4o-mini" / "0"
    assert (waa / "chrome" / "ok-1" / "result.txt").read_text() == "1"
    # The task sees its job's settings but not the control plane's token.
    assert "WAA_JOB_NAME" in argv["env"]
    assert "WAA_HEARTBEAT_TOKEN" not in argv["env"]

    # Results on disk too: one JSON per task and a summary.
    on_disk = json.loads((run.output_dir / "tasks" / "ok-0.75.json").read_text())
    assert on_disk["score"] == 0.75
    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert (summary["tasks"], summary["completed"], summary["failed"]) == (3, 3, 0)
    assert summary["exit_code"] == 0
    assert TOKEN not in run.stderr


def test_never_ready_fails_with_waa_not_ready_within_its_deadline(
    start_runner: Any, receiver: Receiver, fake_waa: FakeWaa, tmp_path: Path
) -> None:
    pidfile = tmp_path / "setup.pid"
    run = start_runner(
        ["ok-1"],
        WAA_SETUP_COMMAND=f"{sys.executable} {Path(__file__).with_name('fake_setup.py')} "
        f"forever {pidfile}",
        WAA_READY_TIMEOUT_SECONDS="1",
    )

    assert run.wait() == runner.EXIT_NOT_READY
    [failure] = receiver.of_kind("failure")
    assert failure["failure"]["code"] == "waa_not_ready"
    assert failure["failure"]["permanent"] is False
    assert "not ready after 1 s" in failure["failure"]["message"]
    assert receiver.of_kind("task_result") == []
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_NOT_READY
    assert fake_waa.probes >= 1
    # The setup (the VM boot) does not outlive the runner.
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)


def test_setup_that_fails_is_reported(start_runner: Any, receiver: Receiver) -> None:
    run = start_runner(
        ["ok-1"],
        WAA_SETUP_COMMAND=f"{sys.executable} {Path(__file__).with_name('fake_setup.py')} fail",
    )
    assert run.wait() == runner.EXIT_SETUP_FAILED
    [failure] = receiver.of_kind("failure")
    assert failure["failure"]["code"] == "setup_failed"
    assert "could not open disk image" in failure["failure"]["message"]


def test_no_kvm_is_a_permanent_failure_reported_at_once(
    start_runner: Any, receiver: Receiver, fake_waa: FakeWaa, tmp_path: Path
) -> None:
    run = start_runner(["ok-1"], single_file=True, WAA_KVM_DEVICE=str(tmp_path / "no-kvm"))

    assert run.wait() == runner.EXIT_NO_KVM
    assert receiver.kinds() == ["failure", "finished"]
    failure = receiver.of_kind("failure")[0]["failure"]
    assert failure["code"] == "no_nested_virtualization"
    assert failure["permanent"] is True
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_NO_KVM
    # Nothing else was attempted: no setup, no probe.
    assert not fake_waa.marker.exists()
    assert fake_waa.probes == 0


def test_crashing_task_fails_with_reason_and_the_others_still_run(
    start_runner: Any, receiver: Receiver
) -> None:
    run = start_runner(
        ["crash-1", "ok-0.25", "noresult-1", "hang-1", "ok-1"], WAA_TASK_TIMEOUT_SECONDS="2"
    )

    assert run.wait() == runner.EXIT_TASKS_FAILED
    results = _results(receiver)
    assert list(results) == ["crash-1", "ok-0.25", "noresult-1", "hang-1", "ok-1"]
    crash = results["crash-1"]
    assert crash["status"] == "failed"
    assert "exited with code 1" in crash["reason"]
    assert "boom: the agent crashed" in crash["reason"]
    assert results["noresult-1"]["status"] == "failed"
    # No result.txt: not solved (as WAA's show_azure.py counts it), with run.py's recorded
    # exception as the reason.
    noresult = results["noresult-1"]["reason"]
    assert "the VM went away" in noresult and "Exception in" in noresult
    assert "/noresult-1/result.txt" in noresult
    assert results["hang-1"]["status"] == "failed"
    assert "timed out after 2 s" in results["hang-1"]["reason"]
    assert results["ok-0.25"] == {**results["ok-0.25"], "status": "completed", "score": 0.25}
    assert results["ok-1"]["status"] == "completed"
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_TASKS_FAILED
    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert (summary["completed"], summary["failed"]) == (2, 3)


def test_endpoint_down_for_a_while_delays_messages_not_tasks(
    start_runner: Any, receiver: Receiver
) -> None:
    receiver.down = True
    run = start_runner(["ok-0.5", "ok-1"])

    # Every task finishes and the summary is written while nothing can be delivered.
    wait_for(lambda: (run.output_dir / "summary.json").exists(), what="the summary")
    assert receiver.messages == []
    assert receiver.rejected.count(503) >= 1
    assert run.proc.poll() is None  # still trying to deliver

    receiver.down = False
    assert run.wait() == runner.EXIT_OK
    assert [m["task_result"]["task_id"] for m in receiver.of_kind("task_result")] == [
        "ok-0.5",
        "ok-1",
    ]
    assert receiver.kinds()[-1] == "finished"
    assert TOKEN not in run.stderr
    assert "functions-key-xyz" not in run.stderr  # the URL's query is not logged either


def test_rejected_token_is_not_retried_forever(start_runner: Any, receiver: Receiver) -> None:
    receiver.token = "another-token"
    run = start_runner(["ok-1"], WAA_POST_AUTH_RETRIES="2")

    assert run.wait() == runner.EXIT_OK
    assert receiver.messages == []
    assert receiver.rejected == [401, 401, 401]  # one try and two retries, then it stops
    assert "refuses this job's token" in run.stderr
    assert TOKEN not in run.stderr


def test_sigterm_stops_the_task_and_reports_finished(start_runner: Any, receiver: Receiver) -> None:
    run = start_runner(["hang-1", "ok-1"])
    started = run.output_dir / "tasks" / "hang-1" / "started"
    wait_for(started.exists, what="the task to start")

    run.proc.send_signal(signal.SIGTERM)

    assert run.wait() == runner.EXIT_TERMINATED
    assert receiver.of_kind("task_result") == []  # the interrupted task has no result
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_TERMINATED


def test_bad_configuration_exits_with_config_error(start_runner: Any) -> None:
    run = start_runner(["ok-1"], WAA_TASK_COMMAND="run {task_id} {unknown}", WAA_HEARTBEAT_TOKEN="")
    assert run.wait() == runner.EXIT_CONFIG
    assert "WAA_HEARTBEAT_TOKEN is required" in run.stderr
    assert "unknown placeholder {unknown}" in run.stderr


def test_trial_suffix_runs_the_item_as_that_trial(start_runner: Any, receiver: Receiver) -> None:
    run = start_runner(["ok-0.5#0", "ok-0.5#3", "ok-1"], WAA_TRIAL_ID="1")

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.invalid == []
    # task_result.task_id is the full item; each score was read from its own trial's folder.
    reported = [
        (m["task_result"]["task_id"], m["task_result"]["score"])
        for m in receiver.of_kind("task_result")
    ]
    assert reported == [("ok-0.5#0", 0.5), ("ok-0.5#3", 0.5), ("ok-1", 1.0)]
    for item, trial in (("ok-0.5#0", "0"), ("ok-0.5#3", "3"), ("ok-1", "1")):
        folder = run.output_dir / "tasks" / runner.item_dir_name(item)
        argv = json.loads((folder / "argv.json").read_text())
        options = dict(zip(argv["argv"][::2], argv["argv"][1::2], strict=True))
        assert options["--trial_id"] == trial
        task = item.split("#")[0]
        domain = "chrome" if task == "ok-1" else "unknown"  # ok-0.5 is not in the catalog
        assert argv["meta"] == {domain: [task]}
        waa = folder / "pyautogui" / "a11y_tree" / "gpt-4o-mini" / trial / domain / task
        assert (waa / "result.txt").exists()
    # The two trials of one task have folders (and result files) of their own.
    assert (run.output_dir / "tasks" / "ok-0.5#0.json").exists()
    assert (run.output_dir / "tasks" / "ok-0.5#3.json").exists()
