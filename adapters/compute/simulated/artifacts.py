"""A simulated job's artifact upload, as the shard runner does it after a task (CONTRACT.md):
ask the heartbeat endpoint for upload URLs (`artifact_urls`), PUT each file to its URL as a
block blob, then report what went up (`artifacts_uploaded`).

Only through the app's public entry points and the storage's own (Azurite Blob on the devhost):
the simulator never signs anything itself. The files are small stand-ins for WAA's result folder
(`result.txt` with the score, a few lines of `traj.jsonl`, a tiny `screenshot.png`), the same for
the same task and score, and drawing them takes no random number, so a seeded world is the same
with uploads on or off.

Runs on the scheduler's worker, like every delivery: virtual time does not move while it
runs, and its retries are scheduled on the same clock. A plain stdlib HTTP client
(urllib.request, each request bounded by a timeout) is used on purpose: urllib3 logs every
request line at DEBUG, and the query of an upload URL is a SAS, a secret.
"""

from __future__ import annotations

import json
import logging
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from adapters.compute.simulated.jobs import Job
from adapters.compute.simulated.timings import MESSAGE_RETRY_DELAYS
from domain.clock import Scheduler
from domain.messages import ArtifactFile, Artifacts, JobMessage, MessageKind, TaskResult

log = logging.getLogger("adapters.compute.simulated")

# (method, url, headers, body) -> (status, body); a connection error raises OSError.
RequestFn = Callable[[str, str, dict[str, str], bytes], tuple[int, bytes]]

REQUEST_TIMEOUT_SECONDS = 10
# Tries of one file's PUT (the runner retries with back-off; here at once, in virtual time).
PUT_TRIES = 3


def http_request(method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code), bytes(err.read())


def _png_1x1() -> bytes:
    """The smallest valid PNG: one grey pixel (signature, IHDR, IDAT, IEND)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit greyscale
    pixels = zlib.compress(b"\x00\x80")  # filter byte 0, one grey pixel
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


SCREENSHOT = _png_1x1()


def task_files(result: TaskResult) -> dict[str, bytes]:
    """WAA's result folder of a task, in small: the score as WAA writes it, three steps of a
    trajectory, one screenshot."""
    steps = [
        {"step_num": i + 1, "action": action, "reward": 0.0, "done": i == 2}
        for i, action in enumerate(("computer.mouse.move(0, 0)", "computer.click()", "DONE"))
    ]
    return {
        "result.txt": f"{result.score}\n".encode(),
        "traj.jsonl": "".join(json.dumps(s) + "\n" for s in steps).encode(),
        "screenshot.png": SCREENSHOT,
    }


@dataclass
class ArtifactUploader:
    scheduler: Scheduler
    request: RequestFn = http_request
    uploads: int = 0  # files PUT successfully (for tests and benchmarks)

    def upload(self, job: Job, result: TaskResult) -> None:
        self._ask(job, result, 0)

    # ---- the three steps -----------------------------------------------------------------------

    def _post(self, job: Job, message: JobMessage) -> tuple[int, bytes]:
        headers = {
            "Authorization": f"Bearer {job.spec.heartbeat_token}",
            "Content-Type": "application/json",
        }
        body = message.model_dump_json(exclude_none=True).encode()
        try:
            return self.request("POST", job.spec.heartbeat_url, headers, body)
        except OSError as err:  # connection refused, timeout: the app is not there (yet)
            log.debug("simulated artifacts post failed: %s", type(err).__name__)
            return 0, b""

    def _retry(self, job: Job, tries: int, again: Callable[[int], None], status: int) -> None:
        retryable = status == 0 or status >= 500 or status in (408, 429)
        if job.silenced or not retryable or tries >= len(MESSAGE_RETRY_DELAYS):
            log.info("simulated artifacts of job %s dropped (status %s)", job.spec.job_name, status)
            return
        when = self.scheduler.now() + timedelta(seconds=MESSAGE_RETRY_DELAYS[tries])
        self.scheduler.call_at(when, lambda: again(tries + 1))

    def _ask(self, job: Job, result: TaskResult, tries: int) -> None:
        if job.silenced or job.hung:
            return
        files = task_files(result)
        message = JobMessage(
            job_name=job.spec.job_name,
            kind=MessageKind.ARTIFACT_URLS,
            sent_at=self.scheduler.now(),
            artifacts=Artifacts(
                task_id=result.task_id,
                files=[ArtifactFile(path=p, size=len(b)) for p, b in files.items()],
            ),
        )
        status, body = self._post(job, message)
        if status == 409:  # artifacts are not configured: the runner skips the upload
            return
        if status != 200:
            self._retry(job, tries, lambda n: self._ask(job, result, n), status)
            return
        urls: dict[str, Any] = json.loads(body).get("urls", {})
        uploaded, failed = [], []
        for path, content in files.items():
            url = urls.get(path)
            if isinstance(url, str) and self._put(url, content):
                uploaded.append(ArtifactFile(path=path, size=len(content)))
            else:
                failed.append(path)
        self.uploads += len(uploaded)
        report = Artifacts(task_id=result.task_id, files=uploaded, failed=failed)
        self._report(job, report, 0)

    def _put(self, url: str, content: bytes) -> bool:
        headers = {"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"}
        for _ in range(PUT_TRIES):
            try:
                status, _ = self.request("PUT", url, headers, content)
            except OSError:
                continue
            if status == 201:
                return True
            if 400 <= status < 500 and status not in (408, 429):
                return False  # refused (e.g. the SAS): trying again changes nothing
        return False

    def _report(self, job: Job, report: Artifacts, tries: int) -> None:
        if job.silenced or job.hung:
            return
        message = JobMessage(
            job_name=job.spec.job_name,
            kind=MessageKind.ARTIFACTS_UPLOADED,
            sent_at=self.scheduler.now(),
            artifacts=report,
        )
        status, _ = self._post(job, message)
        if not 200 <= status < 300:
            self._retry(job, tries, lambda n: self._report(job, report, n), status)
