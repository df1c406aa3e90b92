"""Fault injection for the fake Azure services: answer the next matching requests with errors.

The services differ only in their canned errors and in how an error body is shaped, so each
fake passes those in and calls `take_fault` in `handle` at the point where the real service
could first refuse a request (after authentication).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.fakes._http import FakeServer, Reply, Request

# (HTTP status, service error code, message) -> the service's error reply.
ErrorReply = Callable[[int, str, str], Reply]


@dataclass
class Fault:
    reply: Reply
    remaining: int
    matches: Callable[[Request], bool]


class FaultInjectingServer(FakeServer):
    """A fake service whose tests can make it fail: `canned` maps a fault kind ("throttle",
    "quota", ...) to a fresh error reply; `error` shapes any other error the way the service
    does."""

    def __init__(
        self, *, tls: bool, canned: Mapping[str, Callable[[], Reply]], error: ErrorReply
    ) -> None:
        super().__init__(tls=tls)
        self._canned = canned
        self._error_reply = error
        self._faults: list[Fault] = []

    def fail_next(
        self,
        kind: str,
        *,
        count: int = 1,
        when: Callable[[Request], bool] | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `count` matching requests with a canned error of `kind`."""
        reply = self._canned[kind]()
        if retry_after is not None:
            reply.headers["Retry-After"] = retry_after
        self._faults.append(Fault(reply, count, when or (lambda _r: True)))

    def fail_next_with(
        self,
        status: int,
        code: str,
        message: str,
        *,
        count: int = 1,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Answer the next matching requests with this error (e.g. one echoing the request)."""
        reply = self._error_reply(status, code, message)
        self._faults.append(Fault(reply, count, when or (lambda _r: True)))

    def take_fault(self, request: Request) -> Reply | None:
        """The error to answer `request` with, if a pending fault matches it (and uses it up)."""
        for fault in self._faults:
            if fault.remaining > 0 and fault.matches(request):
                fault.remaining -= 1
                return Reply(fault.reply.status, fault.reply.body, dict(fault.reply.headers))
        return None
