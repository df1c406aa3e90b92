from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devhost.simulation import Simulation
from domain.messages import JOB_NAME_PATTERN, TASK_ID_PATTERN, JobMessage
from shard_runner import runner

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
JOB = "waa-eval1-s0-a1"
TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0aabbccddeeff00112233445566778899"


class _Server(ThreadingHTTPServer):
    daemon_threads = True


# The additions of CONTRACT.md (issue 9) to domain/messages.py's wire contract, checked here as
# written there: a heartbeat may carry "storage"; kinds "artifact_urls" and "artifacts_uploaded";
# a task id may end in a trial suffix "#<k>", k = 0..9. The rest is checked by JobMessage itself.
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageProgress(_Strict):
    copied_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)
    seconds: float = Field(ge=0)
    done: bool


class ArtifactFile(_Strict):
    path: str = Field(min_length=1, max_length=512, pattern=r"^[^/]")
    size: int = Field(ge=0)


class UrlsRequest(_Strict):
    task_id: str
    files: list[ArtifactFile] = Field(min_length=1, max_length=1000)


class Uploaded(_Strict):
    task_id: str
    files: list[ArtifactFile] = Field(max_length=1000)
    failed: list[str]


class ArtifactMessage(_Strict):
    job_name: str = Field(pattern=JOB_NAME_PATTERN)
    kind: Literal["artifact_urls", "artifacts_uploaded"]
    sent_at: datetime | None = None
    artifacts: UrlsRequest | Uploaded


_TRIAL_TASK_ID = re.compile(r"^(.+)#([0-9])$")


def _check_task_id(task_id: str) -> None:
    match = _TRIAL_TASK_ID.match(task_id)
    base = match.group(1) if match else task_id
    assert re.match(TASK_ID_PATTERN, base), f"bad task id {task_id!r}"


def check_contract(message: dict[str, Any]) -> None:
    """Raises unless `message` is a valid message of the wire contract (with CONTRACT.md)."""
    m = copy.deepcopy(message)
    if m.get("kind") in ("artifact_urls", "artifacts_uploaded"):
        parsed = ArtifactMessage.model_validate(m)
        expected = UrlsRequest if m["kind"] == "artifact_urls" else Uploaded
        assert isinstance(parsed.artifacts, expected), m
        for f in parsed.artifacts.files:
            assert ".." not in f.path.split("/"), f.path
        _check_task_id(parsed.artifacts.task_id)
        return
    if m.get("kind") == "heartbeat" and "storage" in m:
        StorageProgress.model_validate(m.pop("storage"))
    result = m.get("task_result")
    if isinstance(result, dict) and "#" in str(result.get("task_id")):
        _check_task_id(result["task_id"])
        result["task_id"] = result["task_id"].split("#")[0]
    JobMessage.model_validate(m)


@dataclass
class Receiver:
    """Records what the shard runner posts, checking token and wire contract."""

    token: str = TOKEN
    down: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)  # status codes answered instead of 200
    invalid: list[str] = field(default_factory=list)  # messages outside the wire contract
    # Answers `artifact_urls` (message -> status, body); None: 409, artifacts not configured.
    artifacts: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] | None = None
    artifact_requests: list[dict[str, Any]] = field(default_factory=list)
    # Answers `next_task` (message -> (status, body), or None: the connection is dropped
    # without an answer); None: 409, as the app answers a static shard's job.
    next_task: Callable[[dict[str, Any]], tuple[int, dict[str, Any]] | None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/heartbeats?code=functions-key-xyz"

    @property
    def count_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/count"

    def kinds(self) -> list[str]:
        with self.lock:
            return [m["kind"] for m in self.messages]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m["kind"] == kind]


