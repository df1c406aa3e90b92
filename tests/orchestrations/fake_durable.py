"""An in-process stand-in for the Durable orchestration context, in virtual time.

Drives an orchestrator generator the way the Durable Functions Python samples unit-test theirs
(a mocked `DurableOrchestrationContext`, the generator stepped by hand), with activity fakes
registered under the real activity names as Temporal's samples do. One run of a whole shard
takes about a millisecond, so every path of an orchestration can have its own test; the
end-to-end scenarios on the devhost stay for the invariants.

What it models of the real SDK (azure-functions-durable 1.7, `DurableOrchestrationContext`):
- `call_activity` / `call_activity_with_retry`: the input and the result round-trip through
  JSON, as they do through the extension; an exception fails the task and is thrown into the
  generator; with retry options the activity is called again after `first_retry_interval`
  up to `max_number_of_attempts` times in all.
- `create_timer(fire_at)` with `cancel()` and `is_completed`.
- `wait_for_external_event(name)`: events are buffered by name until waited on, first come
  first served, as the extension buffers them.
- `task_any(tasks)`: the task that completes first in virtual time wins and is what the
  generator receives (the SDK hands back the winning task itself; `.result` holds its value).
- `task_all`, `set_custom_status`, `current_utc_datetime`, `instance_id`, `get_input`.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class StalledError(AssertionError):
    """The orchestration waits for something that will never happen."""


@dataclass(eq=False)
class FakeTask:
    is_completed: bool = False
    is_faulted: bool = False
    result: Any = None

    def _complete(self, value: Any) -> None:
        self.is_completed = True
        self.result = value


@dataclass(eq=False)
class ActivityTask(FakeTask):
    name: str = ""
    input: Any = None
    retry: Any = None


@dataclass(eq=False)
class TimerTask(FakeTask):
    fire_at: datetime = EPOCH
    cancelled: bool = False

    def cancel(self) -> None:
        if self.is_completed:
            raise ValueError("a completed timer cannot be cancelled")
        self.cancelled = True


@dataclass(eq=False)
class EventTask(FakeTask):
    name: str = ""


@dataclass(eq=False)
class AnyTask(FakeTask):
    tasks: list[FakeTask] = field(default_factory=list)


@dataclass(eq=False)
class AllTask(FakeTask):
    tasks: list[FakeTask] = field(default_factory=list)


Activity = Callable[[Any], Any]


class FakeDurableContext:
    """The orchestration context one run of an orchestrator sees, and the world around it."""

    def __init__(
        self,
        orchestration_input: Any,
        *,
        instance_id: str = "eval-1:s0",
        start: datetime = EPOCH,
        activities: dict[str, Activity] | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.current_utc_datetime = start
        self._input = json.loads(json.dumps(orchestration_input))
        self.activities: dict[str, Activity] = dict(activities or {})
        self.custom_statuses: list[Any] = []
        self.calls: list[tuple[datetime, str, Any]] = []  # (when, activity, input)
        self.timers: list[TimerTask] = []
        self._events: list[tuple[datetime, int, str, Any]] = []  # heap of (at, seq, name, data)
        self._seq = itertools.count()

    # --- the SDK's surface ---------------------------------------------------------------------
    def get_input(self) -> Any:
        return self._input

    def set_custom_status(self, status: Any) -> None:
        self.custom_statuses.append(json.loads(json.dumps(status)))

    @property
    def custom_status(self) -> Any:
        return self.custom_statuses[-1] if self.custom_statuses else None

    def call_activity(self, name: str, input_: Any = None) -> ActivityTask:
        return ActivityTask(name=name, input=input_)

    def call_activity_with_retry(self, name: str, retry_options: Any, input_: Any = None) -> Any:
        return ActivityTask(name=name, input=input_, retry=retry_options)

    def create_timer(self, fire_at: datetime) -> TimerTask:
        timer = TimerTask(fire_at=fire_at)
        self.timers.append(timer)
        return timer

    def wait_for_external_event(self, name: str) -> EventTask:
        return EventTask(name=name)

    def task_any(self, tasks: list[Any]) -> AnyTask:
        return AnyTask(tasks=list(tasks))

    def task_all(self, tasks: list[Any]) -> AllTask:
        return AllTask(tasks=list(tasks))

    # --- the world ----------------------------------------------------------------------------
    def raise_event(self, name: str, data: Any = None, *, after: timedelta = timedelta()) -> None:
        """An external event raised on this instance `after` from now (buffered until waited)."""
        at = self.current_utc_datetime + after
        heapq.heappush(self._events, (at, next(self._seq), name, json.loads(json.dumps(data))))

    def calls_of(self, name: str) -> list[Any]:
        return [inp for _, activity, inp in self.calls if activity == name]

    def run(self, orchestrator: Callable[[Any], Generator[Any, Any, Any]]) -> Any:
        """Run the orchestrator to its end; returns its output (raises what it raises)."""
        gen = orchestrator(self)
        send: Any = None
        throw: BaseException | None = None
        for _ in range(100_000):
            try:
                task = gen.throw(throw) if throw is not None else gen.send(send)
            except StopIteration as done:
                return done.value
            send, throw = None, None
            try:
                send = self._resolve(task)
            except _TaskFailed as failed:
                throw = failed.error
        raise StalledError("the orchestration never ended (100,000 steps)")

    # --- resolution in virtual time -----------------------------------------------------------
    def _resolve(self, task: Any) -> Any:
        if isinstance(task, AnyTask):
            winner = self._first_to_complete(task.tasks)
            return winner
        if isinstance(task, AllTask):
            return [self._resolve(t) for t in task.tasks]
        if isinstance(task, ActivityTask):
            return self._run_activity(task)
        if isinstance(task, TimerTask):
            self._fire(task)
            return task.result
        if isinstance(task, EventTask):
            at = self._next_event_time(task.name)
            if at is None:
                raise StalledError(f"waits for event {task.name!r}, which nobody raises")
            self._deliver(task, at)
            return task.result
        raise TypeError(f"the orchestrator yielded {task!r}, not a Durable task")

    def _first_to_complete(self, tasks: list[FakeTask]) -> FakeTask:
        done = next((t for t in tasks if t.is_completed), None)
        if done is not None:
            return done
        candidates: list[tuple[datetime, int, FakeTask]] = []
        for order, t in enumerate(tasks):
            if isinstance(t, TimerTask) and not t.cancelled:
                candidates.append((max(t.fire_at, self.current_utc_datetime), order, t))
            elif isinstance(t, EventTask):
                at = self._next_event_time(t.name)
                if at is not None:
                    candidates.append((at, order, t))
            elif isinstance(t, ActivityTask):
                candidates.append((self.current_utc_datetime, order, t))
        if not candidates:
            names = [getattr(t, "name", type(t).__name__) for t in tasks]
            raise StalledError(f"task_any over {names}: none of them can ever complete")
        # Events first on a tie: in the extension an event already in the queue is in the
        # history before a timer that fires in the same instant.
        at, _, winner = min(candidates, key=lambda c: (c[0], isinstance(c[2], TimerTask), c[1]))
        if isinstance(winner, TimerTask):
            self._fire(winner)
        elif isinstance(winner, EventTask):
            self._deliver(winner, at)
        else:
            assert isinstance(winner, ActivityTask)
            try:
                winner._complete(self._run_activity(winner))
            except _TaskFailed as failed:
                winner.is_completed, winner.is_faulted, winner.result = True, True, failed.error
        return winner

    def _fire(self, timer: TimerTask) -> None:
        if timer.cancelled:
            raise StalledError("waits on a cancelled timer")
        self.current_utc_datetime = max(self.current_utc_datetime, timer.fire_at)
        timer._complete(None)

    def _next_event_time(self, name: str) -> datetime | None:
        times = [at for at, _, n, _ in self._events if n == name]
        return max(min(times), self.current_utc_datetime) if times else None

    def _deliver(self, task: EventTask, at: datetime) -> None:
        entry = min(e for e in self._events if e[2] == task.name)
        self._events.remove(entry)
        heapq.heapify(self._events)
        self.current_utc_datetime = at
        task._complete(entry[3])

    def _run_activity(self, task: ActivityTask) -> Any:
        fake = self.activities.get(task.name)
        if fake is None:
            raise LookupError(f"no fake registered for activity {task.name!r}")
        tries = task.retry.max_number_of_attempts if task.retry is not None else 1
        delay = (
            timedelta(milliseconds=task.retry.first_retry_interval_in_milliseconds)
            if task.retry is not None
            else timedelta()
        )
        for attempt in range(1, tries + 1):
            payload = json.loads(json.dumps(task.input))
            self.calls.append((self.current_utc_datetime, task.name, payload))
            try:
                return json.loads(json.dumps(fake(payload)))
            except Exception as err:
                if attempt == tries:
                    raise _TaskFailed(err) from err
                # Python's RetryOptions has no backoff coefficient: the extension's default
                # of 1 makes every retry wait the first interval.
                self.current_utc_datetime += delay
        raise AssertionError("unreachable")


class _TaskFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error
