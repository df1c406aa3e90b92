"""Small orchestrations and activities for the devhost conformance tests (not the project's app)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

app = df.DFApp()

# Side-effect counters the tests read; activities run on worker threads.
calls: Counter[str] = Counter()
_calls_lock = threading.Lock()
# Set by tests that need an activity to block until they say so.
gates: dict[str, threading.Event] = {}
# Toggled by the nondeterministic orchestrator on every replay.
replays: Counter[str] = Counter()


def reset() -> None:
    calls.clear()
    gates.clear()
    replays.clear()


def _count(key: str) -> int:
    with _calls_lock:
        calls[key] += 1
        return calls[key]


# ------------------------------------------------------------------ activities
@app.activity_trigger(input_name="payload")
def echo(payload: Any) -> Any:
    _count("echo")
    return {"got": payload}


@app.activity_trigger(input_name="n")
async def double_async(n: int) -> int:
    _count("double_async")
    return n * 2


@app.activity_trigger(input_name="spec")
def flaky(spec: dict) -> str:
    """Fails `spec["fail_times"]` times for `spec["key"]`, then succeeds."""
    attempt = _count(f"flaky:{spec['key']}")
    if attempt <= spec["fail_times"]:
        raise RuntimeError(f"flaky failure {attempt} of {spec['key']}")
    return f"ok after {attempt}"


@app.activity_trigger(input_name="name")
def gated(name: str) -> str:
    _count(f"gated:{name}")
    gate = gates.get(name)
    if gate is not None and not gate.wait(30):
        raise TimeoutError(f"gate {name} never opened")
    return f"passed {name}"


@app.activity_trigger(input_name="job")
def submit_job(job: str) -> str:
    # The side effect a crash must not lose: counted before the result is recorded.
    _count(f"submit_job:{job}")
    return f"job-{job}"


# ------------------------------------------------------------------ orchestrators
@app.orchestration_trigger(context_name="context")
def call_echo(context: df.DurableOrchestrationContext):
    first = yield context.call_activity("echo", context.get_input())
    second = yield context.call_activity("double_async", 21)
    return [first, second]


@app.orchestration_trigger(context_name="context")
def with_retry(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    options = df.RetryOptions(spec["interval_ms"], spec["max_attempts"])
    try:
        result = yield context.call_activity_with_retry("flaky", options, spec)
    except Exception as exc:
        return {"failed": str(exc).splitlines()[0]}
    after = yield context.call_activity("echo", "after")
    return {"result": result, "after": after}


@app.orchestration_trigger(context_name="context")
def race(context: df.DurableOrchestrationContext):
    """Approval event vs a 1-hour deadline; afterwards a 2-hour cool-down timer."""
    deadline = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    approval = context.wait_for_external_event("approve")
    winner = yield context.task_any([approval, deadline])
    if winner == approval:
        deadline.cancel()
        outcome = {"winner": "event", "data": approval.result}
    else:
        outcome = {"winner": "timer"}
    # Longer than the deadline, so a deadline left armed would fire while this one runs.
    yield context.create_timer(context.current_utc_datetime + timedelta(hours=2))
    return outcome


@app.orchestration_trigger(context_name="context")
def event_after_work(context: df.DurableOrchestrationContext):
    done = yield context.call_activity("gated", "work")
    data = yield context.wait_for_external_event("go")
    return {"work": done, "event": data}


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input()
    tasks = [
        context.call_sub_orchestrator("fan_child", i, f"{context.instance_id}:s{i}")
        for i in range(count)
    ]
    results = yield context.task_all(tasks)
    return sum(results)


@app.orchestration_trigger(context_name="context")
def fan_child(context: df.DurableOrchestrationContext):
    i = context.get_input()
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=5 + i))
    doubled = yield context.call_activity("double_async", i)
    return doubled


@app.orchestration_trigger(context_name="context")
def wait_forever(context: df.DurableOrchestrationContext):
    context.set_custom_status({"stage": "waiting"})
    data = yield context.wait_for_external_event("finish")
    context.set_custom_status({"stage": "done"})
    return data


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    n = context.get_input()
    if n >= 3:
        return n
    yield context.call_activity("echo", n)
    context.continue_as_new(n + 1)
    return None


@app.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    replays[context.instance_id] += 1
    if replays[context.instance_id] == 1:
        yield context.call_activity("echo", "first run")
    else:
        yield context.create_timer(context.current_utc_datetime + timedelta(minutes=1))
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def fails(context: df.DurableOrchestrationContext):
    yield context.call_activity("echo", "before failing")
    raise ValueError(f"bad input {context.get_input()!r}")


@app.orchestration_trigger(context_name="context")
def parent_of_failing(context: df.DurableOrchestrationContext):
    try:
        yield context.call_sub_orchestrator("fails", "x", f"{context.instance_id}:child")
    except Exception as exc:
        return {"caught": str(exc)}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def parent_of_missing(context: df.DurableOrchestrationContext):
    try:
        yield context.call_sub_orchestrator("no_such_orchestrator", "x", f"{context.instance_id}:c")
    except Exception as exc:
        return {"caught": str(exc)}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def long_timer(context: df.DurableOrchestrationContext):
    start = context.current_utc_datetime
    yield context.create_timer(start + timedelta(hours=3))
    return (context.current_utc_datetime - start).total_seconds()


@app.orchestration_trigger(context_name="context")
def submits(context: df.DurableOrchestrationContext):
    job = yield context.call_activity("submit_job", context.instance_id)
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=15))
    echoed = yield context.call_activity("echo", job)
    return echoed


@app.orchestration_trigger(context_name="context")
def restartable(context: df.DurableOrchestrationContext):
    """Everything a restart must preserve: activities, a retry, timers, children, events."""
    n = context.get_input()
    first = yield context.call_activity("echo", n)
    retried = yield context.call_activity_with_retry(
        "flaky", df.RetryOptions(60_000, 3), {"key": f"restart-{n}", "fail_times": 1}
    )
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=30))
    kids = yield context.task_all(
        [
            context.call_sub_orchestrator("fan_child", n + k, f"{context.instance_id}:c{k}")
            for k in range(2)
        ]
    )
    signal = yield context.wait_for_external_event("resume")
    context.set_custom_status({"n": n})
    return {
        "first": first,
        "retried": retried,
        "kids": kids,
        "signal": signal,
        "finished_at": context.current_utc_datetime.isoformat(),
    }


@app.orchestration_trigger(context_name="context")
def short_timer(context: df.DurableOrchestrationContext):
    fire_at = context.current_utc_datetime + timedelta(seconds=context.get_input())
    yield context.create_timer(fire_at)
    return fire_at.isoformat()


@app.orchestration_trigger(context_name="context")
def mixed(context: df.DurableOrchestrationContext):
    """Concurrent activities, a timer, children and an event; output independent of counters."""
    n = context.get_input()
    echoes = yield context.task_all([context.call_activity("echo", [n, i]) for i in range(6)])
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=20))
    kids = yield context.task_all(
        [
            context.call_sub_orchestrator("fan_child", n + k, f"{context.instance_id}:c{k}")
            for k in range(3)
        ]
    )
    signal = yield context.wait_for_external_event("resume")
    return {
        "echoes": echoes,
        "kids": kids,
        "signal": signal,
        "finished_at": context.current_utc_datetime.isoformat(),
    }


@app.orchestration_trigger(context_name="context")
def flaky_child(context: df.DurableOrchestrationContext):
    result = yield context.call_activity("flaky", context.get_input())
    return result


@app.orchestration_trigger(context_name="context")
def retries_child(context: df.DurableOrchestrationContext):
    spec = {"key": context.instance_id, "fail_times": 1}
    result = yield context.call_sub_orchestrator_with_retry(
        "flaky_child", df.RetryOptions(90_000, 3), spec, f"{context.instance_id}:kid"
    )
    return result
