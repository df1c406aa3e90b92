"""Pieces of the shard runner tested in-process."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shard_runner import runner

BASE_ENV = {
    "WAA_JOB_NAME": "waa-e-s0-a1",
    "WAA_HEARTBEAT_URL": "http://127.0.0.1:1/api/heartbeats",
    "WAA_HEARTBEAT_TOKEN": "secret-token-value",
    "WAA_TASK_IDS": "a, b ,,c",
}


def test_config_defaults_target_the_winarena_image() -> None:
    cfg = runner.Config(BASE_ENV)
    assert cfg.task_ids == ["a", "b", "c"]
    assert cfg.heartbeat_interval == 30
    assert cfg.setup_command == ["/entry_setup.sh"]
    assert cfg.ready_url == "http://20.20.20.21:5000/probe"
    assert cfg.task_command[:2] == ["python", "run.py"]
    assert cfg.task_cwd == "/client"
    assert "secret-token-value" not in repr(cfg)


def test_config_lists_every_problem() -> None:
    with pytest.raises(runner.ConfigError) as err:
        runner.Config({"WAA_MAX_STEPS": "many", "WAA_SETUP_COMMAND": "run 'unbalanced"})
    text = str(err.value)
    for expected in (
        "WAA_JOB_NAME is required",
        "WAA_HEARTBEAT_URL is required",
        "WAA_HEARTBEAT_TOKEN is required",
        "WAA_TASK_IDS must list",
        "WAA_MAX_STEPS must be a number",
        "WAA_SETUP_COMMAND is not a valid command line",
    ):
        assert expected in text


def test_empty_setup_command_and_ready_url_skip_those_steps() -> None:
    cfg = runner.Config({**BASE_ENV, "WAA_SETUP_COMMAND": "", "WAA_READY_URL": ""})
    assert cfg.setup_command == []
    assert cfg.ready_url == ""


def test_render_keeps_each_value_one_argv_item() -> None:
    nasty = "a b;$(rm -rf /)'\"|&`x`"
    argv = runner.render(["run", "--task={task_id}", "{task_id}", "{other}"], {"task_id": nasty})
    assert argv == ["run", f"--task={nasty}", nasty, "{other}"]


def test_read_score_finds_nested_results_and_clamps(tmp_path: Path) -> None:
    nested = tmp_path / "0" / "navi-gpt" / "notepad" / "t1"
    nested.mkdir(parents=True)
    (nested / "result.txt").write_text("0.4\n")
    assert runner.read_score(str(tmp_path), "result.txt") == 0.4
    (nested / "result.txt").write_text('{"score": 7}')
    assert runner.read_score(str(tmp_path), "result.txt") == 1.0
    (nested / "result.txt").write_text("not a number")
    assert runner.read_score(str(tmp_path), "result.txt") is None
    assert runner.read_score(str(tmp_path / "missing"), "result.txt") is None


def test_safe_name_for_odd_task_ids() -> None:
    assert runner.safe_name("ok-1") == "ok-1"
    odd = runner.safe_name("../../etc/passwd")
    assert "/" not in odd and not odd.startswith(".")
    assert runner.safe_name("a/b") != runner.safe_name("a_b")


def test_redacted_url_drops_the_query() -> None:
    assert (
        runner.redacted_url("https://app.example/api/heartbeats?code=k3y")
        == "https://app.example/api/heartbeats"
    )


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []
    gate = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).gate.wait(30)
        type(self).bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_sender_never_blocks_coalesces_heartbeats_and_bounds_its_queue() -> None:
    _Recorder.bodies = []
    _Recorder.gate = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/heartbeats"
        sender = runner.Sender(url, "tok", max_queue=3, retry_base=0.01, retry_max=0.05)
        # The first message is held by the server (gate closed): everything else queues.
        sender.post({"kind": "heartbeat", "n": 0})
        for _ in range(200):
            if sender._busy:  # the first one is in flight
                break
            threading.Event().wait(0.01)
        sender.post({"kind": "heartbeat", "n": 1})
        sender.post({"kind": "heartbeat", "n": 2})  # coalesced with n=1
        sender.post({"kind": "task_result", "n": 3})
        sender.post({"kind": "task_result", "n": 4})  # queue full: the heartbeat gives way
        sender.post({"kind": "task_result", "n": 5})
        sender.post({"kind": "task_result", "n": 6})  # full of results: the oldest gives way
        _Recorder.gate.set()
        assert sender.close(30) is True
        assert [b["n"] for b in _Recorder.bodies] == [0, 4, 5, 6]
        assert sender.dropped == 2
    finally:
        server.shutdown()
        server.server_close()
