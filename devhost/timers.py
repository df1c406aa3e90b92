"""Timer triggers: NCRONTAB schedules fired on the engine's clock (virtual or real time).

Azure Functions schedules are six-field NCRONTAB expressions with seconds first
(`0 */5 * * * *`), or a TimeSpan (`00:05:00`) on dedicated plans. A whole-schedule app-setting
reference (`%SWEEP_SCHEDULE%`) is resolved from the environment, as the host does. After each run
the next occurrence is scheduled; a run that starts later than its occurrence (the host was busy
or stopped) gets `past_due=True`, as in Azure.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from croniter import croniter

from devhost.invoke import UserFunction, timer_request
from domain.clock import CallHandle, Scheduler

log = logging.getLogger(__name__)

_SETTING_REF = re.compile(r"^%(?P<name>[^%]+)%$")
_TIMESPAN = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})$")
# How late a run may start and still count as on time: thread wake-up jitter in real-time mode.
ON_TIME_SLACK = timedelta(seconds=1)


class ScheduleError(ValueError):
    """A timer schedule that is neither NCRONTAB nor a TimeSpan, or names a missing setting."""


def resolve_schedule(schedule: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    ref = _SETTING_REF.match(schedule.strip())
    if ref is None:
        return schedule.strip()
    name = ref["name"]
    if name not in env:
        raise ScheduleError(f"timer schedule refers to app setting {name}, which is not set")
    return env[name].strip()


class Schedule:
    """The next occurrences of one resolved schedule expression."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        span = _TIMESPAN.match(expression)
        self._interval: timedelta | None = None
        if span is not None:
            self._interval = timedelta(
                days=int(span["d"] or 0), hours=int(span["h"]), minutes=int(span["m"]),
                seconds=int(span["s"]),
            )  # fmt: skip
            if self._interval <= timedelta(0):
                raise ScheduleError(f"timer interval {expression!r} must be positive")
            return
        if len(expression.split()) != 6:
            raise ScheduleError(
                f"timer schedule {expression!r} is not a six-field NCRONTAB expression "
                "({second} {minute} {hour} {day} {month} {day-of-week}) or a TimeSpan (hh:mm:ss)"
            )
        if not croniter.is_valid(expression, second_at_beginning=True):
            raise ScheduleError(f"timer schedule {expression!r} is not a valid NCRONTAB expression")

    def next_after(self, t: datetime) -> datetime:
        if self._interval is not None:
            return t + self._interval
        nxt: datetime = croniter(self.expression, t, second_at_beginning=True).get_next(datetime)
        return nxt.astimezone(UTC)


class TimerTrigger:
    """Keeps one timer-triggered function scheduled on a `Scheduler` until stopped."""

    def __init__(
        self,
        function: UserFunction,
        scheduler: Scheduler,
        *,
        durable_client: Callable[[], str] | None = None,
    ) -> None:
        self.function = function
        self.scheduler = scheduler
        self._durable_client = durable_client
        props = function.trigger.properties
        self.schedule = Schedule(resolve_schedule(str(props["schedule"])))
        self.run_on_startup = bool(props.get("runOnStartup"))
        self.runs = 0
        self._lock = threading.Lock()
        self._handle: CallHandle | None = None
        self._stopped = True
        self._last: datetime | None = None

    def start(self) -> None:
        with self._lock:
            self._stopped = False
            now = self.scheduler.now()
            first = now if self.run_on_startup else self.schedule.next_after(now)
            self._arm(first)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None

    def _arm(self, when: datetime) -> None:
        self._handle = self.scheduler.call_at(when, lambda: self._fire(when))

    def _fire(self, due: datetime) -> None:
        with self._lock:
            if self._stopped:
                return
        now = self.scheduler.now()
        nxt = self.schedule.next_after(max(now, due))
        past_due = now - due > ON_TIME_SLACK
        try:
            client = self._durable_client() if self._durable_client is not None else None
            request = timer_request(past_due=past_due, last=self._last, next_=nxt)
            self.function.invoke(request, durable_client=client)
        except Exception:
            # As in Azure: the failure is logged and the schedule goes on.
            log.exception("timer function %s failed", self.function.name)
        finally:
            self.runs += 1
            self._last = due
            with self._lock:
                if not self._stopped:
                    self._arm(nxt)
