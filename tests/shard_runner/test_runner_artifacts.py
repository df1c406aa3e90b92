"""Each task's WAA folder goes to Blob Storage (Azurite here) through per-file SAS URLs that the
control plane mints, after the task's score was sent (issue 9, part 6; CONTRACT.md)."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from devhost.azurite import DEV_ACCOUNT, DEV_KEY
from shard_runner import runner
from tests.shard_runner.conftest import Receiver, Run, _serve
from tests.support.azurite import Azurite

WAA_FILES = ["result.txt", "screenshots/step_0.png", "screenshots/step_1.png", "traj.jsonl"]


@dataclass
class FlakyProxy:
    """Loopback proxy in front of Azurite's Blob endpoint: answers 503 to the first
    `fail[blob path suffix]` PUTs of a blob (as a busy storage front end does), forwards the
    rest unchanged."""

    blob_port: int
    fail: dict[str, int] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)  # blob paths (no SAS) in arrival order
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0


def _proxy_handler(proxy: FlakyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            with proxy.lock:
                proxy.puts.append(path)
                proxy.headers[path] = {k.lower(): v for k, v in self.headers.items()}
                rule = next((k for k in proxy.fail if path.endswith(k)), None)
                failing = rule is not None and proxy.fail[rule] != 0
                if failing and rule is not None:
                    proxy.fail[rule] -= 1  # a negative count never runs out
            if failing:
                data = b"<Error><Code>ServerBusy</Code></Error>"
                self.send_response(503)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            conn = http.client.HTTPConnection("127.0.0.1", proxy.blob_port, timeout=30)
            skip = {"host", "connection", "content-length"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            headers["Content-Length"] = str(len(body))
            conn.request("PUT", self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            conn.close()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[FlakyProxy]:
    p = FlakyProxy(blob_port=azurite.blob_port)
    for server in _serve(_proxy_handler(p)):
        p.port = server.server_address[1]
        yield p


@pytest.fixture
def container(azurite: Azurite) -> Iterator[Any]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    client = service.create_container(f"artifacts-{uuid.uuid4().hex[:12]}")
    yield client
    client.delete_container()


def _minting(proxy: FlakyProxy, container: Any, domains: dict[str, str]) -> Any:
    """The control plane's side of `artifact_urls`, as CONTRACT.md says: one create+write blob
    SAS per file, blob `<evaluation>/<domain>/<task>/attempt-<n>/<path>`, expiring at the
    deadline. Signed with Azurite's account key (in Azure: a user-delegation key)."""
    expiry = datetime.now(UTC) + timedelta(hours=1)
    account_url = f"http://127.0.0.1:{proxy.port}/{DEV_ACCOUNT}/{container.container_name}"

    def answer(message: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        task = message["artifacts"]["task_id"]
        folder = f"eval1/{domains[task.split('#')[0]]}/{task}/attempt-1"
        urls = {}
        for entry in message["artifacts"]["files"]:
            blob = f"{folder}/{entry['path']}"
            sas = generate_blob_sas(
                account_name=DEV_ACCOUNT,
                container_name=container.container_name,
                blob_name=blob,
                account_key=DEV_KEY,
                permission=BlobSasPermissions(create=True, write=True),
                expiry=expiry,
            )
            urls[entry["path"]] = f"{account_url}/{urllib.parse.quote(blob)}?{sas}"
        body = {
            "accepted": True,
            "kind": "artifact_urls",
            "prefix": f"{account_url}/{urllib.parse.quote(folder)}",
            "urls": urls,
            "expires_at": expiry.isoformat(),
        }
        return 200, body

    return answer


def _local(run: Run, item: str, domain: str, trial: str) -> Path:
    task, _, _ = item.partition("#")
    folder = run.output_dir / "tasks" / runner.item_dir_name(item)
    return folder / "pyautogui" / "a11y_tree" / "gpt-4o-mini" / trial / domain / task


def test_artifacts_reach_blob_storage_through_the_sas_and_retries_get_through(
    start_runner: Any, receiver: Receiver, proxy: FlakyProxy, container: Any
) -> None:
    receiver.artifacts = _minting(proxy, container, {"ok-0.75": "notepad", "ok-1": "chrome"})
    proxy.fail = {
        "ok-0.75/attempt-1/traj.jsonl": 2,  # fails twice, then goes through
        "ok-1#2/attempt-1/screenshots/step_1.png": -1,  # never goes through
    }
    run: Run = start_runner(
        ["ok-0.75", "ok-1#2"],
        FAKE_ARTIFACTS="1",
        WAA_ARTIFACT_RETRY_BASE_SECONDS="0.05",
    )

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.invalid == []
    # Scores first: per task, task_result < artifact_urls < artifacts_uploaded < finished (the
    # uploads of one task may overlap the next task: they run beside it).
    order = [
        (m["kind"], (m.get("task_result") or m.get("artifacts") or {}).get("task_id"))
        for m in receiver.messages
        if m["kind"] != "heartbeat"
    ]
    for task in ("ok-0.75", "ok-1#2"):
        steps = [("task_result", task), ("artifact_urls", task), ("artifacts_uploaded", task)]
        assert [order.index(step) for step in steps] == sorted(order.index(s) for s in steps)
    assert order[-1] == ("finished", None) and len(order) == 7
    # The files listed: WAA's folder, relative POSIX paths, sizes; the symlink skipped.
    [first, _second] = receiver.artifact_requests
    assert [f["path"] for f in first["artifacts"]["files"]] == WAA_FILES
    local = _local(run, "ok-0.75", "notepad", "0")
    assert {f["path"]: f["size"] for f in first["artifacts"]["files"]} == {
        p: (local / p).stat().st_size for p in WAA_FILES
    }

    blobs = {b.name: b for b in container.list_blobs()}
    # ok-0.75: everything is in Azurite, byte for byte, the flaky file after two 503s.
    for path in WAA_FILES:
        name = f"eval1/notepad/ok-0.75/attempt-1/{path}"
        assert container.download_blob(name).readall() == (local / path).read_bytes()
    assert (
        proxy.puts.count(
            f"/{DEV_ACCOUNT}/{container.container_name}/eval1/notepad/ok-0.75/attempt-1/traj.jsonl"
        )
        == 3
    )
    png = blobs["eval1/notepad/ok-0.75/attempt-1/screenshots/step_0.png"]
    assert png.content_settings.content_type == "image/png"
    assert png.blob_type == "BlockBlob"
    # The trial item: its folder is WAA's trial 2; one file never went up, after 4 tries.
    trial_local = _local(run, "ok-1#2", "chrome", "2")
    assert (trial_local / "result.txt").read_text() == "1"
    bad = "eval1/chrome/ok-1#2/attempt-1/screenshots/step_1.png"
    assert bad not in blobs
    assert proxy.puts.count(f"/{DEV_ACCOUNT}/{container.container_name}/{bad}") == 4
    for path in ["result.txt", "screenshots/step_0.png", "traj.jsonl"]:
        name = f"eval1/chrome/ok-1#2/attempt-1/{path}"
        assert container.download_blob(name).readall() == (trial_local / path).read_bytes()

    uploaded = {
        m["artifacts"]["task_id"]: m["artifacts"] for m in receiver.of_kind("artifacts_uploaded")
    }
    assert [f["path"] for f in uploaded["ok-0.75"]["files"]] == WAA_FILES
    assert uploaded["ok-0.75"]["failed"] == []
    assert uploaded["ok-1#2"]["failed"] == ["screenshots/step_1.png"]
    assert len(uploaded["ok-1#2"]["files"]) == 3
    # A failed upload changes nothing about the task: both completed with their scores.
    results = {
        m["task_result"]["task_id"]: m["task_result"] for m in receiver.of_kind("task_result")
    }
    assert (results["ok-0.75"]["status"], results["ok-0.75"]["score"]) == ("completed", 0.75)
    assert (results["ok-1#2"]["status"], results["ok-1#2"]["score"]) == ("completed", 1.0)
    # Each PUT is a streamed Put Blob: blob type and length headers.
    headers = proxy.headers[f"/{DEV_ACCOUNT}/{container.container_name}/{bad}"]
    assert headers["x-ms-blob-type"] == "BlockBlob"
    assert headers["content-length"] == str((trial_local / "screenshots/step_1.png").stat().st_size)
    assert "transfer-encoding" not in headers
    # The SAS never shows in the log.
    assert "sig=" not in run.stderr and "upload of screenshots/step_1.png failed" in run.stderr
    assert "uploaded 4 artifact file(s)" in run.stderr


def test_no_artifact_storage_409_skips_uploads_for_the_job(
    start_runner: Any, receiver: Receiver
) -> None:
    # The fake control plane answers 409 by default: artifacts are not configured.
    run: Run = start_runner(["ok-0.5", "ok-1"], FAKE_ARTIFACTS="1")

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert len(receiver.artifact_requests) == 1  # asked once, then never again for this job
    assert receiver.artifact_requests[0]["artifacts"]["task_id"] == "ok-0.5"
    assert receiver.of_kind("artifacts_uploaded") == []
    assert run.stderr.count("artifact storage is not configured") == 1
    assert [m["task_result"]["status"] for m in receiver.of_kind("task_result")] == [
        "completed",
        "completed",
    ]


def test_artifacts_can_be_switched_off(start_runner: Any, receiver: Receiver) -> None:
    run: Run = start_runner(["ok-1"], FAKE_ARTIFACTS="1", WAA_ARTIFACTS="0")
    assert run.wait() == runner.EXIT_OK
    assert receiver.artifact_requests == []
    assert json.dumps(receiver.messages).count("artifact") == 0


def test_a_slow_artifact_urls_answer_blocks_neither_heartbeats_nor_the_next_task(
    start_runner: Any, receiver: Receiver
) -> None:
    seen: dict[str, Any] = {}

    def slow(message: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # Answer only once three more heartbeats and the next task's result have come in
        # meanwhile (bounded: a runner that blocks them makes this give up and the test fail).
        beats = len(receiver.of_kind("heartbeat"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            more = len(receiver.of_kind("heartbeat")) - beats
            results = [m["task_result"]["task_id"] for m in receiver.of_kind("task_result")]
            if more >= 3 and "ok-1" in results:
                seen["ok"] = True
                break
            time.sleep(0.02)
        return 409, {"error": "artifacts are not configured"}

    receiver.artifacts = slow
    run: Run = start_runner(["ok-0.5", "ok-1"], FAKE_ARTIFACTS="1")

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert seen == {"ok": True}
    assert len(receiver.artifact_requests) == 1
