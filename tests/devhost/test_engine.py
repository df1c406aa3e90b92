"""Conformance tests of the devhost engine: one behaviour of the Durable extension per test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from devhost.clock import RealClock
from devhost.engine import EVENT_TYPE_NAMES, CrashInjector, Engine, InstanceStatus
from devhost.errors import (
    InstanceExistsError,
    InstanceNotRunningError,
    UnknownFunctionError,
    UnknownInstanceError,
)
from devhost.functions import FunctionIndex
from devhost.store import MemoryInstanceStore
from tests.devhost import sample_app
from tests.devhost.conftest import START, EngineFactory

_FRAMING = {"OrchestratorStarted", "OrchestratorCompleted"}


def shape(status: InstanceStatus | None) -> list[tuple[str, int | str | None]]:
    """History as (event type, task id) pairs, without the episode framing events."""
    assert status is not None and status.history is not None
    out: list[tuple[str, int | str | None]] = []
    for ev in status.history:
        name = EVENT_TYPE_NAMES[ev["EventType"]]
        if name in _FRAMING:
            continue
        ref = ev.get("TaskScheduledId", ev.get("TimerId"))
        if ref is None and ev.get("EventId", -1) >= 0:
            ref = ev["EventId"]
        if name == "EventRaised":
            ref = ev["Name"]
        out.append((name, ref))
    return out


def until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def output(status: InstanceStatus) -> Any:
    assert status.output_json is not None
    return json.loads(status.output_json)


def has_event(engine: Engine, iid: str, event_type: str) -> bool:
    status = engine.get_status(iid, show_history=True)
    return status is not None and any(name == event_type for name, _ in shape(status))


def test_activity_call_round_trips_json(engine: Engine) -> None:
    iid = engine.start_orchestration("call_echo", json.dumps({"a": [1, 2], "b": None}), "act1")
    status = engine.wait_for(iid)
    assert status.runtime_status == "Completed"
    assert output(status) == [{"got": {"a": [1, 2], "b": None}}, 42]
    assert shape(engine.get_status(iid, show_history=True)) == [
        ("ExecutionStarted", None),
        ("TaskScheduled", 0),
        ("TaskCompleted", 0),
        ("TaskScheduled", 1),
        ("TaskCompleted", 1),
        ("ExecutionCompleted", None),
    ]
    assert engine.stats.activities_run == 2


def test_retry_failures_then_success(engine: Engine) -> None:
    spec = {"key": "r1", "fail_times": 2, "interval_ms": 30_000, "max_attempts": 3}
    iid = engine.start_orchestration("with_retry", json.dumps(spec))
    status = engine.wait_for(iid)
    assert output(status) == {"result": "ok after 3", "after": {"got": "after"}}
    assert sample_app.calls["flaky:r1"] == 3
    # Failure -> retry timer (next id) -> fired -> rescheduled call (next id), as DTFx records it.
    assert shape(engine.get_status(iid, show_history=True)) == [
        ("ExecutionStarted", None),
        ("TaskScheduled", 0),
        ("TaskFailed", 0),
        ("TimerCreated", 1),
        ("TimerFired", 1),
        ("TaskScheduled", 2),
        ("TaskFailed", 2),
        ("TimerCreated", 3),
        ("TimerFired", 3),
        ("TaskScheduled", 4),
        ("TaskCompleted", 4),
        ("TaskScheduled", 5),
        ("TaskCompleted", 5),
        ("ExecutionCompleted", None),
    ]
    assert engine.clock.now() - START == timedelta(seconds=60)


def test_retry_attempts_exhausted(engine: Engine) -> None:
    spec = {"key": "r2", "fail_times": 99, "interval_ms": 5_000, "max_attempts": 2}
    iid = engine.start_orchestration("with_retry", json.dumps(spec))
    status = engine.wait_for(iid)
    assert status.runtime_status == "Completed"
    # The reason is the worker's report of the activity's exception: "TypeName: message".
    assert output(status) == {"failed": "RuntimeError: flaky failure 2 of r2 "}
    assert sample_app.calls["flaky:r2"] == 2
    # The SDK fails the task when the timer after the last attempt fires.
    assert shape(engine.get_status(iid, show_history=True)) == [
        ("ExecutionStarted", None),
        ("TaskScheduled", 0),
        ("TaskFailed", 0),
        ("TimerCreated", 1),
        ("TimerFired", 1),
        ("TaskScheduled", 2),
        ("TaskFailed", 2),
        ("TimerCreated", 3),
        ("TimerFired", 3),
        ("ExecutionCompleted", None),
    ]


def test_task_any_event_wins_and_losing_timer_is_cancelled(engine: Engine) -> None:
    with engine.in_flight():  # virtual time stands still until the event is raised
        iid = engine.start_orchestration("race", None, "race-event")
        until(lambda: has_event(engine, iid, "TimerCreated"), "the orchestrator to wait")
        engine.raise_event(iid, "approve", json.dumps({"by": "alice"}))
    status = engine.wait_for(iid)
    assert output(status) == {"winner": "event", "data": {"by": "alice"}}
    events = shape(engine.get_status(iid, show_history=True))
    assert ("TimerFired", 0) not in events
    assert events[-3:] == [("TimerCreated", 1), ("TimerFired", 1), ("ExecutionCompleted", None)]
    # Only the cool-down passed, and the cancelled 1-hour deadline never fired.
    assert engine.clock.now() - START == timedelta(hours=2)


def test_task_any_timer_wins(engine: Engine) -> None:
    iid = engine.start_orchestration("race", None, "race-timer")
    status = engine.wait_for(iid)
    assert output(status) == {"winner": "timer"}
    assert shape(engine.get_status(iid, show_history=True)) == [
        ("ExecutionStarted", None),
        ("TimerCreated", 0),
        ("TimerFired", 0),
        ("TimerCreated", 1),
        ("TimerFired", 1),
        ("ExecutionCompleted", None),
    ]
    assert engine.clock.now() - START == timedelta(hours=3)
    with pytest.raises(InstanceNotRunningError):
        engine.raise_event(iid, "approve", "1")


def test_event_raised_before_the_wait_is_buffered(engine: Engine) -> None:
    sample_app.gates["work"] = threading.Event()
    iid = engine.start_orchestration("event_after_work", None)
    until(lambda: sample_app.calls["gated:work"] == 1, "the activity to start")
    engine.raise_event(iid, "go", json.dumps("early"))
    sample_app.gates["work"].set()
    status = engine.wait_for(iid)
    assert output(status) == {"work": "passed work", "event": "early"}
    events = shape(engine.get_status(iid, show_history=True))
    assert events.index(("EventRaised", "go")) < events.index(("TaskCompleted", 0))


def test_fan_out_of_50_sub_orchestrations(engine: Engine) -> None:
    iid = engine.start_orchestration("fan_out", "50", "fan")
    status = engine.wait_for(iid)
    assert output(status) == sum(2 * i for i in range(50))
    children = engine.query(instance_id_prefix="fan:s")
    assert len(children) == 50
    assert {c.runtime_status for c in children} == {"Completed"}
    created = [
        e for e in shape(engine.get_status(iid, show_history=True)) if e[0].startswith("Sub")
    ]
    assert [e for e in created if e[0] == "SubOrchestrationInstanceCreated"] == [
        ("SubOrchestrationInstanceCreated", i) for i in range(50)
    ]
    assert sorted(e[1] for e in created if e[0] == "SubOrchestrationInstanceCompleted") == list(
        range(50)
    )
    # The longest child timer is 5 + 49 minutes.
    assert engine.clock.now() - START == timedelta(minutes=54)


def test_terminate_running_instance(engine: Engine) -> None:
    iid = engine.start_orchestration("wait_forever", None, "term")
    engine.wait_idle()
    assert engine.get_status(iid).runtime_status == "Running"  # type: ignore[union-attr]
    engine.terminate(iid, "operator said stop")
    status = engine.wait_for(iid)
    assert status.runtime_status == "Terminated"
    assert output(status) == "operator said stop"
    with pytest.raises(InstanceNotRunningError):
        engine.raise_event(iid, "finish", "1")
    engine.terminate(iid, "again")  # no-op once finished
    assert output(engine.get_status(iid)) == "operator said stop"  # type: ignore[arg-type]
    with pytest.raises(UnknownInstanceError):
        engine.terminate("nope", "x")


def test_continue_as_new_restarts_with_fresh_history(engine: Engine) -> None:
    iid = engine.start_orchestration("counter", "0", "can")
    status = engine.wait_for(iid)
    assert output(status) == 3
    assert sample_app.calls["echo"] == 3
    final = engine.get_status(iid, show_history=True)
    assert final is not None and final.input_json == "3"
    assert shape(final) == [("ExecutionStarted", None), ("ExecutionCompleted", None)]


def test_custom_status(engine: Engine) -> None:
    iid = engine.start_orchestration("wait_forever", None, "cs")
    engine.wait_idle()
    assert json.loads(engine.get_status(iid).custom_status_json) == {"stage": "waiting"}  # type: ignore[arg-type, union-attr]
    engine.raise_event(iid, "finish", json.dumps([1, 2]))
    status = engine.wait_for(iid)
    assert output(status) == [1, 2]
    assert json.loads(status.custom_status_json) == {"stage": "done"}  # type: ignore[arg-type]


def test_nondeterministic_orchestrator_is_caught(engine: Engine) -> None:
    iid = engine.start_orchestration("nondeterministic", None, "nd-1")
    status = engine.wait_for(iid, timeout=10)
    assert status.runtime_status == "Failed"
    message = output(status)
    assert "'nd-1'" in message
    assert "event id 0" in message
    assert "CallActivity 'echo'" in message
    assert "CreateTimer" in message


def test_orchestrator_exception_fails_instance(engine: Engine) -> None:
    iid = engine.start_orchestration("fails", json.dumps("q"), "boom")
    status = engine.wait_for(iid)
    assert status.runtime_status == "Failed"
    assert "bad input 'q'" in output(status)


def test_sub_orchestration_failure_reaches_parent(engine: Engine) -> None:
    iid = engine.start_orchestration("parent_of_failing", None, "p")
    status = engine.wait_for(iid)
    assert status.runtime_status == "Completed"
    assert "bad input 'x'" in output(status)["caught"]
    assert engine.get_status("p:child").runtime_status == "Failed"  # type: ignore[union-attr]


def test_sub_orchestration_over_a_running_instance_fails_in_the_parent(engine: Engine) -> None:
    running = engine.start_orchestration("wait_forever", None, "p:child")
    status = engine.wait_for(engine.start_orchestration("parent_of_failing", None, "p"))
    assert status.runtime_status == "Completed"
    assert "an instance with id 'p:child' is already running" in output(status)["caught"]
    # The instance that held the id is left alone.
    assert engine.get_status(running).runtime_status == "Running"  # type: ignore[union-attr]
    engine.terminate(running, "done")


def test_sub_orchestration_of_an_unknown_orchestrator_fails_in_the_parent(engine: Engine) -> None:
    status = engine.wait_for(engine.start_orchestration("parent_of_missing", None, "p"))
    assert status.runtime_status == "Completed"
    assert "no orchestrator function named 'no_such_orchestrator'" in output(status)["caught"]
    assert engine.get_status("p:c") is None


def test_virtual_time_skips_a_three_hour_timer(engine: Engine) -> None:
    iid = engine.start_orchestration("long_timer", None)
    status = engine.wait_for(iid, timeout=10)
    assert output(status) == 3 * 3600
    assert engine.clock.now() - START == timedelta(hours=3)


def test_time_skips_only_while_an_instance_is_active(engine: Engine) -> None:
    fired: list[bool] = []
    engine.clock.call_at(START + timedelta(hours=1), lambda: fired.append(True))
    engine.wait_idle()
    # An idle host (no Pending/Running instance) must not spin through scheduled callbacks.
    assert engine.clock.now() == START
    assert fired == []
    iid = engine.start_orchestration("wait_forever", None)
    until(lambda: fired == [True], "the callback to fire in skipped time")
    assert engine.clock.now() == START + timedelta(hours=1)
    engine.terminate(iid, "done")


def test_client_errors(engine: Engine) -> None:
    with pytest.raises(UnknownFunctionError):
        engine.start_orchestration("no_such_orchestrator", None)
    iid = engine.start_orchestration("wait_forever", None, "dup")
    with pytest.raises(InstanceExistsError):
        engine.start_orchestration("wait_forever", None, "dup")
    with pytest.raises(UnknownInstanceError):
        engine.raise_event("missing", "x", None)
    assert engine.get_status("missing") is None
    engine.terminate(iid, "bye")
    engine.wait_for(iid)
    assert engine.purge(iid) is True
    assert engine.get_status(iid) is None


def test_crash_after_activity_reruns_it(make_engine: EngineFactory) -> None:
    store = MemoryInstanceStore()
    crashing = make_engine(store, crash_injector=CrashInjector(after_activity={"submit_job": 1}))
    iid = crashing.start_orchestration("submits", None, "crash-1")
    crashing.wait_crashed()
    assert sample_app.calls["submit_job:crash-1"] == 1
    # Nothing after the side effect was recorded: the activity is still pending in the store.
    (saved,) = store.load_all()
    assert saved.activities == {"0": {"name": "submit_job", "input": '"crash-1"'}}
    assert not any(e["EventType"] == 5 for e in saved.history)
    survivor = make_engine(store)
    status = survivor.wait_for(iid)
    assert output(status) == {"got": "job-crash-1"}
    assert sample_app.calls["submit_job:crash-1"] == 2


def test_real_clock_fires_timers_on_wall_time(index: FunctionIndex) -> None:
    clock = RealClock()
    engine = Engine(index, MemoryInstanceStore(), clock)
    engine.start()
    try:
        iid = engine.start_orchestration("short_timer", "0.2")
        status = engine.wait_for(iid, timeout=20)
        fire_at = datetime.fromisoformat(output(status))
        assert clock.now() >= fire_at
        assert ("TimerFired", 0) in shape(engine.get_status(iid, show_history=True))
    finally:
        engine.stop()
        clock.close()


def test_query_filters(engine: Engine) -> None:
    first = engine.start_orchestration("wait_forever", None, "q-a")
    engine.clock.advance(timedelta(minutes=5))
    engine.start_orchestration("call_echo", "1", "q-b")
    engine.wait_for("q-b")
    engine.start_orchestration("wait_forever", None, "other")
    engine.wait_idle()
    assert [s.instance_id for s in engine.query(instance_id_prefix="q-")] == ["q-a", "q-b"]
    running = engine.query(runtime_status=["Running"])
    assert {s.instance_id for s in running} == {first, "other"}
    later = engine.query(created_from=START + timedelta(minutes=1))
    assert {s.instance_id for s in later} == {"q-b", "other"}
    assert [s.instance_id for s in engine.query(created_to=START)] == ["q-a"]
    assert len(engine.query(top=2)) == 2


def test_function_index_invokes_like_the_worker(index: FunctionIndex) -> None:
    assert {"call_echo", "fan_out", "restartable"} <= set(index.orchestrator_names)
    assert {"echo", "double_async", "flaky"} <= set(index.activity_names)
    assert json.loads(index.invoke_activity("double_async", "4")) == 8
    assert json.loads(index.invoke_activity("echo", None)) == {"got": None}
    with pytest.raises(UnknownFunctionError):
        index.invoke_activity("nope", "1")
    # An orchestrator exception surfaces as the SDK's state JSON with the error, not a raise.
    context = {
        "history": [
            {
                "EventType": 12,
                "EventId": -1,
                "IsPlayed": False,
                "Timestamp": "2026-03-01T09:00:00Z",
            },
            {
                "EventType": 0,
                "EventId": -1,
                "IsPlayed": False,
                "Timestamp": "2026-03-01T09:00:00Z",
                "Name": "fails",
                "Version": "",
            },
            {
                "EventType": 5,
                "EventId": -1,
                "IsPlayed": False,
                "Timestamp": "2026-03-01T09:00:00Z",
                "TaskScheduledId": 0,
                "Result": '"x"',
            },
        ],
        "instanceId": "direct",
        "isReplaying": False,
        "parentInstanceId": None,
        "input": '"z"',
        "upperSchemaVersion": 1,
    }
    state = json.loads(index.invoke_orchestrator("fails", json.dumps(context)))
    assert "bad input 'z'" in state["error"]
    assert state["actions"][0][0]["functionName"] == "echo"


def test_sub_orchestration_retry_recreates_the_child(engine: Engine) -> None:
    iid = engine.start_orchestration("retries_child", None, "sr")
    status = engine.wait_for(iid)
    assert output(status) == "ok after 2"
    assert shape(engine.get_status(iid, show_history=True)) == [
        ("ExecutionStarted", None),
        ("SubOrchestrationInstanceCreated", 0),
        ("SubOrchestrationInstanceFailed", 0),
        ("TimerCreated", 1),
        ("TimerFired", 1),
        ("SubOrchestrationInstanceCreated", 2),
        ("SubOrchestrationInstanceCompleted", 2),
        ("ExecutionCompleted", None),
    ]
    child = engine.get_status("sr:kid")
    assert child is not None and child.runtime_status == "Completed"
    assert engine.clock.now() - START == timedelta(seconds=90)
