"""Pieces of the shard runner tested in-process."""

from __future__ import annotations

import json
import logging
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


def _config(**env: str) -> runner.Config:
    base = {
        "WAA_JOB_NAME": "waa-e-s0-a1",
        "WAA_HEARTBEAT_URL": "http://127.0.0.1:1/api/heartbeats",
        "WAA_HEARTBEAT_TOKEN": "t",
        "WAA_TASK_IDS": "t1",
    }
    return runner.Config({**base, **env})


def test_result_path_is_waas_layout() -> None:
    # run.py's example_result_dir: result_dir/action_space/observation_type/model/trial/domain/id
    cfg = _config(WAA_MODEL="gpt-4o")
    assert runner.result_path(cfg, "/r", "notepad", "t1") == (
        "/r/pyautogui/a11y_tree/gpt-4o/0/notepad/t1"
    )
    other = _config(
        WAA_MODEL="gpt-4o-mini",
        WAA_ACTION_SPACE="code_block",
        WAA_OBSERVATION_TYPE="som",
        WAA_TRIAL_ID="2",
    )
    assert runner.result_path(other, "/r", "chrome", "t9") == (
        "/r/code_block/som/gpt-4o-mini/2/chrome/t9"
    )


def test_the_default_command_uses_waas_option_names() -> None:
    cfg = _config(WAA_AGENT="navi", WAA_SOM_ORIGIN="mixed-oss", WAA_A11Y_BACKEND="win32")
    argv = runner.render(
        cfg.task_command,
        {
            "agent": cfg.agent,
            "model": cfg.model,
            "som_origin": cfg.som_origin,
            "a11y_backend": cfg.a11y_backend,
            "max_steps": cfg.max_steps,
            "action_space": cfg.action_space,
            "observation_type": cfg.observation_type,
            "trial_id": cfg.trial_id,
            "task_meta_path": "/m.json",
            "task_output_dir": "/r",
        },
    )
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert argv[:2] == ["python", "run.py"]
    assert options == {
        "--agent_name": "navi",
        "--model": "gpt-4o",
        "--som_origin": "mixed-oss",
        "--a11y_backend": "win32",
        "--max_steps": "15",
        "--action_space": "pyautogui",
        "--observation_type": "a11y_tree",
        "--trial_id": "0",
        "--test_all_meta_path": "/m.json",
        "--result_dir": "/r",
        "--emulator_ip": "20.20.20.21",
    }


def test_read_score_reads_the_task_folder_and_clamps(tmp_path: Path) -> None:
    (tmp_path / "result.txt").write_text("0.4\n")
    assert runner.read_score(str(tmp_path), "result.txt") == 0.4
    (tmp_path / "result.txt").write_text('{"score": 7}')
    assert runner.read_score(str(tmp_path), "result.txt") == 1.0
    (tmp_path / "result.txt").write_text("not a number")
    assert runner.read_score(str(tmp_path), "result.txt") is None
    # Missing result.txt: no score (WAA's show_azure.py counts it as not solved).
    assert runner.read_score(str(tmp_path / "missing"), "result.txt") is None


def test_a_result_elsewhere_than_waas_layout_is_not_read(tmp_path: Path) -> None:
    cfg = _config()
    stray = tmp_path / "0" / "navi-gpt-4o" / "notepad" / "t1"
    stray.mkdir(parents=True)
    (stray / "result.txt").write_text("1")
    example = runner.result_path(cfg, str(tmp_path), "notepad", "t1")
    assert runner.read_score(example, "result.txt") is None


def test_waa_error_reads_run_pys_recorded_exception(tmp_path: Path) -> None:
    (tmp_path / "traj.jsonl").write_text(
        '{"step": 1}\n{"Error": "Exception in notepad/t1", "Exception": "VM gone"}\n'
    )
    assert runner.waa_error(str(tmp_path)) == "Exception in notepad/t1: VM gone"
    assert runner.waa_error(str(tmp_path / "missing")) == ""


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