def _receiver_handler(rec: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, code: int, body: dict[str, Any] | None = None) -> None:
            data = json.dumps(body or {}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with rec.lock:
                beats = sum(1 for m in rec.messages if m["kind"] == "heartbeat")
            self._answer(200, {"heartbeat": beats})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not self.path.startswith("/api/heartbeats"):
                self._answer(404)
                return
            if self.headers.get("Authorization") != f"Bearer {rec.token}":
                with rec.lock:
                    rec.rejected.append(401)
                self._answer(401, {"error": "bad token"})
                return
            if rec.down:
                with rec.lock:
                    rec.rejected.append(503)
                self._answer(503, {"error": "down"})
                return
            message = json.loads(body)
            try:
                check_contract(message)
            except (ValidationError, AssertionError) as err:
                with rec.lock:
                    rec.invalid.append(f"{message.get('kind')}: {err}")
                self._answer(400, {"error": "not the wire contract"})
                return
            if message["kind"] == "artifact_urls":
                with rec.lock:
                    rec.artifact_requests.append(message)
                if rec.artifacts is None:
                    self._answer(409, {"error": "artifacts are not configured"})
                    return
                code, answer = rec.artifacts(message)
                if code == 200:
                    with rec.lock:
                        rec.messages.append(message)
                self._answer(code, answer)
                return
            with rec.lock:
                rec.messages.append(message)
            if message["kind"] == "next_task":
                if rec.next_task is None:
                    self._answer(409, {"error": f"job {message['job_name']} is not a queue job"})
                    return
                answer = rec.next_task(message)
                if answer is None:  # the claim happened, its answer is lost on the way
                    self.close_connection = True
                    return
                self._answer(*answer)
                return
            self._answer(202 if message["kind"] == "artifacts_uploaded" else 200, {"ok": True})

    return Handler


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class FakeQueue:
    """The app's `next_task` answers as CONTRACT.md (issue 10) describes them: one task at a
    time, the same one again while the job holds it without a result (a retried ask), then
    exit "queue empty". `faults` maps an ask's number (1-based) to what replaces its answer:
    an HTTP status, or "drop" (the claim is made, the answer never arrives)."""

    rec: Receiver
    tasks: list[tuple[str, str]]  # (task id, domain) in the order handed out
    faults: dict[int, int | str] = field(default_factory=dict)
    holding: str | None = None
    domains: dict[str, str] = field(default_factory=dict)
    asks: int = 0

    def __call__(self, message: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        self.asks += 1
        done = {m["task_result"]["task_id"] for m in self.rec.of_kind("task_result")}
        if self.holding is not None and self.holding in done:
            self.holding = None
        if self.holding is None and self.tasks:
            self.holding, domain = self.tasks.pop(0)
            self.domains[self.holding] = domain
        fault = self.faults.get(self.asks)
        if fault == "drop":
            return None
        if isinstance(fault, int):
            return fault, {"error": "injected"}
        if self.holding is None:
            answer = {"task_id": None, "exit": True, "reason": "queue empty"}
        else:
            answer = {"task_id": self.holding, "domain": self.domains[self.holding]}
        base = {"accepted": True, "kind": "next_task", "domain": "", "duplicate": False}
        return 200, {**base, "exit": False, "reason": "", **answer}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    for server in _serve(_receiver_handler(rec)):
        rec.port = server.server_address[1]
        yield rec


@dataclass
class FakeWaa:
    """The WAA server's readiness probe: ready once `marker` exists (the setup wrote it)."""

    marker: Path
    port: int = 0
    probes: int = 0

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/probe"


@pytest.fixture
def fake_waa(tmp_path: Path) -> Iterator[FakeWaa]:
    waa = FakeWaa(marker=tmp_path / "vm-ready")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            waa.probes += 1
            ok = self.path == "/probe" and waa.marker.exists()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    for server in _serve(Handler):
        waa.port = server.server_address[1]
        yield waa


@dataclass
class Run:
    proc: subprocess.Popen[str]
    output_dir: Path
    stderr_path: Path

    def wait(self, timeout: float = 90) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


@pytest.fixture
def start_runner(tmp_path: Path, receiver: Receiver, fake_waa: FakeWaa) -> Iterator[Any]:
    started: list[Run] = []
    catalog = tmp_path / "test_all.json"
    catalog.write_text(json.dumps({"notepad": ["ok-0.75", "crash-1"], "chrome": ["ok-1"]}))

    def start(
        task_ids: list[str],
        *,
        single_file: bool = False,
        python: str | None = None,
        drop: tuple[str, ...] = (),
        **overrides: str,
    ) -> Run:
        py = sys.executable
        out = tmp_path / "out"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "WAA_JOB_NAME": JOB,
            "WAA_TASK_IDS": ",".join(task_ids),
            "WAA_HEARTBEAT_URL": receiver.url,
            "WAA_HEARTBEAT_TOKEN": TOKEN,
            "WAA_MAX_STEPS": "20",
            "WAA_AGENT": "navi",
            "WAA_MODEL": "gpt-4o-mini",
            "WAA_SOM_ORIGIN": "a11y",
            "WAA_A11Y_BACKEND": "win32",
            "WAA_OUTPUT_DIR": str(out),
            "WAA_HEARTBEAT_INTERVAL_SECONDS": "0.2",
            "WAA_READY_TIMEOUT_SECONDS": "60",
            "WAA_READY_POLL_SECONDS": "0.05",
            "WAA_TASK_TIMEOUT_SECONDS": "60",
            "WAA_KVM_DEVICE": "/dev/null",  # a character device every machine has
            "WAA_SETUP_COMMAND": f"{py} {HERE / 'fake_setup.py'} ready {fake_waa.marker}",
            "WAA_READY_URL": fake_waa.ready_url,
            # WAA's default command line, with the fake run.py in place of the real one.
            "WAA_TASK_COMMAND": runner.DEFAULT_TASK_COMMAND.replace(
                "python run.py", f"{py} {HERE / 'fake_task.py'}"
            ),
            "FAKE_COUNT_URL": receiver.count_url,
            "WAA_TASK_CWD": str(tmp_path),
            "WAA_TASK_CATALOG": str(catalog),
            "WAA_POST_RETRY_BASE_SECONDS": "0.05",
            "WAA_POST_RETRY_MAX_SECONDS": "0.2",
            "WAA_FINAL_FLUSH_SECONDS": "60",
        }
        env.update(overrides)
        for name in drop:
            env.pop(name, None)
        if single_file:
            # The SSH tier ships runner.py alone: it must run without the package around it.
            shipped = tmp_path / "shipped" / "runner.py"
            shipped.parent.mkdir(exist_ok=True)
            shipped.write_text((ROOT / "shard_runner" / "runner.py").read_text())
            argv, cwd = [python or py, str(shipped)], tmp_path
        else:
            argv, cwd = [python or py, "-m", "shard_runner"], ROOT
        stderr_path = tmp_path / f"runner-{len(started)}.log"
        with stderr_path.open("w") as err:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=err, stderr=subprocess.STDOUT, text=True
            )
        run = Run(proc=proc, output_dir=out, stderr_path=stderr_path)
        started.append(run)
        return run

    yield start
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> None:
    """Polls until true; the timeout only bounds a broken run, it is never the assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def sim(azurite_connection_string: str) -> Iterator[Simulation]:
    """The real app on the devhost (real time, no faults), for runners run against it."""
    simulation = Simulation(
        connection_string=azurite_connection_string, profile="none", time_mode="real"
    )
    simulation.start()
    try:
        yield simulation
    finally:
        simulation.stop()
