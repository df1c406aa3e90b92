from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from domain.messages import JobMessage
from shard_runner import runner

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
JOB = "waa-eval1-s0-a1"
TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0aabbccddeeff00112233445566778899"


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@dataclass
class Receiver:
    """Records what the shard runner posts, checking token and wire contract."""

    token: str = TOKEN
    down: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)  # status codes answered instead of 200
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
            JobMessage.model_validate(message)  # the wire contract; a 500 here fails the test
            with rec.lock:
                rec.messages.append(message)
            self._answer(200, {"ok": True})

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

    def start(task_ids: list[str], *, single_file: bool = False, **overrides: str) -> Run:
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
        if single_file:
            # The SSH tier ships runner.py alone: it must run without the package around it.
            copy = tmp_path / "shipped" / "runner.py"
            copy.parent.mkdir(exist_ok=True)
            copy.write_text((ROOT / "shard_runner" / "runner.py").read_text())
            argv, cwd = [py, str(copy)], tmp_path
        else:
            argv, cwd = [py, "-m", "shard_runner"], ROOT
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
