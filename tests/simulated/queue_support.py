"""A small fake of the app's task queue for the simulator's queue jobs: an HTTP endpoint on
127.0.0.1 that answers `next_task` asks as CONTRACT.md (issue 10) says the app does (a job
holding a task without result gets it again; nothing left -> exit "queue empty"), and a
`Recorder` answer that tells it about the results posted as messages."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from adapters.compute.simulated import SimulatedCloud
from domain.jobs import JobSpec, Tier
from domain.messages import JobMessage, NextTask
from tests.simulated.support import EVENTGRID_URL, ManualScheduler, Recorder

TOKEN = "t0ken-for-tests"


@dataclass
class Ask:
    at: datetime
    job_name: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int
    answer: dict[str, Any] | None


@dataclass
class FakeQueue:
    """The queue: pending task ids (claimed in order), the task each job holds, the asks."""

    scheduler: ManualScheduler
    pending: list[str]
    held: dict[str, str] = field(default_factory=dict)
    results: list[tuple[str, str]] = field(default_factory=list)  # (job, task) in order
    asks: list[Ask] = field(default_factory=list)
    # Scripted HTTP statuses for the next asks (consumed one per ask); 200 when empty. With
    # `process_failed` an ask answered with a scripted status is still processed (a claim
    # whose answer is lost on the way back).
    statuses: list[int] = field(default_factory=list)
    process_failed: bool = False
    exit_reason: str = "queue empty"
    duplicate_of: dict[str, str] = field(default_factory=dict)  # job -> task handed as a copy
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, bytes]:
        with self.lock:
            JobMessage.model_validate(body)  # every ask honours the wire contract
            job = body["job_name"]
            status = self.statuses.pop(0) if self.statuses else 200
            if status != 200 and not self.process_failed:
                self.asks.append(Ask(self.scheduler.now(), job, headers, body, status, None))
                return status, b'{"error": "scripted"}'
            if job in self.duplicate_of:
                answer = NextTask(task_id=self.duplicate_of.pop(job), duplicate=True)
            elif job in self.held:
                answer = NextTask(task_id=self.held[job])
            elif self.pending:
                task = self.pending.pop(0)
                self.held[job] = task
                answer = NextTask(task_id=task, domain="notepad")
            else:
                answer = NextTask(exit=True, reason=self.exit_reason)
            data = {"accepted": True, "kind": "next_task", **answer.model_dump()}
            self.asks.append(Ask(self.scheduler.now(), job, headers, body, status, data))
            return status, json.dumps(data).encode()

    def on_message(self, body: dict[str, Any]) -> None:
        if body.get("kind") == "task_result":
            with self.lock:
                job, task = body["job_name"], body["task_result"]["task_id"]
                self.results.append((job, task))
                if self.held.get(job) == task:
                    del self.held[job]

    def asks_of(self, job_name: str) -> list[Ask]:
        return [a for a in self.asks if a.job_name == job_name]


@contextmanager
def queue_endpoint(queue: FakeQueue) -> Iterator[str]:
    """Serve `queue` on 127.0.0.1 (an ephemeral port); yields the heartbeat URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            status, answer = queue.answer(dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/heartbeats"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def make_queue_cloud(
    url: str,
    queue: FakeQueue,
    *,
    profile: str = "none",
    seed: int = 1,
    **kwargs: Any,
) -> tuple[SimulatedCloud, Recorder]:
    """A cloud on the queue's clock whose messages the Recorder records (and tells the queue
    about) and whose asks go over HTTP to the fake endpoint at `url`."""
    sched = queue.scheduler
    rec = Recorder(sched)
    base: Callable[[str, dict[str, str], Any], int] = rec.answer

    def answer(u: str, headers: dict[str, str], body: Any) -> int:
        if u == url:
            queue.on_message(body)
        return base(u, headers, body)

    rec.answer = answer
    cloud = SimulatedCloud(
        sched, profile=profile, seed=seed, eventgrid_url=EVENTGRID_URL, post=rec, **kwargs
    )
    return cloud, rec


def queue_spec(
    url: str,
    name: str = "eval1-s0-a1",
    *,
    tier: Tier = Tier.AZURE_ML,
    expected: int = 3,
    shard: int = 0,
    attempt: int = 1,
    spot: bool = False,
    timeout_seconds: int = 8 * 3600,
    evaluation_id: str = "eval1",
) -> JobSpec:
    return JobSpec(
        job_name=name,
        evaluation_id=evaluation_id,
        shard_index=shard,
        attempt=attempt,
        tier=tier,
        task_ids=[],
        queue=True,
        expected_tasks=expected,
        vm_size="Standard_D4s_v5",
        spot=spot,
        image="windowsarena/winarena:latest",
        timeout_seconds=timeout_seconds,
        heartbeat_url=url,
        heartbeat_token=TOKEN,
        experiment_name="waa-eval1",
    )
