"""The shard runner in queue mode (WAA_TASK_SOURCE=queue, issue 10) as a process, against a
local fake of the app's `next_task` answers (conftest.FakeQueue, CONTRACT.md's rules)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shard_runner import runner
from tests.shard_runner.conftest import FakeQueue, Receiver

QUEUE = {"WAA_TASK_SOURCE": "queue", "WAA_JOB_TIMEOUT_SECONDS": "14400"}


def _reported(rec: Receiver) -> list[str]:
    return [m["task_result"]["task_id"] for m in rec.of_kind("task_result")]


def _argv(run: Any, item: str) -> dict[str, Any]:
    folder = run.output_dir / "tasks" / runner.item_dir_name(item)
    data: dict[str, Any] = json.loads((folder / "argv.json").read_text())
    data["options"] = dict(zip(data["argv"][::2], data["argv"][1::2], strict=True))
    return data


def test_runs_each_task_handed_out_then_exits_when_told(
    start_runner: Any, receiver: Receiver
) -> None:
    # ok-1 comes with a domain other than the catalog's: the answer's wins; crash-1 comes with
    # none: the catalog's (notepad); ok-0.5 is in no catalog and comes with its domain.
    queue = FakeQueue(receiver, [("ok-1", "office"), ("crash-1", ""), ("ok-0.5", "vlc")])
    receiver.next_task = queue
    run = start_runner([], **QUEUE)

    # A failed task is in its task_result; the job itself ended well.
    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.invalid == [] and receiver.rejected == []
    assert _reported(receiver) == ["ok-1", "crash-1", "ok-0.5"]
    # It asks after the setup and after each task's result was delivered, never before.
    flow = [k for k in receiver.kinds() if k in ("next_task", "task_result", "finished")]
    assert flow == ["next_task", "task_result"] * 3 + ["next_task", "finished"]
    assert queue.asks == 4
    asks = receiver.of_kind("next_task")
    assert all(set(m) == {"job_name", "kind", "sent_at"} for m in asks)
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_OK
    assert _argv(run, "ok-1")["meta"] == {"office": ["ok-1"]}
    assert _argv(run, "crash-1")["meta"] == {"notepad": ["crash-1"]}
    assert _argv(run, "ok-0.5")["meta"] == {"vlc": ["ok-0.5"]}
    results = {
        m["task_result"]["task_id"]: m["task_result"] for m in receiver.of_kind("task_result")
    }
    assert results["ok-0.5"]["score"] == 0.5 and results["crash-1"]["status"] == "failed"

    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert summary["task_source"] == "queue"
    assert (summary["tasks"], summary["completed"], summary["failed"]) == (3, 2, 1)
    assert summary["exit_code"] == runner.EXIT_OK
    assert summary["queue"] == {
        "asks": 4,
        "stopped": "the control plane says exit: queue empty",
        "duplicates": [],
        "resent": [],
    }
    assert "stopped asking for tasks after 3: the control plane says exit: queue empty" in (
        run.stderr
    )
    assert (run.output_dir / "tasks" / "crash-1.json").exists()


def test_an_empty_queue_ends_the_job_at_once(start_runner: Any, receiver: Receiver) -> None:
    receiver.next_task = FakeQueue(receiver, [])
    run = start_runner([], **QUEUE)

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.of_kind("task_result") == []
    assert len(receiver.of_kind("next_task")) == 1
    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert (summary["tasks"], summary["mean_score"]) == (0, 0.0)


def test_a_lost_answer_and_transient_errors_are_asked_again(
    start_runner: Any, receiver: Receiver
) -> None:
    # Ask 1: 503; ask 2: the claim is made but the answer is lost (connection closed); ask 3:
    # the same task again (the job holds it without a result); ask 4: 429; ask 5: exit.
    queue = FakeQueue(receiver, [("ok-1", "chrome")], faults={1: 503, 2: "drop", 4: 429})
    receiver.next_task = queue
    run = start_runner([], **QUEUE)

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert _reported(receiver) == ["ok-1"]  # run once
    assert queue.asks == 5
    assert "next_task request failed (HTTP 503" in run.stderr
    assert "next_task request failed (HTTP 429" in run.stderr
    assert "retry 1 of 11" in run.stderr
    assert "functions-key-xyz" not in run.stderr


def test_no_answer_after_the_configured_tries_is_an_internal_failure(
    start_runner: Any, receiver: Receiver
) -> None:
    queue = FakeQueue(receiver, [("ok-1", "chrome")], faults={1: 502, 2: "drop", 3: 500})
    receiver.next_task = queue
    run = start_runner([], WAA_NEXT_TASK_TRIES="3", **QUEUE)

    assert run.wait() == runner.EXIT_INTERNAL, run.stderr
    assert queue.asks == 3
    assert receiver.of_kind("task_result") == []
    [failure] = receiver.of_kind("failure")
    assert failure["failure"]["code"] == "internal"
    assert "next_task: no answer after 3 tries (last: HTTP 500" in failure["failure"]["message"]
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_INTERNAL


def test_409_a_static_job_asking_is_a_configuration_error(
    start_runner: Any, receiver: Receiver
) -> None:
    receiver.next_task = None  # the fake answers 409, as the app does for a static shard's job
    run = start_runner([], **QUEUE)

    assert run.wait() == runner.EXIT_CONFIG, run.stderr
    assert len(receiver.of_kind("next_task")) == 1  # not retried
    assert receiver.of_kind("task_result") == []
    assert (
        "ERROR stopped asking for tasks after 0: configuration error: the control plane answers "
        "next_task with HTTP 409" in run.stderr
    )
    assert "is not a queue job" in run.stderr and "functions-key-xyz" not in run.stderr
    [failure] = receiver.of_kind("failure")
    assert "WAA_TASK_SOURCE=queue" in failure["failure"]["message"]
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_CONFIG


def test_it_does_not_ask_when_its_deadline_is_within_the_claim_margin(
    start_runner: Any, receiver: Receiver
) -> None:
    receiver.next_task = FakeQueue(receiver, [("ok-1", "chrome")])
    run = start_runner(
        [], WAA_TASK_SOURCE="queue", WAA_JOB_TIMEOUT_SECONDS="1200", WAA_CLAIM_MARGIN_SECONDS="1800"
    )

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.of_kind("next_task") == []
    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert summary["queue"]["asks"] == 0
    assert "under the claim margin of 1800 s" in summary["queue"]["stopped"]
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_OK


def test_trial_suffixes_from_the_queue_run_as_those_trials(
    start_runner: Any, receiver: Receiver
) -> None:
    queue = FakeQueue(receiver, [("ok-0.5#3", "notepad"), ("ok-0.5#0", ""), ("ok-1", "")])
    receiver.next_task = queue
    run = start_runner([], WAA_TRIAL_ID="1", **QUEUE)

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.invalid == []
    assert _reported(receiver) == ["ok-0.5#3", "ok-0.5#0", "ok-1"]
    # ok-0.5 is in no catalog: without a domain in the answer it is "unknown"; ok-1 is chrome.
    for item, trial, domain in (
        ("ok-0.5#3", "3", "notepad"),
        ("ok-0.5#0", "0", "unknown"),
        ("ok-1", "1", "chrome"),
    ):
        argv = _argv(run, item)
        assert argv["options"]["--trial_id"] == trial
        task = item.split("#")[0]
        assert argv["meta"] == {domain: [task]}
        folder = run.output_dir / "tasks" / runner.item_dir_name(item)
        assert (folder / "pyautogui" / "a11y_tree" / "gpt-4o-mini" / trial / domain / task).is_dir()
    assert (run.output_dir / "tasks" / "ok-0.5#3.json").exists()


def test_a_task_handed_out_again_gets_its_result_once_more_then_stops_the_job(
    start_runner: Any, receiver: Receiver
) -> None:
    # The control plane hands a job the task it holds without a result: the first time, the
    # result went missing on the way, and the runner sends it again (it never runs the task
    # twice); a control plane that still hands it out is refused with a failure.
    def always_ok_1(message: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"accepted": True, "kind": "next_task", "task_id": "ok-1", "domain": "chrome"}

    receiver.next_task = always_ok_1
    run = start_runner([], **QUEUE)

    assert run.wait() == runner.EXIT_INTERNAL, run.stderr
    assert _reported(receiver) == ["ok-1", "ok-1"]  # the same result, sent again once
    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert summary["tasks"] == 1  # run once
    assert summary["queue"]["resent"] == ["ok-1"]
    [failure] = receiver.of_kind("failure")
    assert "handed task ok-1 again" in failure["failure"]["message"]


def test_a_tail_copy_is_run_and_noted(start_runner: Any, receiver: Receiver) -> None:
    answers = iter(
        [
            {"task_id": "ok-1", "domain": "chrome", "duplicate": True},
            {"task_id": None, "exit": True, "reason": "deadline"},
        ]
    )

    def copies(message: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"accepted": True, "kind": "next_task", **next(answers)}

    receiver.next_task = copies
    run = start_runner([], **QUEUE)

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert _reported(receiver) == ["ok-1"]
    assert "a second copy of a task another job runs" in run.stderr
    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert summary["queue"]["duplicates"] == ["ok-1"]
    assert summary["queue"]["stopped"] == "the control plane says exit: deadline"


def test_static_and_queue_settings_do_not_mix(start_runner: Any, tmp_path: Path) -> None:
    run = start_runner(["ok-1"], WAA_TASK_SOURCE="queue")
    assert run.wait() == runner.EXIT_CONFIG
    assert "WAA_TASK_IDS must be empty with WAA_TASK_SOURCE=queue" in run.stderr
