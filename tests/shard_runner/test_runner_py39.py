"""The image's interpreter is Python 3.9: the single shipped file runs its whole path there
(secrets from a file and Key Vault, the golden image copy, a trial item, artifact uploads
refused with 409), when a 3.9 interpreter is on this machine (pyenv's, or WAA_TEST_PYTHON39)."""

from __future__ import annotations

import ast
import glob
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shard_runner import runner
from tests.shard_runner.conftest import ROOT, TOKEN, FakeQueue, Receiver, Run
from tests.shard_runner.fake_identity import FakeAzure, serve_fake_azure


def _python39() -> str | None:
    candidates = [os.environ.get("WAA_TEST_PYTHON39", "")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 9)":
            return candidate
    return None


PY39 = _python39()


def test_the_runner_parses_as_python_3_9() -> None:
    # Syntax only (3.10+ statements such as `match` are refused); the run below checks the rest.
    ast.parse((ROOT / "shard_runner" / "runner.py").read_text(), feature_version=(3, 9))


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    yield from serve_fake_azure({"openai-api-key": "sk-from-the-vault-0123456789"})


@pytest.mark.skipif(PY39 is None, reason="no Python 3.9 interpreter on this machine")
def test_the_shipped_file_runs_its_whole_path_on_python_3_9(
    start_runner: Any, receiver: Receiver, azure: FakeAzure, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"WAA_HEARTBEAT_TOKEN={TOKEN}\nAZURE_API_KEY=azure-key-from-the-file\n")
    secrets.chmod(0o600)
    golden = tmp_path / "golden"
    golden.mkdir()
    (golden / "data.img").write_bytes(b"\0" * 300_000)
    run: Run = start_runner(
        ["ok-1#4"],
        single_file=True,
        python=PY39,
        drop=("WAA_HEARTBEAT_TOKEN",),
        WAA_SECRETS_FILE=str(secrets),
        WAA_SECRETS_VAULT_URL=azure.base,
        WAA_SECRETS="OPENAI_API_KEY=openai-api-key",
        WAA_IMDS_URL=azure.imds_url,
        WAA_STORAGE_SOURCE=str(golden),
        WAA_STORAGE_DIR=str(tmp_path / "storage"),
        FAKE_ARTIFACTS="1",
        FAKE_ENV_DUMP=str(tmp_path / "task-env"),
    )

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.invalid == [] and receiver.rejected == []
    [result] = receiver.of_kind("task_result")
    assert (result["task_result"]["task_id"], result["task_result"]["score"]) == ("ok-1#4", 1.0)
    assert (tmp_path / "storage" / "data.img").stat().st_size == 300_000
    assert any(m.get("storage", {}).get("done") for m in receiver.of_kind("heartbeat"))
    env = json.loads((tmp_path / "task-env.ok-1").read_text())
    assert env["OPENAI_API_KEY"] == "sk-from-the-vault-0123456789"
    assert env["AZURE_API_KEY"] == "azure-key-from-the-file"
    assert len(receiver.artifact_requests) == 1  # 409: skipped
    assert "sk-from-the-vault" not in run.stderr and TOKEN not in run.stderr


@pytest.mark.skipif(PY39 is None, reason="no Python 3.9 interpreter on this machine")
def test_the_shipped_file_runs_queue_mode_on_python_3_9(
    start_runner: Any, receiver: Receiver
) -> None:
    # A trial item, an answer lost on the way (asked again), a 503, then exit.
    queue = FakeQueue(
        receiver, [("ok-0.5#2", "notepad"), ("crash-1", "")], faults={1: "drop", 3: 503}
    )
    receiver.next_task = queue
    run: Run = start_runner(
        [],
        single_file=True,
        python=PY39,
        WAA_TASK_SOURCE="queue",
        WAA_JOB_TIMEOUT_SECONDS="14400",
    )

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.invalid == []
    reported = [m["task_result"]["task_id"] for m in receiver.of_kind("task_result")]
    assert reported == ["ok-0.5#2", "crash-1"]
    assert queue.asks == 5
    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert summary["queue"]["stopped"] == "the control plane says exit: queue empty"
    assert (summary["completed"], summary["failed"]) == (1, 1)
