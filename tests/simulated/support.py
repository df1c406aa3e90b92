"""Test doubles for driving the simulator: a manual clock and a recording `post`."""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.compute.simulated import SimulatedCloud
from domain.jobs import JobSpec, Tier

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HEARTBEAT_URL = "http://127.0.0.1:7071/api/heartbeats"
EVENTGRID_URL = "http://127.0.0.1:7071/runtime/webhooks/eventgrid?functionName=aml_job_events"


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """A priority queue of callbacks that a test advances explicitly (virtual time)."""

    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._queue: list[tuple[datetime, int, _Handle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    def call_at(self, when: datetime, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._queue, (max(when, self._now), next(self._seq), handle, callback))
        return handle

    def pending(self) -> int:
        return sum(1 for *_, h, _ in self._queue if not h.cancelled)

    def advance(self, seconds: float) -> None:
        self.run_until(self._now + timedelta(seconds=seconds))

    def run_until(self, until: datetime) -> None:
        while self._queue and self._queue[0][0] <= until:
            when, _, handle, callback = heapq.heappop(self._queue)
            if handle.cancelled:
                continue
            self._now = when
            callback()
        self._now = max(self._now, until)

    def run_all(self, limit: timedelta = timedelta(days=2)) -> None:
        """Run until nothing is scheduled (the clock stops at the last callback)."""
        until = self._now + limit
        while True:
            while self._queue and self._queue[0][2].cancelled:
                heapq.heappop(self._queue)
            if not self._queue or self._queue[0][0] > until:
                return
            self.run_until(self._queue[0][0])


@dataclass
class Post:
    at: datetime
    url: str
    headers: dict[str, str]
    body: Any


@dataclass
class Recorder:
    """A `post` function that records every call and answers with a scripted status code."""

    scheduler: ManualScheduler
    posts: list[Post] = field(default_factory=list)
    answer: Callable[[str, dict[str, str], Any], int] = lambda url, headers, body: 200

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> int:
        parsed = json.loads(body)
        self.posts.append(Post(self.scheduler.now(), url, dict(headers), parsed))
        return self.answer(url, headers, parsed)

    def messages(self, job_name: str | None = None) -> list[Post]:
        return [
            p
            for p in self.posts
            if p.url == HEARTBEAT_URL and (job_name is None or p.body["job_name"] == job_name)
        ]

    def events(self, job_name: str | None = None) -> list[Post]:
        return [
            p
            for p in self.posts
            if p.url == EVENTGRID_URL
            and (job_name is None or p.body[0]["data"]["runId"] == job_name)
        ]


def make_cloud(
    profile: str = "none", seed: int = 1, **kwargs: Any
) -> tuple[SimulatedCloud, ManualScheduler, Recorder]:
    sched = ManualScheduler()
    rec = Recorder(sched)
    cloud = SimulatedCloud(
        sched, profile=profile, seed=seed, eventgrid_url=EVENTGRID_URL, post=rec, **kwargs
    )
    return cloud, sched, rec


def spec(
    name: str = "eval1-s0-a1",
    *,
    tier: Tier = Tier.AZURE_ML,
    tasks: int = 3,
    shard: int = 0,
    attempt: int = 1,
    image: str = "windowsarena/winarena:latest",
    timeout_seconds: int = 4 * 3600,
    spot: bool = False,
    evaluation_id: str = "eval1",
) -> JobSpec:
    return JobSpec(
        job_name=name,
        evaluation_id=evaluation_id,
        shard_index=shard,
        attempt=attempt,
        tier=tier,
        task_ids=[f"notepad-task-{i}" for i in range(tasks)],
        vm_size="Standard_D4s_v5",
        spot=spot,
        image=image,
        timeout_seconds=timeout_seconds,
        heartbeat_url=HEARTBEAT_URL,
        heartbeat_token="t0ken-for-tests",
        experiment_name="waa-eval1",
    )
