"""Clocks for the devhost: a time-skipping virtual clock and the wall clock.

Both implement `domain.clock.Scheduler`. Callbacks run one at a time on the clock's own worker
thread, never under the clock's lock, so a callback may schedule further callbacks or call into
the engine. The engine decides when virtual time may skip (see `Engine`); the clock only knows
which callbacks are due and which one comes next.
"""

from __future__ import annotations

import abc
import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)


class _Handle:
    __slots__ = ("_clock", "callback", "cancelled", "when")

    def __init__(self, clock: _BaseClock, when: datetime, callback: Callable[[], None]) -> None:
        self._clock = clock
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self._clock._cancel(self)


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("clock times must be timezone-aware (UTC)")
    return when.astimezone(UTC)


class _BaseClock(abc.ABC):
    """Heap of callbacks plus one worker thread that runs those that are due."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[datetime, int, _Handle]] = []
        self._seq = itertools.count()
        self._running = 0
        self._closed = False
        self._listeners: list[Callable[[], None]] = []
        self._worker = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._worker.start()

    # Scheduler port
    @abc.abstractmethod
    def now(self) -> datetime: ...

    def call_at(self, when: datetime, callback: Callable[[], None]) -> _Handle:
        handle = _Handle(self, _aware(when), callback)
        with self._cv:
            heapq.heappush(self._heap, (handle.when, next(self._seq), handle))
            self._cv.notify_all()
            listeners = list(self._listeners)
        # A new callback may be what an idle engine was missing to skip ahead.
        for listener in listeners:
            listener()
        return handle

    def call_later(self, delay: timedelta, callback: Callable[[], None]) -> _Handle:
        return self.call_at(self.now() + delay, callback)

    # engine integration
    def add_listener(self, listener: Callable[[], None]) -> None:
        """`listener` is called, without the clock's lock held, after each callback finishes
        and whenever a callback is scheduled."""
        with self._cv:
            self._listeners.append(listener)

    def busy(self) -> bool:
        """True while a callback runs or one is due and not yet started."""
        with self._cv:
            self._drop_cancelled()
            return self._running > 0 or bool(self._heap and self._heap[0][0] <= self._now_locked())

    def next_time(self) -> datetime | None:
        with self._cv:
            self._drop_cancelled()
            return self._heap[0][0] if self._heap else None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify_all()

    # internals
    @abc.abstractmethod
    def _now_locked(self) -> datetime: ...

    def _wait_timeout(self) -> float | None:
        """How long the worker may sleep when nothing is due (None: until notified)."""
        return None

    def _cancel(self, handle: _Handle) -> None:
        with self._cv:
            handle.cancelled = True
            self._cv.notify_all()

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._closed:
                        return
                    self._drop_cancelled()
                    if self._heap and self._heap[0][0] <= self._now_locked():
                        handle = heapq.heappop(self._heap)[2]
                        self._running += 1
                        break
                    self._cv.wait(self._wait_timeout())
                listeners = list(self._listeners)
            try:
                handle.callback()
            except Exception:
                log.exception("clock callback failed")
            finally:
                with self._cv:
                    self._running -= 1
                    self._cv.notify_all()
                for listener in listeners:
                    listener()


class VirtualClock(_BaseClock):
    """Virtual time that only moves when told to (`advance*`, or the engine skipping ahead)."""

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start)
        super().__init__()

    @property
    def virtual(self) -> bool:
        return True

    def now(self) -> datetime:
        with self._cv:
            return self._now

    def _now_locked(self) -> datetime:
        return self._now

    def skip_to(self, when: datetime) -> None:
        """Move time forward to `when` (never backwards); due callbacks then run on the worker."""
        with self._cv:
            if when > self._now:
                self._now = when
            self._cv.notify_all()

    def skip_to_next(self) -> datetime | None:
        """Jump to the earliest scheduled callback, if any is in the future; returns the new now."""
        with self._cv:
            self._drop_cancelled()
            if not self._heap:
                return None
            self._now = max(self._now, self._heap[0][0])
            self._cv.notify_all()
            return self._now

    def wait_quiet(self, timeout: float = 60.0) -> None:
        """Block until no callback is due or running."""
        with self._cv:
            ok = self._cv.wait_for(
                lambda: (
                    self._running == 0
                    and not (
                        self._heap
                        and not self._heap[0][2].cancelled
                        and self._heap[0][0] <= self._now
                    )
                ),
                timeout,
            )
        if not ok:
            raise TimeoutError("virtual clock callbacks did not finish in time")

    def advance_to(self, when: datetime, *, settle: Callable[[], None] | None = None) -> None:
        """Move time to `when`, stopping at each scheduled callback on the way, in time order.

        `settle` (for example `Engine.wait_idle`) runs before each step, so work a callback
        starts is finished before time moves past the next one.
        """
        when = _aware(when)
        while True:
            self.wait_quiet()
            if settle is not None:
                settle()
            with self._cv:
                self._drop_cancelled()
                nxt = self._heap[0][0] if self._heap else None
                if nxt is None or nxt > when:
                    self._now = max(self._now, when)
                    self._cv.notify_all()
                    return
                self._now = max(self._now, nxt)
                self._cv.notify_all()

    def advance(self, delta: timedelta, *, settle: Callable[[], None] | None = None) -> None:
        self.advance_to(self.now() + delta, settle=settle)


class RealClock(_BaseClock):
    """Wall-clock UTC time; callbacks run when their time comes."""

    @property
    def virtual(self) -> bool:
        return False

    def now(self) -> datetime:
        return datetime.now(UTC)

    def _now_locked(self) -> datetime:
        return datetime.now(UTC)

    def _wait_timeout(self) -> float | None:
        if not self._heap:
            return None
        return max(0.0, (self._heap[0][0] - datetime.now(UTC)).total_seconds())


Clock = VirtualClock | RealClock
