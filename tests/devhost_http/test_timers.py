from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest

from devhost.clock import VirtualClock
from devhost.host import DevHost
from devhost.invoke import UserFunction
from devhost.timers import Schedule, ScheduleError, TimerTrigger, resolve_schedule

START = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    c = VirtualClock(START)
    yield c
    c.close()


def _timer_function(schedule: str, fired: list[tuple[datetime, bool]], clock: VirtualClock,
                    *, run_on_startup: bool = False) -> UserFunction:  # fmt: skip
    app = df.DFApp()

    @app.timer_trigger(schedule=schedule, arg_name="timer", run_on_startup=run_on_startup)
    def sweep(timer: func.TimerRequest) -> None:
        fired.append((clock.now(), timer.past_due))

    (function,) = app.get_functions()
    return UserFunction.from_function(function)


def test_fires_on_every_occurrence_of_a_six_field_schedule(clock: VirtualClock) -> None:
    fired: list[tuple[datetime, bool]] = []
    timer = TimerTrigger(_timer_function("0 */5 * * * *", fired, clock), clock)
    timer.start()
    clock.advance(timedelta(hours=1))
    timer.stop()

    assert len(fired) == 12
    assert [t for t, _ in fired] == [
        datetime(2026, 3, 1, 12, 5, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(12)
    ]
    assert not any(past_due for _, past_due in fired)
    assert timer.runs == 12


def test_stopped_timer_fires_no_more(clock: VirtualClock) -> None:
    fired: list[tuple[datetime, bool]] = []
    timer = TimerTrigger(_timer_function("0 */5 * * * *", fired, clock), clock)
    timer.start()
    clock.advance(timedelta(minutes=11))
    timer.stop()
    clock.advance(timedelta(hours=1))
    assert len(fired) == 2


def test_schedule_from_app_setting_and_run_on_startup(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SWEEP_SCHEDULE", "0 0 * * * *")
    fired: list[tuple[datetime, bool]] = []
    timer = TimerTrigger(
        _timer_function("%TEST_SWEEP_SCHEDULE%", fired, clock, run_on_startup=True), clock
    )
    timer.start()
    clock.advance(timedelta(hours=3))
    timer.stop()
    assert [t for t, _ in fired] == [
        START,
        datetime(2026, 3, 1, 13, tzinfo=UTC),
        datetime(2026, 3, 1, 14, tzinfo=UTC),
        datetime(2026, 3, 1, 15, tzinfo=UTC),
    ]


def test_late_run_is_past_due_and_a_failing_run_keeps_the_schedule(clock: VirtualClock) -> None:
    fired: list[tuple[datetime, bool]] = []
    app = df.DFApp()

    @app.timer_trigger(schedule="00:10:00", arg_name="timer")
    def flaky(timer: func.TimerRequest) -> None:
        fired.append((clock.now(), timer.past_due))
        raise RuntimeError("boom")

    (function,) = app.get_functions()
    timer = TimerTrigger(UserFunction.from_function(function), clock)
    # Occupy the clock's worker past the first occurrence, so that run starts 3 minutes late.
    clock.call_at(
        START + timedelta(minutes=10), lambda: clock.skip_to(START + timedelta(minutes=13))
    )
    timer.start()
    clock.advance(timedelta(minutes=30))
    timer.stop()
    assert fired == [
        (START + timedelta(minutes=13), True),
        (START + timedelta(minutes=23), False),
    ]


def test_schedule_errors_name_the_problem() -> None:
    with pytest.raises(ScheduleError, match="MISSING_SETTING"):
        resolve_schedule("%MISSING_SETTING%", {})
    with pytest.raises(ScheduleError, match="six-field"):
        Schedule("*/5 * * * *")
    with pytest.raises(ScheduleError, match="not a valid"):
        Schedule("0 */5 * * * nonsense")
    assert resolve_schedule("%S%", {"S": " 0 * * * * * "}) == "0 * * * * *"


def test_timer_trigger_on_the_devhost_starts_orchestrations_in_virtual_time(
    start_host: Callable[..., DevHost],
) -> None:
    fired: list[datetime] = []
    app = df.DFApp()

    @app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
    @app.durable_client_input(client_name="client")
    async def sweeper(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
        fired.append(host.clock.now())
        await client.start_new("sweep", f"sweep-{len(fired)}", {"round": len(fired)})

    @app.orchestration_trigger(context_name="context")
    def sweep(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
        result: int = yield context.call_activity("count", context.get_input()["round"])
        return result

    @app.activity_trigger(input_name="n")
    def count(n: int) -> int:
        return n * 10

    host = start_host(app)
    start = host.clock.now()
    host.clock.advance(timedelta(hours=1), settle=host.engine.wait_idle)
    host.engine.wait_idle()

    assert len(fired) == 12
    assert fired[0] - start <= timedelta(minutes=5)
    assert all(b - a == timedelta(minutes=5) for a, b in itertools.pairwise(fired))
    done = host.engine.query(runtime_status=["Completed"])
    assert sorted(json.loads(s.output_json or "null") for s in done) == [
        10 * i for i in range(1, 13)
    ]
