"""`waa-eval` against the app on the devhost (simulated backend, state in Azurite)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from devhost.simulation import Simulation
from domain.results import COLUMNS
from tests.cli.conftest import Run, closed_port, write_json

# WAA's test_all.json shape: domain -> task ids.
TASK_FILE = {
    "notepad": ["366de66e-cbae-4d72-b042-26390db2b145-WOS", "my-notepad-task"],
    "vlc": ["my-vlc-task"],
}


def _evaluation_id(stdout: str) -> str:
    found = re.search(r"started evaluation ([0-9a-f]+)", stdout)
    assert found, stdout
    return found.group(1)


def test_start_from_a_task_file_and_watch_to_the_end(
    sim: Simulation, cli: Run, tmp_path: Path
) -> None:
    tasks = write_json(tmp_path / "test_all.json", TASK_FILE)
    url = ["--url", sim.base_url]
    started = cli(*url, "start", str(tasks), "--workers", "2", "--max-steps", "7", "--watch",
                  "--interval", "0.05")  # fmt: skip
    assert started.exit_code == 0, started.stderr
    out = started.stdout
    eid = _evaluation_id(out)
    assert "3 tasks on 2 slots" in out
    # The live view's last frame, then the summary and the per-domain results table.
    assert "slot" in out and "heartbeat" in out
    assert f"evaluation {eid} completed" in out
    assert re.search(r"tasks completed\s*│\s*3 / 3", out), out
    assert "agent results (resilient)" in out
    for domain in ("notepad", "vlc", "all"):
        assert re.search(rf"│ {domain}\s*│", out), out

    status = cli(*url, "status", eid)
    assert status.exit_code == 0, status.stderr
    assert "completed" in status.stdout and "3 total: 3 completed" in status.stdout
    view = json.loads(cli(*url, "status", eid, "--json").stdout)
    assert view["state"] == "completed" and len(view["tasks"]) == 3

    listed = cli(*url, "list", "--limit", "100")
    assert listed.exit_code == 0, listed.stderr
    assert eid in listed.stdout
    rows = json.loads(cli(*url, "list", "--json").stdout)
    assert eid in [r["evaluation_id"] for r in rows]

    # results in each format
    as_csv = cli(*url, "results", eid, "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.stderr
    table = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert tuple(table[0]) == COLUMNS
    assert [r[0] for r in table[1:]] == ["notepad", "vlc", "all"]
    assert [r[1] for r in table[1:]] == ["2", "1", "3"]

    as_json = json.loads(cli(*url, "results", eid, "--format", "json").stdout)
    assert as_json["state"] == "completed"
    assert [d["domain"] for d in as_json["domains"]] == ["notepad", "vlc"]
    assert as_json["overall"]["tasks_run"] == 3

    as_md = cli(*url, "results", eid, "--format", "markdown").stdout.splitlines()
    assert as_md[0] == (
        "| Domain | Success rate | Tasks | Tasks run | Success rate (run) | Mean score |"
    )
    assert as_md[-1].startswith("| **all** |")

    as_table = cli(*url, "results", eid)
    assert as_table.exit_code == 0
    assert "success (all)" in as_table.stdout and "notepad" in as_table.stdout

    # Where the task's folder is, as its row says, or that it was not uploaded.
    row = next(t for t in view["tasks"] if t["task_id"] == "my-vlc-task")
    where = cli(*url, "artifacts", eid, "my-vlc-task")
    assert where.exit_code == 0, where.stderr
    place = row.get("artifacts") or "not uploaded yet"
    assert f"my-vlc-task (completed): {place}" in where.stdout
    missing = cli(*url, "artifacts", eid, "no-such-task")
    assert missing.exit_code == 1
    assert "task_id: no task 'no-such-task'" in missing.stderr


def test_watch_interrupted_leaves_it_running_then_cancel_ends_it(
    azurite_connection_string: str, cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real time: 154 tasks take hours, so the evaluation is still running when it is cancelled.
    with Simulation(
        connection_string=azurite_connection_string, profile="none", time_mode="real"
    ) as sim:
        url = ["--url", sim.base_url]
        started = cli(*url, "start", "waa-full", "--workers", "2")
        assert started.exit_code == 0, started.stderr
        eid = _evaluation_id(started.stdout)

        def ctrl_c(seconds: float) -> None:
            raise KeyboardInterrupt

        with monkeypatch.context() as m:
            m.setattr("waa_cli.app._pause", ctrl_c)
            watched = cli(*url, "watch", eid)
        assert watched.exit_code == 130
        assert f"Evaluation {eid} is still running" in watched.stderr
        assert json.loads(cli(*url, "status", eid, "--json").stdout)["state"] == "running"

        cancelled = cli(*url, "cancel", eid)
        assert cancelled.exit_code == 0, cancelled.stderr
        assert f"cancel requested for evaluation {eid}" in cancelled.stdout
        ended = cli(*url, "watch", eid, "--interval", "0.1", "--timeout", "120")
        assert ended.exit_code == 1  # it did not complete
        assert f"evaluation {eid} cancelled" in ended.stdout
        assert re.search(r"tasks not run\s*│\s*154", ended.stdout), ended.stdout

        again = cli(*url, "cancel", eid)
        assert again.exit_code == 1
        assert "HTTP 409" in again.stderr and "already ended (cancelled)" in again.stderr


def test_a_rejected_request_prints_the_field_the_server_names(sim: Simulation, cli: Run) -> None:
    url = ["--url", sim.base_url]
    few = cli(*url, "start", "waa-smoke", "--workers", "0")
    assert few.exit_code == 1
    assert "HTTP 400: workers: must be between 1 and" in few.stderr

    unknown_set = cli(*url, "start", "no-such-set")
    assert unknown_set.exit_code == 1
    assert "task_set: unknown task set 'no-such-set'" in unknown_set.stderr

    bad_origin = cli(*url, "start", "waa-smoke", "--som-origin", "nope")
    assert bad_origin.exit_code == 1
    assert "som_origin:" in bad_origin.stderr

    # Printed as the server wrote it: "[0]" is text, not markup.
    tier = cli(*url, "start", "waa-smoke", "--tier", "azureml", "--tier", "nope")
    assert tier.exit_code == 1
    assert "HTTP 400: tiers[1]: input should be" in tier.stderr

    # The task queue's rules (issue 10), as the server states them.
    both = cli(*url, "start", "waa-smoke", "--target-hours", "2", "--workers", "3")
    assert both.exit_code == 1
    assert "HTTP 400: target_hours: give target_hours or workers, not both" in both.stderr
    copies = cli(*url, "start", "waa-smoke", "--distribution", "static", "--tail-copies")
    assert copies.exit_code == 1 and "HTTP 400: tail_copies: only with" in copies.stderr
    sized = cli(*url, "start", "waa-smoke", "--distribution", "queue", "--right-size")
    assert sized.exit_code == 1
    assert "right_size: only with distribution static" in sized.stderr
    short = cli(*url, "start", "waa-smoke", "--target-hours", "0.1")
    assert short.exit_code == 1 and "target_hours: 0.1 h is shorter than" in short.stderr
    # An unknown distribution is refused by the CLI itself (a usage error), before a request.
    odd = cli(*url, "start", "waa-smoke", "--distribution", "push")
    assert odd.exit_code == 2

    extra = cli(*url, "start", "waa-smoke", "--field", "colour=blue")
    assert extra.exit_code == 1
    assert "colour: unknown field" in extra.stderr

    unknown = cli(*url, "status", "0123456789ab")
    assert unknown.exit_code == 1
    assert "HTTP 404: evaluation_id: no evaluation '0123456789ab'" in unknown.stderr

    limit = cli(*url, "list", "--limit", "0")
    assert limit.exit_code == 1 and "limit: must be a whole number" in limit.stderr


def test_a_task_file_that_is_not_one_is_refused_before_any_request(
    cli: Run, tmp_path: Path
) -> None:
    url = ["--url", f"http://127.0.0.1:{closed_port()}"]  # nothing is sent: no server needed
    missing = cli(*url, "start", str(tmp_path / "nope.json"))
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    broken = cli(*url, "start", str(tmp_path / "broken.json"))
    assert broken.exit_code == 1 and "not valid JSON" in broken.stderr
    scalar = cli(*url, "start", str(write_json(tmp_path / "n.json", 3)))
    assert scalar.exit_code == 1 and "test_all.json" in scalar.stderr


def test_a_wrong_url_names_the_url_and_exits_2(cli: Run) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    for args in (["list"], ["status", "abc"], ["start", "waa-smoke"]):
        result = cli("--url", url, *args)
        assert result.exit_code == 2, result.stdout
        assert f"cannot reach {url} (from --url): connection refused" in result.stderr


def test_retry_runs_again_what_did_not_complete(
    azurite_connection_string: str, cli: Run, tmp_path: Path
) -> None:
    from adapters.compute.simulated import FaultProfile, TierFaults
    from triggers import http_api

    if not hasattr(http_api, "retry_evaluation"):
        pytest.skip("POST /api/evaluations/{id}/retry is not in this branch (wip/trials adds it)")
    tasks = write_json(tmp_path / "test_all.json", TASK_FILE)
    every_task_fails = FaultProfile(
        name="tasks-fail-on-azureml",
        azureml=TierFaults(task_failure=1.0),
        batch=TierFaults(),
        vm=TierFaults(),
    )
    with Simulation(
        connection_string=azurite_connection_string, profile="none", time_mode="skip"
    ) as sim:
        url = ["--url", sim.base_url]
        sim.new_cloud(every_task_fails, 7)
        first = cli(*url, "start", str(tasks), "--tier", "azureml", "--task-retries", "0",
                    "--workers", "1", "--watch", "--interval", "0.05")  # fmt: skip
        source = _evaluation_id(first.stdout)
        failed = json.loads(cli(*url, "status", source, "--json").stdout)
        assert failed["state"] != "running" and failed["counts"]["completed"] == 0, failed

        sim.new_cloud("none", 7)
        retried = cli(*url, "retry", source, "--tier", "azureml", "--watch", "--interval", "0.05")
        assert retried.exit_code == 0, retried.stderr
        found = re.search(rf"retrying {source} as evaluation ([0-9a-f]+): 3 tasks", retried.stdout)
        assert found, retried.stdout
        new = found.group(1)
        assert f"evaluation {new} completed" in retried.stdout
        assert json.loads(cli(*url, "status", new, "--json").stdout)["retry_of"] == source
        assert re.search(rf"retried by\s*│ {new} ", cli(*url, "status", source).stdout)

        again = cli(*url, "retry", source)
        assert again.exit_code == 0, again.stderr
        assert f"evaluation {source} was retried already as {new}" in again.stdout

        busy_or_done = cli(*url, "retry", new)  # every run of the retry completed
        assert busy_or_done.exit_code == 1
        assert "HTTP 409" in busy_or_done.stderr and "nothing to retry" in busy_or_done.stderr