def test_trial_suffixes_are_validated() -> None:
    cfg = _config(WAA_TASK_IDS="t1#0, t1#9,t2")
    assert cfg.task_ids == ["t1#0", "t1#9", "t2"]
    assert runner.split_item("t1#9") == ("t1", "9")
    assert runner.split_item("t2") == ("t2", None)
    assert runner.item_dir_name("t1#9") == "t1#9"
    assert runner.result_path(cfg, "/r", "notepad", "t1", "9") == (
        "/r/pyautogui/a11y_tree/gpt-4o/9/notepad/t1"
    )
    for bad in ("t1#10", "t1#", "#1", "t1#a", "t1#1#2"):
        with pytest.raises(runner.ConfigError, match="trial suffix is #0 to #9"):
            _config(WAA_TASK_IDS=f"ok,{bad}")


def test_credential_settings_are_validated() -> None:
    # A vault over plain http is refused unless it is this machine (the tests' fake).
    with pytest.raises(runner.ConfigError, match="WAA_SECRETS_VAULT_URL must be an https URL"):
        _config(WAA_SECRETS_VAULT_URL="http://kv.example", WAA_SECRETS="A=b")
    _config(WAA_SECRETS_VAULT_URL="http://127.0.0.1:9/", WAA_SECRETS="A=b")
    cfg = _config(
        WAA_SECRETS_VAULT_URL="https://kv.vault.azure.net/",
        WAA_SECRETS="OPENAI_API_KEY=openai-api-key, AZURE_API_KEY=azure-key",
    )
    assert cfg.vault_url == "https://kv.vault.azure.net"
    assert cfg.secret_env == {"OPENAI_API_KEY": "openai-api-key", "AZURE_API_KEY": "azure-key"}
    with pytest.raises(runner.ConfigError) as err:
        _config(
            WAA_HEARTBEAT_TOKEN="",
            WAA_HEARTBEAT_TOKEN_SECRET="hb_token",
            WAA_SECRETS="OPENAI_API_KEY,1X=y,WAA_HEARTBEAT_TOKEN=t",
        )
    text = str(err.value)
    assert "WAA_SECRETS_VAULT_URL is required" in text
    assert "WAA_HEARTBEAT_TOKEN_SECRET must be a Key Vault secret name" in text
    assert "WAA_SECRETS item 'OPENAI_API_KEY' must be ENV_NAME=key-vault-secret-name" in text
    assert "WAA_SECRETS item '1X=y'" in text
    assert "WAA_SECRETS must not set WAA_HEARTBEAT_TOKEN" in text
    # Either source of the token is enough.
    assert _config(WAA_HEARTBEAT_TOKEN="", WAA_SECRETS_FILE="/run/secrets.env").token == ""


def test_secret_values_are_masked_in_log_lines() -> None:
    runner.register_secret("s3cr3t-value-123")
    formatter = runner._MaskingFormatter("%(message)s")
    record = logging.LogRecord("x", logging.INFO, "f", 1, "key=%s", ("s3cr3t-value-123",), None)
    assert formatter.format(record) == "key=***"
    assert runner.mask("a s3cr3t-value-123 b") == "a *** b"


def test_artifact_listing_skips_symlinks_and_caps_the_count(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"12345")
    (tmp_path / "traj.jsonl").write_text("{}\n")
    (tmp_path / "link.png").symlink_to(tmp_path / "sub" / "a.png")
    (tmp_path / "linkdir").symlink_to(tmp_path / "sub")
    files, left_out = runner.list_artifacts(str(tmp_path))
    assert files == [{"path": "sub/a.png", "size": 5}, {"path": "traj.jsonl", "size": 3}]
    assert left_out == 0
    many = tmp_path / "many"
    many.mkdir()
    for n in range(runner.MAX_ARTIFACT_FILES + 5):
        (many / f"f{n:05d}").write_bytes(b"")
    files, left_out = runner.list_artifacts(str(many))
    assert len(files) == runner.MAX_ARTIFACT_FILES and left_out == 5
    assert runner.list_artifacts(str(tmp_path / "absent")) == ([], 0)


def test_only_secret_values_are_masked_not_the_imds_header() -> None:
    cfg = _config(WAA_SECRETS_VAULT_URL="https://kv.vault.azure.net", WAA_SECRETS="A=b")
    which, _url, query, headers = runner.ManagedIdentity({}, cfg)._endpoint()
    assert which == "the instance metadata service" and headers == {"Metadata": "true"}
    assert query == {"resource": "https://vault.azure.net", "api-version": "2018-02-01"}
    assert runner.mask("done: true") == "done: true"
