"""The devhost orchestration engine: runs an app's orchestrators and activities as the Durable
Functions extension does, with full-history replay through the real `azure-functions-durable` SDK.

Model (as in Durable Task Framework): every change to an instance (an activity result, a timer
firing, an external event, a sub-orchestration finishing) is appended to the instance's inbox and
persisted; the dispatcher then runs an *episode*: it sends the whole history plus the new events
to the orchestrator, records the actions the orchestrator yields as history events
(TaskScheduled, TimerCreated, SubOrchestrationInstanceCreated) and starts that work.

Task ids: the SDK numbers every atomic task it schedules in the order it is first yielded
(`_sequence_number`), and matches completions by that number. Retry policies are run by the host;
the SDK reserves one id for the retry timer when it processes a retryable task's failure, and one
for the rescheduled call when that timer fires. To keep both counters equal, an episode delivers
at most one such retry event, and only as its first new event: then the reserved id is the
host's counter at the start of the episode, and the new actions take the following ids.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from devhost.clock import RealClock, VirtualClock
from devhost.errors import (
    EngineCrashedError,
    InstanceExistsError,
    InstanceNotRunningError,
    UnknownFunctionError,
    UnknownInstanceError,
)
from devhost.functions import FunctionIndex
from devhost.store import ACTIVE_STATUSES, FINISHED_STATUSES, InstanceState, InstanceStore
from devhost.worker import FunctionFailedError

log = logging.getLogger(__name__)

# HistoryEventType values (azure.durable_functions.models.history.HistoryEventType).
EXECUTION_STARTED = 0
EXECUTION_COMPLETED = 1
EXECUTION_TERMINATED = 3
TASK_SCHEDULED = 4
TASK_COMPLETED = 5
TASK_FAILED = 6
SUB_ORCHESTRATION_CREATED = 7
SUB_ORCHESTRATION_COMPLETED = 8
SUB_ORCHESTRATION_FAILED = 9
TIMER_CREATED = 10
TIMER_FIRED = 11
ORCHESTRATOR_STARTED = 12
ORCHESTRATOR_COMPLETED = 13
EVENT_RAISED = 15
CONTINUE_AS_NEW = 16

EVENT_TYPE_NAMES = {
    0: "ExecutionStarted",
    1: "ExecutionCompleted",
    2: "ExecutionFailed",
    3: "ExecutionTerminated",
    4: "TaskScheduled",
    5: "TaskCompleted",
    6: "TaskFailed",
    7: "SubOrchestrationInstanceCreated",
    8: "SubOrchestrationInstanceCompleted",
    9: "SubOrchestrationInstanceFailed",
    10: "TimerCreated",
    11: "TimerFired",
    12: "OrchestratorStarted",
    13: "OrchestratorCompleted",
    14: "EventSent",
    15: "EventRaised",
    16: "ContinueAsNew",
    17: "GenericEvent",
    18: "HistoryState",
    19: "ExecutionSuspended",
    20: "ExecutionResumed",
}

# ActionType values (azure.durable_functions.models.actions.ActionType).
CALL_ACTIVITY = 0
CALL_ACTIVITY_WITH_RETRY = 1
CALL_SUB_ORCHESTRATOR = 2
CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
CONTINUE_AS_NEW_ACTION = 4
CREATE_TIMER = 5
WAIT_FOR_EXTERNAL_EVENT = 6
ACTION_NAMES = {
    0: "CallActivity",
    1: "CallActivityWithRetry",
    2: "CallSubOrchestrator",
    3: "CallSubOrchestratorWithRetry",
    4: "ContinueAsNew",
    5: "CreateTimer",
    6: "WaitForExternalEvent",
    7: "CallEntity",
    8: "CallHttp",
    9: "SignalEntity",
}
_SUPPORTED_ACTIONS = {0, 1, 2, 3, 4, 5, 6}
# Replay schema V2 (flat action list with WhenAll/WhenAny compound actions).
UPPER_SCHEMA_VERSION = 1


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class InstanceStatus:
    name: str
    instance_id: str
    runtime_status: str
    input_json: str | None
    output_json: str | None
    custom_status_json: str | None
    created_time: datetime
    last_updated_time: datetime
    history: list[dict[str, Any]] | None = None


@dataclass
class EngineStats:
    episodes: int = 0
    # History events recorded (appended to some instance's history).
    history_events: int = 0
    # Events sent to orchestrators, summed over episodes (the replay work).
    replayed_events: int = 0
    replay_seconds: float = 0.0
    activities_run: int = 0
    # (history length sent, seconds in the SDK) per episode, for the replay benchmark.
    episode_samples: list[tuple[int, float]] = field(default_factory=list)


class CrashInjector:
    """Makes the engine die between an activity's side effect and the recording of its result.

    `CrashInjector(after_activity={"submit_job": 1})` crashes the first time `submit_job`
    returns (or raises): the engine stops as if its process died, nothing more is recorded, and a
    new engine on the same store runs that activity again (at-least-once delivery).
    """

    def __init__(self, after_activity: dict[str, int] | None = None) -> None:
        self._targets = dict(after_activity or {})
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.crashed = threading.Event()

    def activity_returned(self, name: str) -> bool:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
            return self._counts[name] == self._targets.get(name)


class _Crashed(Exception):
    pass


@dataclass
class _Episode:
    instance_id: str
    generation: int
    batch: list[dict[str, Any]]
    started: dict[str, Any]
    context_json: str
    history_len: int


def _flatten(actions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def walk(action: dict[str, Any]) -> None:
        if "compoundActions" in action:
            for child in action["compoundActions"]:
                walk(child)
        else:
            out.append(action)

    for group in actions:
        for action in group:
            walk(action)
    return out


def _action_name(action: dict[str, Any]) -> str | None:
    return action.get("functionName") or action.get("externalEventName")


def _describe(action_type: int, name: str | None) -> str:
    label = ACTION_NAMES.get(action_type, f"action type {action_type}")
    return f"{label} {name!r}" if name else label


class Engine:
    """Runs orchestration instances of one app on a store and a clock (see the module docstring).

    One dispatcher thread runs orchestrator episodes one at a time; activities run on a thread
    pool; durable timers are clock callbacks. In virtual-time mode the dispatcher moves the clock
    to the next scheduled callback whenever nothing is runnable and an instance is active.
    """

    def __init__(
        self,
        functions: FunctionIndex,
        store: InstanceStore,
        clock: VirtualClock | RealClock,
        *,
        task_hub: str = "waaeval",
        crash_injector: CrashInjector | None = None,
        activity_workers: int = 8,
    ) -> None:
        self.functions = functions
        self.store = store
        self._clock = clock
        self.task_hub = task_hub
        self.crash_injector = crash_injector
        self.stats = EngineStats()
        self._cv = threading.Condition(threading.RLock())
        self._instances: dict[str, InstanceState] = {}
        self._ready: deque[str] = deque()
        self._ready_set: set[str] = set()
        self._timer_handles: dict[tuple[str, int, int], Any] = {}
        self._activities_outstanding = 0
        self._episode_running = False
        self._in_flight = 0
        self._idle_epoch = 0
        self._dead = False
        self._stopping = False
        self._started = False
        self._activity_workers = activity_workers
        self._pool: ThreadPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None
        clock.add_listener(self._poke)

    # ------------------------------------------------------------------ lifecycle
    @property
    def clock(self) -> VirtualClock | RealClock:
        return self._clock

    @property
    def crashed(self) -> bool:
        return self._dead

    def start(self) -> None:
        with self._cv:
            if self._started:
                return
            self._started = True
            self._pool = ThreadPoolExecutor(self._activity_workers, thread_name_prefix="activity")
            for state in self.store.load_all():
                self._instances[state.instance_id] = state
            for state in self._instances.values():
                if state.runtime_status in ACTIVE_STATUSES:
                    self._resume(state)
            self._dispatcher = threading.Thread(
                target=self._dispatch_loop, name="devhost-dispatcher", daemon=True
            )
            self._dispatcher.start()

    def stop(self) -> None:
        """Stop dispatching; work in progress is abandoned as a process exit would abandon it."""
        with self._cv:
            self._stopping = True
            self._dead = True
            for handle in self._timer_handles.values():
                handle.cancel()
            self._timer_handles.clear()
            self._cv.notify_all()
        if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _resume(self, state: InstanceState) -> None:
        for tid, timer in state.timers.items():
            self._arm_timer(state, int(tid), _parse_time(timer["fire_at"]))
        for tid, work in state.activities.items():
            self._submit_activity(state.instance_id, state.generation, int(tid), work)
        if state.inbox:
            self._mark_ready(state.instance_id)

    # ------------------------------------------------------------------ client side
    def start_orchestration(
        self, name: str, input_json: str | None, instance_id: str | None = None
    ) -> str:
        if not self.functions.is_orchestrator(name):
            raise UnknownFunctionError(f"no orchestrator function named {name!r}")
        iid = instance_id or uuid.uuid4().hex
        with self._cv:
            self._check_alive()
            existing = self._instances.get(iid)
            if existing is not None and existing.runtime_status in ACTIVE_STATUSES:
                raise InstanceExistsError(f"instance {iid!r} is already {existing.runtime_status}")
            state = self._new_instance(iid, name, input_json, None, None, existing)
            self._persist(state)
            self._mark_ready(iid)
        return iid

    def raise_event(self, instance_id: str, event_name: str, data_json: str | None) -> None:
        with self._cv:
            self._check_alive()
            state = self._instances.get(instance_id)
            if state is None:
                raise UnknownInstanceError(f"no instance {instance_id!r}")
            if state.runtime_status in FINISHED_STATUSES:
                raise InstanceNotRunningError(f"instance {instance_id!r} is {state.runtime_status}")
            self._deliver(
                state, {"EventType": EVENT_RAISED, "Name": event_name, "Input": data_json}
            )

    def terminate(self, instance_id: str, reason: str) -> None:
        with self._cv:
            self._check_alive()
            state = self._instances.get(instance_id)
            if state is None:
                raise UnknownInstanceError(f"no instance {instance_id!r}")
            if state.runtime_status in FINISHED_STATUSES:
                return
            now = self._clock.now()
            self._append_history(
                state,
                [
                    {
                        "EventType": EXECUTION_TERMINATED,
                        "EventId": -1,
                        "Timestamp": _iso(now),
                        "Input": json.dumps(reason),
                    }
                ],
            )
            self._finish(state, "Terminated", json.dumps(reason), failure_reason=reason)
            self._persist(state)

    def get_status(
        self, instance_id: str, *, show_history: bool = False, show_input: bool = True
    ) -> InstanceStatus | None:
        with self._cv:
            state = self._instances.get(instance_id)
            if state is None:
                return None
            return self._status(state, show_history=show_history, show_input=show_input)

    def query(
        self,
        *,
        runtime_status: list[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        instance_id_prefix: str | None = None,
        top: int | None = None,
    ) -> list[InstanceStatus]:
        with self._cv:
            states = sorted(self._instances.values(), key=lambda s: (s.created_time, s.instance_id))
            out = []
            for s in states:
                if runtime_status and s.runtime_status not in runtime_status:
                    continue
                if created_from is not None and s.created_time < created_from:
                    continue
                if created_to is not None and s.created_time > created_to:
                    continue
                if instance_id_prefix and not s.instance_id.startswith(instance_id_prefix):
                    continue
                out.append(self._status(s, show_history=False, show_input=True))
                if top is not None and len(out) >= top:
                    break
            return out

    def purge(self, instance_id: str) -> bool:
        """Delete a finished instance and its history; running instances are not purged."""
        with self._cv:
            self._check_alive()
            state = self._instances.get(instance_id)
            if state is None or state.runtime_status not in FINISHED_STATUSES:
                return False
            del self._instances[instance_id]
            self.store.delete(instance_id)
            return True

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        with self._cv:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cv:
                self._in_flight -= 1
                self._cv.notify_all()

    def wait_for(self, instance_id: str, *, timeout: float = 60.0) -> InstanceStatus:
        with self._cv:
            if instance_id not in self._instances:
                raise UnknownInstanceError(f"no instance {instance_id!r}")

            def done() -> bool:
                s = self._instances.get(instance_id)
                return self._dead or s is None or s.runtime_status in FINISHED_STATUSES

            if not self._cv.wait_for(done, timeout):
                status = self._instances[instance_id].runtime_status
                raise TimeoutError(f"instance {instance_id!r} still {status} after {timeout}s")
            state = self._instances.get(instance_id)
            if state is None:
                raise UnknownInstanceError(f"instance {instance_id!r} was purged")
            if state.runtime_status not in FINISHED_STATUSES:
                raise EngineCrashedError("the engine stopped before the instance finished")
            return self._status(state, show_history=False, show_input=True)

    def wait_idle(self, timeout: float = 60.0) -> None:
        with self._cv:
            epoch = self._idle_epoch
            if not self._cv.wait_for(
                lambda: self._dead or self._idle_locked() or self._idle_epoch != epoch, timeout
            ):
                raise TimeoutError(f"engine not idle after {timeout}s")

    def wait_crashed(self, timeout: float = 60.0) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: self._dead, timeout):
                raise TimeoutError(f"engine did not crash within {timeout}s")

    # ------------------------------------------------------------------ internals: state
    def _check_alive(self) -> None:
        if self._dead:
            raise EngineCrashedError("the engine has stopped")

    def _poke(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def _status(self, s: InstanceState, *, show_history: bool, show_input: bool) -> InstanceStatus:
        return InstanceStatus(
            name=s.name,
            instance_id=s.instance_id,
            runtime_status=s.runtime_status,
            input_json=s.input_json if show_input else None,
            output_json=s.output_json,
            custom_status_json=s.custom_status_json,
            created_time=s.created_time,
            last_updated_time=s.last_updated_time,
            history=[dict(e) for e in s.history] if show_history else None,
        )

    def _new_instance(
        self,
        iid: str,
        name: str,
        input_json: str | None,
        parent_id: str | None,
        parent_task_id: int | None,
        existing: InstanceState | None,
    ) -> InstanceState:
        now = self._clock.now()
        if existing is not None:
            self._drop_pending(existing)
        state = InstanceState(
            instance_id=iid,
            name=name,
            runtime_status="Pending",
            input_json=input_json,
            created_time=now,
            last_updated_time=now,
            parent_instance_id=parent_id,
            parent_task_id=parent_task_id,
            # A new generation, so a table store never mixes in history rows of the old instance.
            generation=existing.generation + 1 if existing is not None else 0,
        )
        state.inbox.append(
            {
                "event": {
                    "EventType": EXECUTION_STARTED,
                    "EventId": -1,
                    "Timestamp": _iso(now),
                    "Name": name,
                    "Input": input_json,
                    "Version": "",
                    "ParentInstance": parent_id,
                },
                "retry": False,
            }
        )
        self._instances[iid] = state
        return state

    def _persist(self, state: InstanceState) -> None:
        if self._dead:
            raise _Crashed()
        state.last_updated_time = self._clock.now()
        self.store.save(state)
        self._cv.notify_all()

    def _mark_ready(self, iid: str) -> None:
        if iid not in self._ready_set:
            self._ready_set.add(iid)
            self._ready.append(iid)
        self._cv.notify_all()

    def _deliver(self, state: InstanceState, event: dict[str, Any], *, retry: bool = False) -> None:
        event = {"EventId": -1, "Timestamp": _iso(self._clock.now()), **event}
        state.inbox.append({"event": event, "retry": retry})
        self._persist(state)
        self._mark_ready(state.instance_id)

    def _append_history(self, state: InstanceState, events: list[dict[str, Any]]) -> None:
        state.history.extend(events)
        self.stats.history_events += len(events)

    def _drop_pending(self, state: InstanceState) -> None:
        for tid in list(state.timers):
            handle = self._timer_handles.pop((state.instance_id, state.generation, int(tid)), None)
            if handle is not None:
                handle.cancel()
        state.timers.clear()
        state.activities.clear()
        state.retries.clear()
        state.children.clear()
        state.inbox.clear()

    def _finish(
        self,
        state: InstanceState,
        status: str,
        output_json: str | None,
        *,
        failure_reason: str | None = None,
    ) -> None:
        self._drop_pending(state)
        state.runtime_status = status
        state.output_json = output_json
        if state.parent_instance_id is None or state.parent_task_id is None:
            return
        parent = self._instances.get(state.parent_instance_id)
        tid = state.parent_task_id
        if (
            parent is None
            or parent.runtime_status not in ACTIVE_STATUSES
            or parent.children.get(str(tid)) != state.instance_id
        ):
            return
        del parent.children[str(tid)]
        if status == "Completed":
            parent.retries.pop(str(tid), None)
            self._deliver(
                parent,
                {
                    "EventType": SUB_ORCHESTRATION_COMPLETED,
                    "TaskScheduledId": tid,
                    "Result": output_json,
                },
            )
        else:
            self._deliver(
                parent,
                {
                    "EventType": SUB_ORCHESTRATION_FAILED,
                    "TaskScheduledId": tid,
                    "Reason": f"Orchestrator function '{state.name}' failed: {failure_reason}",
                    "Details": f"instance {state.instance_id!r} ended {status}",
                },
                retry=str(tid) in parent.retries,
            )

    # ------------------------------------------------------------------ internals: work
    def _arm_timer(self, state: InstanceState, tid: int, fire_at: datetime) -> None:
        key = (state.instance_id, state.generation, tid)
        self._timer_handles[key] = self._clock.call_at(
            fire_at, lambda: self._timer_fired(key, fire_at)
        )

    def _timer_fired(self, key: tuple[str, int, int], fire_at: datetime) -> None:
        iid, gen, tid = key
        with self._cv:
            self._timer_handles.pop(key, None)
            state = self._instances.get(iid)
            if (
                self._dead
                or state is None
                or state.generation != gen
                or state.runtime_status not in ACTIVE_STATUSES
                or state.timers.pop(str(tid), None) is None
            ):
                return
            retry = state.retries.get(str(tid), {}).get("phase") == "timer"
            with contextlib.suppress(_Crashed):
                self._deliver(
                    state,
                    {"EventType": TIMER_FIRED, "TimerId": tid, "FireAt": _iso(fire_at)},
                    retry=retry,
                )

    def _submit_activity(self, iid: str, gen: int, tid: int, work: dict[str, Any]) -> None:
        assert self._pool is not None
        self._activities_outstanding += 1
        try:
            self._pool.submit(self._run_activity, iid, gen, tid, work["name"], work["input"])
        except RuntimeError:
            # The pool is shut down: the engine is stopping, the work stays pending in the store.
            self._activities_outstanding -= 1

    def _run_activity(
        self, iid: str, gen: int, tid: int, name: str, input_json: str | None
    ) -> None:
        try:
            if self._dead:
                return
            failure: tuple[str, str] | None = None
            result: str | None = None
            try:
                result = self.functions.invoke_activity(name, input_json)
            except FunctionFailedError as failed:
                # The worker's own report: "TypeName: message" and the function's stack trace.
                failure = (failed.message, failed.stack_trace)
            except Exception as exc:
                failure = (str(exc) or type(exc).__name__, traceback.format_exc())
            with self._cv:
                self.stats.activities_run += 1
                if self._dead:
                    return
                if self.crash_injector is not None and self.crash_injector.activity_returned(name):
                    log.warning("crash injected after activity %s of %s returned", name, iid)
                    self._crash()
                    return
                state = self._instances.get(iid)
                if (
                    state is None
                    or state.generation != gen
                    or state.runtime_status not in ACTIVE_STATUSES
                    or state.activities.pop(str(tid), None) is None
                ):
                    return
                if failure is None:
                    event = {"EventType": TASK_COMPLETED, "TaskScheduledId": tid, "Result": result}
                    state.retries.pop(str(tid), None)
                    retry = False
                else:
                    event = {
                        "EventType": TASK_FAILED,
                        "TaskScheduledId": tid,
                        "Reason": failure[0],
                        "Details": failure[1],
                    }
                    retry = str(tid) in state.retries
                with contextlib.suppress(_Crashed):
                    self._deliver(state, event, retry=retry)
        finally:
            with self._cv:
                self._activities_outstanding -= 1
                self._cv.notify_all()

    def _crash(self) -> None:
        self._dead = True
        for handle in self._timer_handles.values():
            handle.cancel()
        self._timer_handles.clear()
        if self.crash_injector is not None:
            self.crash_injector.crashed.set()
        self._cv.notify_all()

    # ------------------------------------------------------------------ internals: dispatcher
    def _idle_locked(self) -> bool:
        return (
            not self._ready
            and not self._episode_running
            and self._activities_outstanding == 0
            and self._in_flight == 0
            and not self._clock.busy()
        )

    def _dispatch_loop(self) -> None:
        while True:
            with self._cv:
                episode = None
                while episode is None:
                    if self._stopping or self._dead:
                        return
                    if self._ready:
                        iid = self._ready.popleft()
                        self._ready_set.discard(iid)
                        episode = self._begin_episode(iid)
                        continue
                    if self._idle_locked():
                        self._idle_epoch += 1
                        self._cv.notify_all()
                        if isinstance(self._clock, VirtualClock) and self._has_active():
                            nxt = self._clock.next_time()
                            if nxt is not None and nxt > self._clock.now():
                                self._clock.skip_to_next()
                                continue
                    self._cv.wait(0.5)
                self._episode_running = True
            try:
                self._run_episode(episode)
            except _Crashed:
                pass
            except Exception:
                log.exception("devhost engine: episode of %s failed", episode.instance_id)
            finally:
                with self._cv:
                    self._episode_running = False
                    self._cv.notify_all()

    def _has_active(self) -> bool:
        return any(s.runtime_status in ACTIVE_STATUSES for s in self._instances.values())

    def _begin_episode(self, iid: str) -> _Episode | None:
        state = self._instances.get(iid)
        if state is None or state.runtime_status not in ACTIVE_STATUSES or not state.inbox:
            return None
        # Arrival order is kept; a retry event only ever leads a batch (see module docstring).
        batch = [state.inbox[0]]
        for item in state.inbox[1:]:
            if item["retry"]:
                break
            batch.append(item)
        # The batch stays in the inbox until the episode is applied: a save made meanwhile (an
        # activity result arriving) must not persist a state that lost these events.
        if len(state.inbox) > len(batch):
            self._mark_ready(iid)
        now = self._clock.now()
        started = {"EventType": ORCHESTRATOR_STARTED, "EventId": -1, "Timestamp": _iso(now)}
        history = [{**e, "IsPlayed": True} for e in state.history]
        history.append({**started, "IsPlayed": False})
        history.extend({**item["event"], "IsPlayed": False} for item in batch)
        context = {
            "history": history,
            "instanceId": iid,
            "isReplaying": bool(state.history),
            "parentInstanceId": state.parent_instance_id,
            "input": state.input_json,
            "upperSchemaVersion": UPPER_SCHEMA_VERSION,
        }
        return _Episode(iid, state.generation, batch, started, json.dumps(context), len(history))

    def _run_episode(self, ep: _Episode) -> None:
        with self._cv:
            state = self._instances[ep.instance_id]
            name = state.name
        t0 = time.perf_counter()
        error: str | None = None
        result: dict[str, Any] = {}
        try:
            result = json.loads(self.functions.invoke_orchestrator(name, ep.context_json))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("orchestrator %s of %s raised outside the SDK", name, ep.instance_id)
        elapsed = time.perf_counter() - t0
        with self._cv:
            self.stats.episodes += 1
            self.stats.replayed_events += ep.history_len
            self.stats.replay_seconds += elapsed
            self.stats.episode_samples.append((ep.history_len, elapsed))
            if self._dead:
                raise _Crashed()
            state = self._instances.get(ep.instance_id)
            if (
                state is None
                or state.generation != ep.generation
                or state.runtime_status not in ACTIVE_STATUSES
            ):
                return
            self._apply(state, ep, result, error)

    def _apply(
        self, state: InstanceState, ep: _Episode, result: dict[str, Any], error: str | None
    ) -> None:
        now = _parse_time(ep.started["Timestamp"])
        del state.inbox[: len(ep.batch)]
        self._append_history(state, [ep.started, *(item["event"] for item in ep.batch)])
        scheduled: list[dict[str, Any]] = []
        activities: list[tuple[int, dict[str, Any]]] = []
        # (child id, orchestrator name, input, task id): created only if this episode succeeds.
        children: list[tuple[str, str, str | None, int]] = []

        def ts() -> str:
            return ep.started["Timestamp"]

        def refuse_child(tid: int, reason: str) -> None:
            """The sub-orchestration cannot start: its failure reaches the parent through the
            inbox like any child's failure, so a retry policy on the call still applies."""
            state.inbox.append(
                {
                    "event": {
                        "EventType": SUB_ORCHESTRATION_FAILED,
                        "EventId": -1,
                        "Timestamp": ts(),
                        "TaskScheduledId": tid,
                        "Reason": reason,
                        "Details": "",
                    },
                    "retry": str(tid) in state.retries,
                }
            )

        def schedule_call(retry: dict[str, Any], tid: int) -> None:
            """Record and start an activity or sub-orchestration call with task id `tid`."""
            if retry["kind"] == "activity":
                scheduled.append(
                    {
                        "EventType": TASK_SCHEDULED,
                        "EventId": tid,
                        "Timestamp": ts(),
                        "Name": retry["name"],
                        "Input": retry["input"],
                    }
                )
                work = {"name": retry["name"], "input": retry["input"]}
                state.activities[str(tid)] = work
                activities.append((tid, work))
                return
            child_id = retry["instance_id"] or f"{state.instance_id}:{tid:04d}"
            scheduled.append(
                {
                    "EventType": SUB_ORCHESTRATION_CREATED,
                    "EventId": tid,
                    "Timestamp": ts(),
                    "Name": retry["name"],
                    "InstanceId": child_id,
                    "Input": retry["input"],
                }
            )
            existing = self._instances.get(child_id)
            if (
                existing is not None
                and existing.runtime_status in ACTIVE_STATUSES
                and existing.parent_instance_id == state.instance_id
                and existing.parent_task_id == tid
            ):
                # Created by this very episode before a crash stopped the parent's save.
                state.children[str(tid)] = child_id
                return
            if existing is not None and existing.runtime_status in ACTIVE_STATUSES:
                refuse_child(tid, f"an instance with id {child_id!r} is already running")
                return
            if not self.functions.is_orchestrator(retry["name"]):
                refuse_child(tid, f"no orchestrator function named {retry['name']!r}")
                return
            state.children[str(tid)] = child_id
            children.append((child_id, retry["name"], retry["input"], tid))

        def create_timer(tid: int, fire_at: datetime) -> None:
            scheduled.append(
                {
                    "EventType": TIMER_CREATED,
                    "EventId": tid,
                    "Timestamp": ts(),
                    "FireAt": _iso(fire_at),
                }
            )
            state.timers[str(tid)] = {"fire_at": _iso(fire_at)}

        # 1. The retry event leading the batch reserves the SDK's next id (see module docstring).
        first = ep.batch[0]
        if first["retry"]:
            ev = first["event"]
            if ev["EventType"] in (TASK_FAILED, SUB_ORCHESTRATION_FAILED):
                retry = state.retries.pop(str(ev["TaskScheduledId"]))
                timer_id = state.next_id
                state.next_id += 1
                retry["phase"] = "timer"
                state.retries[str(timer_id)] = retry
                create_timer(timer_id, now + timedelta(milliseconds=retry["interval_ms"]))
            elif ev["EventType"] == TIMER_FIRED:
                retry = state.retries.pop(str(ev["TimerId"]))
                # The SDK fails the task only when the timer after the last attempt fires.
                if retry["attempt"] < retry["max_attempts"]:
                    tid = state.next_id
                    state.next_id += 1
                    retry["attempt"] += 1
                    retry["phase"] = "call"
                    state.retries[str(tid)] = retry
                    schedule_call(retry, tid)

        # 2. Compare the replayed actions with those recorded, then record the new ones.
        flat = _flatten(result.get("actions") or [])
        if error is None:
            error = self._check_determinism(state, flat)
        continue_input: str | None = None
        has_continue = False
        if error is None:
            for action in flat[len(state.actions) :]:
                atype = action.get("actionType")
                aname = _action_name(action)
                if atype not in _SUPPORTED_ACTIONS:
                    error = f"the devhost does not support {_describe(atype, aname)}"
                    break
                tid: int | None = None
                if atype != WAIT_FOR_EXTERNAL_EVENT:
                    tid = state.next_id
                    state.next_id += 1
                state.actions.append([atype, aname, tid])
                if tid is None:
                    continue
                if atype in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY) and not (
                    self.functions.is_activity(aname or "")
                ):
                    error = f"no activity function named {aname!r}"
                    break
                if atype in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY):
                    call = {"kind": "activity", "name": aname, "input": action.get("input")}
                elif atype in (CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY):
                    call = {
                        "kind": "sub",
                        "name": aname,
                        "input": action.get("input"),
                        "instance_id": action.get("instanceId"),
                    }
                else:
                    call = {}
                if atype in (CALL_ACTIVITY_WITH_RETRY, CALL_SUB_ORCHESTRATOR_WITH_RETRY):
                    options = action.get("retryOptions") or {}
                    call.update(
                        interval_ms=int(options.get("firstRetryIntervalInMilliseconds", 1000)),
                        max_attempts=int(options.get("maxNumberOfAttempts", 1)),
                        attempt=1,
                        phase="call",
                    )
                    state.retries[str(tid)] = call
                if call:
                    schedule_call(call, tid)
                elif atype == CREATE_TIMER:
                    fire_at = _parse_time(action["fireAt"])
                    create_timer(tid, fire_at)
                    if action.get("isCanceled"):
                        del state.timers[str(tid)]
                elif atype == CONTINUE_AS_NEW_ACTION:
                    has_continue = True
                    continue_input = action.get("input")

        # 3. Timers the orchestrator cancelled since (it flips isCanceled on the recorded action).
        if error is None:
            for action, recorded in zip(flat, state.actions, strict=False):
                if action.get("actionType") == CREATE_TIMER and action.get("isCanceled"):
                    tid = recorded[2]
                    if state.timers.pop(str(tid), None) is not None:
                        handle = self._timer_handles.pop(
                            (state.instance_id, state.generation, tid), None
                        )
                        if handle is not None:
                            handle.cancel()

        custom = result.get("customStatus")
        state.custom_status_json = json.dumps(custom) if custom is not None else None
        self._append_history(
            state,
            [*scheduled, {"EventType": ORCHESTRATOR_COMPLETED, "EventId": -1, "Timestamp": ts()}],
        )
        if error is None and result.get("error"):
            error = str(result["error"])

        if error is not None:
            self._complete(state, "Failed", json.dumps(error), ts(), failure_reason=error)
            return
        if has_continue:
            self._continue_as_new(state, continue_input)
            return
        if result.get("isDone"):
            self._complete(state, "Completed", json.dumps(result.get("output")), ts())
            return
        state.runtime_status = "Running"
        for tid_str, timer in state.timers.items():
            key = (state.instance_id, state.generation, int(tid_str))
            if key not in self._timer_handles:
                self._arm_timer(state, int(tid_str), _parse_time(timer["fire_at"]))
        for child_id, child_name, child_input, tid in children:
            child = self._new_instance(
                child_id,
                child_name,
                child_input,
                state.instance_id,
                tid,
                self._instances.get(child_id),
            )
            self._persist(child)
            self._mark_ready(child_id)
        self._persist(state)
        for tid, work in activities:
            self._submit_activity(state.instance_id, state.generation, tid, work)
        if state.inbox:
            self._mark_ready(state.instance_id)

    def _check_determinism(self, state: InstanceState, flat: list[dict[str, Any]]) -> str | None:
        for index, (action, recorded) in enumerate(zip(flat, state.actions, strict=False)):
            atype, aname = action.get("actionType"), _action_name(action)
            rtype, rname, rid = recorded
            if atype == rtype and aname == rname:
                continue
            where = f"event id {rid}" if rid is not None else f"action #{index} (no event id)"
            return (
                f"Non-deterministic workflow detected in instance {state.instance_id!r}: at "
                f"{where} the history records {_describe(rtype, rname)} but the orchestrator "
                f"now yields {_describe(atype, aname)}. Orchestrator code must be deterministic."
            )
        return None

    def _complete(
        self,
        state: InstanceState,
        status: str,
        output_json: str,
        ts: str,
        *,
        failure_reason: str | None = None,
    ) -> None:
        self._append_history(
            state,
            [
                {
                    "EventType": EXECUTION_COMPLETED,
                    "EventId": -1,
                    "Timestamp": ts,
                    "OrchestrationStatus": status,
                    "Result": output_json,
                }
            ],
        )
        self._finish(state, status, output_json, failure_reason=failure_reason)
        self._persist(state)

    def _continue_as_new(self, state: InstanceState, new_input: str | None) -> None:
        # External events not yet delivered carry over to the new execution; completions of the
        # old execution's tasks cannot (their ids start again from zero).
        carried = [i for i in state.inbox if i["event"]["EventType"] == EVENT_RAISED]
        self._drop_pending(state)
        now = self._clock.now()
        state.generation += 1
        state.history = []
        state.actions = []
        state.next_id = 0
        state.input_json = new_input
        state.output_json = None
        state.runtime_status = "ContinuedAsNew"
        state.inbox = [
            {
                "event": {
                    "EventType": EXECUTION_STARTED,
                    "EventId": -1,
                    "Timestamp": _iso(now),
                    "Name": state.name,
                    "Input": new_input,
                    "Version": "",
                    "ParentInstance": state.parent_instance_id,
                },
                "retry": False,
            },
            *carried,
        ]
        self._persist(state)
        self._mark_ready(state.instance_id)
