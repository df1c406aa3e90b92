"""A wall-clock `Scheduler` for running the simulator outside the devhost (e.g. under `func start`).

One daemon thread sleeps until the earliest due callback and runs callbacks one at a time, in
due-time order (ties in submission order), so the simulator sees the same ordering guarantees
as under the devhost's virtual clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

log = logging.getLogger(__name__)


class _Handle:
    __slots__ = ("_cancelled",)

    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled


class ThreadingScheduler:
    def __init__(self, *, name: str = "sim-scheduler") -> None:
        self._cond = threading.Condition()
        self._queue: list[tuple[datetime, int, _Handle, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()
        with self._cond:
            if self._closed:
                raise RuntimeError("scheduler is closed")
            heapq.heappush(self._queue, (when, next(self._seq), handle, callback))
            self._cond.notify()
        return handle

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker thread; callbacks not yet due are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if self._queue:
                        delay = (self._queue[0][0] - datetime.now(UTC)).total_seconds()
                        if delay <= 0:
                            _, _, handle, callback = heapq.heappop(self._queue)
                            break
                        self._cond.wait(delay)
                    else:
                        self._cond.wait()
            if handle.cancelled:
                continue
            try:
                callback()
            except Exception:
                # One failing callback must not stop every other simulated job.
                log.exception("scheduled callback failed")
