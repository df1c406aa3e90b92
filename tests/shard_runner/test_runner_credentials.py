"""The runner reads its secrets itself: managed identity token -> Key Vault, or a 0600 file.

The values reach the task's environment only: never the setup, the log, a message to the
control plane or the output folder (issue 9, part 4).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shard_runner import runner
from tests.shard_runner.conftest import HERE, TOKEN, FakeWaa, Receiver, Run
from tests.shard_runner.fake_identity import (
    ACCESS_TOKEN,
    IDENTITY_HEADER,
    MSI_SECRET,
    FakeAzure,
    serve_fake_azure,
)

OPENAI_KEY = "sk-proj-7d1f0c2b9e8a4b6c8d0e1f2a3b4c5d6e"
AZURE_KEY = "3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
CLIENT_ID = "7e5c9a1d-4b2f-4e8a-9c3d-1a2b3c4d5e6f"


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    yield from serve_fake_azure(
        {"openai-api-key": OPENAI_KEY, "azure-api-key": AZURE_KEY, "hb-token": TOKEN}
    )


def _files_holding(root: Path, values: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(v.encode() in data for v in values):
                hits.append(str(path.relative_to(root)))
    return hits


def _setup_dump(fake_waa: FakeWaa, tmp_path: Path) -> dict[str, str]:
    dump = tmp_path / "setup-dump.json"
    return {
        "WAA_SETUP_COMMAND": f"{sys.executable} {HERE / 'fake_setup.py'} ready {fake_waa.marker}",
        "FAKE_SETUP_DUMP": str(dump),
    }


def _task_env(tmp_path: Path, task: str) -> dict[str, str]:
    return json.loads((tmp_path / f"task-env.{task}").read_text())


def test_model_keys_and_token_come_from_key_vault_and_reach_only_the_task(
    start_runner: Any, receiver: Receiver, azure: FakeAzure, fake_waa: FakeWaa, tmp_path: Path
) -> None:
    azure.token_failures = [503]  # IMDS busy once: retried
    azure.vault_failures = [429]  # Key Vault throttles once: retried
    run: Run = start_runner(
        ["ok-0.5", "leak-1"],
        drop=("WAA_HEARTBEAT_TOKEN",),
        WAA_SECRETS_VAULT_URL=azure.base,
        WAA_SECRETS="OPENAI_API_KEY=openai-api-key,AZURE_API_KEY=azure-api-key",
        WAA_HEARTBEAT_TOKEN_SECRET="hb-token",
        WAA_IDENTITY_CLIENT_ID=CLIENT_ID,
        WAA_IMDS_URL=azure.imds_url,
        AZURE_ENDPOINT="https://my-openai.openai.azure.com/",  # plain setting, not a secret
        FAKE_ENV_DUMP=str(tmp_path / "task-env"),
        **_setup_dump(fake_waa, tmp_path),
    )

    assert run.wait() == runner.EXIT_TASKS_FAILED, run.stderr  # leak-1 crashes
    # The token came from the vault: the receiver (which checks it) got every message.
    assert receiver.rejected == [] and receiver.invalid == []
    assert receiver.kinds()[0] == "heartbeat" and receiver.kinds()[-1] == "finished"
    # IMDS was asked for a Key Vault token for the user-assigned identity, with its header.
    assert {r["path"] for r in azure.token_requests} == {"/metadata/identity/oauth2/token"}
    assert azure.token_requests[-1]["query"] == {
        "api-version": "2018-02-01",
        "resource": "https://vault.azure.net",
        "client_id": CLIENT_ID,
    }
    assert len(azure.token_requests) == 2  # one 503, then the token, cached for every secret
    assert sorted(set(azure.vault_requests)) == ["azure-api-key", "hb-token", "openai-api-key"]

    # The task has the model keys (and the plain endpoint), not the heartbeat token.
    env = _task_env(tmp_path, "ok-0.5")
    assert env["OPENAI_API_KEY"] == OPENAI_KEY
    assert env["AZURE_API_KEY"] == AZURE_KEY
    assert env["AZURE_ENDPOINT"] == "https://my-openai.openai.azure.com/"
    assert TOKEN not in env.values() and "WAA_HEARTBEAT_TOKEN" not in env
    # The setup has none of them.
    setup_env = json.loads((tmp_path / "setup-dump.json").read_text())["env"]
    assert not {OPENAI_KEY, AZURE_KEY, TOKEN} & set(setup_env.values())

    secrets = [OPENAI_KEY, AZURE_KEY, TOKEN, ACCESS_TOKEN]
    assert not [s for s in secrets if s in run.stderr]
    assert not [s for s in secrets if s in json.dumps(receiver.messages)]
    assert "read 2 model credential(s) from Key Vault: OPENAI_API_KEY, AZURE_API_KEY" in run.stderr
    # A task that prints its key gets a masked reason; only its own output holds the key.
    [leak] = [m["task_result"] for m in receiver.of_kind("task_result") if "leak" in str(m)]
    assert leak["status"] == "failed" and "my key is ***" in leak["reason"]
    assert _files_holding(run.output_dir, secrets) == ["tasks/leak-1/task.log"]


@pytest.mark.parametrize("variant", ["msi_endpoint", "identity_endpoint"])
def test_azure_ml_and_app_service_identity_endpoints(
    variant: str, start_runner: Any, receiver: Receiver, azure: FakeAzure, tmp_path: Path
) -> None:
    if variant == "msi_endpoint":  # what an Azure ML compute cluster's job sees
        identity = {"MSI_ENDPOINT": f"{azure.base}/msi/token", "MSI_SECRET": MSI_SECRET}
        expected = {"api-version": "2017-09-01", "clientid": CLIENT_ID}
    else:
        identity = {
            "IDENTITY_ENDPOINT": f"{azure.base}/identity/token",
            "IDENTITY_HEADER": IDENTITY_HEADER,
        }
        expected = {"api-version": "2019-08-01", "client_id": CLIENT_ID}
    run: Run = start_runner(
        ["ok-1"],
        WAA_SECRETS_VAULT_URL=azure.base + "/",
        WAA_SECRETS="OPENAI_API_KEY=openai-api-key",
        WAA_IDENTITY_CLIENT_ID=CLIENT_ID,
        WAA_IMDS_URL=f"{azure.base}/not-this-one",
        FAKE_ENV_DUMP=str(tmp_path / "task-env"),
        **identity,
    )

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert [r["query"] for r in azure.token_requests] == [
        {**expected, "resource": "https://vault.azure.net"}
    ]
    env = _task_env(tmp_path, "ok-1")
    assert env["OPENAI_API_KEY"] == OPENAI_KEY
    # What lets this process get tokens is not the agent's business.
    assert not set(identity) & set(env)
    assert not [s for s in (OPENAI_KEY, MSI_SECRET, IDENTITY_HEADER) if s in run.stderr]


def test_a_missing_secret_is_a_failure_naming_it_and_nothing_runs(
    start_runner: Any, receiver: Receiver, azure: FakeAzure, fake_waa: FakeWaa
) -> None:
    run: Run = start_runner(
        ["ok-1"],
        WAA_SECRETS_VAULT_URL=azure.base,
        WAA_SECRETS="OPENAI_API_KEY=openai-api-key,AZURE_API_KEY=no-such-secret",
        WAA_IMDS_URL=azure.imds_url,
    )

    assert run.wait() == runner.EXIT_CONFIG
    [failure] = receiver.of_kind("failure")
    message = failure["failure"]["message"]
    assert failure["failure"]["code"] == "credentials_unavailable"
    assert "'no-such-secret'" in message and "HTTP 404 (SecretNotFound)" in message
    assert OPENAI_KEY not in message and OPENAI_KEY not in run.stderr
    assert receiver.kinds()[0] == "heartbeat"  # the container had started
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_CONFIG
    assert receiver.of_kind("task_result") == []
    assert not fake_waa.marker.exists()  # no boot was attempted


def test_no_token_from_the_vault_means_nothing_can_be_reported(
    start_runner: Any, receiver: Receiver, azure: FakeAzure
) -> None:
    run: Run = start_runner(
        ["ok-1"],
        drop=("WAA_HEARTBEAT_TOKEN",),
        WAA_SECRETS_VAULT_URL=azure.base,
        WAA_HEARTBEAT_TOKEN_SECRET="not-there",
        WAA_IMDS_URL=azure.imds_url,
    )

    assert run.wait() == runner.EXIT_CONFIG
    assert receiver.messages == [] and receiver.rejected == []
    assert "no heartbeat token" in run.stderr and "'not-there'" in run.stderr


def _secrets_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "secrets.env"
    path.write_text(
        f"# copied over SFTP by the VM tier\nWAA_HEARTBEAT_TOKEN={TOKEN}\n\n"
        f"OPENAI_API_KEY='{OPENAI_KEY}'\n"
    )
    path.chmod(mode)
    return path


def test_a_0600_secrets_file_gives_the_token_and_the_model_key(
    start_runner: Any, receiver: Receiver, tmp_path: Path
) -> None:
    path = _secrets_file(tmp_path, 0o600)
    run: Run = start_runner(
        ["ok-1"],
        drop=("WAA_HEARTBEAT_TOKEN",),
        WAA_SECRETS_FILE=str(path),
        FAKE_ENV_DUMP=str(tmp_path / "task-env"),
    )

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.rejected == [] and receiver.kinds()[-1] == "finished"
    env = _task_env(tmp_path, "ok-1")
    assert env["OPENAI_API_KEY"] == OPENAI_KEY  # unquoted
    assert "WAA_HEARTBEAT_TOKEN" not in env and "WAA_SECRETS_FILE" not in env
    assert TOKEN not in env.values()
    assert OPENAI_KEY not in run.stderr and TOKEN not in run.stderr
    assert _files_holding(run.output_dir, [OPENAI_KEY, TOKEN]) == []


def test_a_secrets_file_readable_by_others_is_refused(
    start_runner: Any, receiver: Receiver, tmp_path: Path
) -> None:
    path = _secrets_file(tmp_path, 0o644)
    # The token is only in the refused file: nothing can be reported.
    run: Run = start_runner(["ok-1"], drop=("WAA_HEARTBEAT_TOKEN",), WAA_SECRETS_FILE=str(path))
    assert run.wait() == runner.EXIT_CONFIG
    assert receiver.messages == []
    assert f"WAA_SECRETS_FILE {path} is readable or writable by group or others" in run.stderr
    assert "(mode 0644): refused; it must be mode 0600" in run.stderr
    assert TOKEN not in run.stderr and OPENAI_KEY not in run.stderr

    # With the token given directly, the refusal is reported to the control plane.
    again: Run = start_runner(["ok-1"], WAA_SECRETS_FILE=str(path))
    assert again.wait() == runner.EXIT_CONFIG
    assert receiver.kinds() == ["failure", "finished"]
    failure = receiver.of_kind("failure")[0]["failure"]
    assert failure["code"] == "credentials_unavailable"
    assert str(path) in failure["message"] and "0600" in failure["message"]
    assert OPENAI_KEY not in json.dumps(receiver.messages)
    assert os.stat(path).st_mode & 0o777 == 0o644  # the runner does not "fix" the file
