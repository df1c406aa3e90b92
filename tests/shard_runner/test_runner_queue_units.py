"""Queue mode's pieces in-process: the synchronous ask, the claim margin on a fake clock, the
reading of `next_task` answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from domain.messages import TASK_ID_PATTERN, NextTask
from shard_runner import runner

ENV = {
    "WAA_JOB_NAME": "waa-e-w0-a1",
    "WAA_HEARTBEAT_URL": "http://127.0.0.1:1/api/heartbeats",
    "WAA_HEARTBEAT_TOKEN": "secret-token-value",
    "WAA_TASK_SOURCE": "queue",
    "WAA_TASK_IDS": "",
}


class _Script:
    """What the fake endpoint answers, one entry per request: (status, body bytes) or None
    (close the connection without an answer)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes] | None] = []
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str] = []


@pytest.fixture
def endpoint() -> Iterator[tuple[str, _Script]]:
    script = _Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            script.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            script.auth.append(self.headers.get("Authorization", ""))
            answer = script.answers.pop(0) if script.answers else (500, b"{}")
            if answer is None:
                self.close_connection = True
                return
            status, body = answer
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/heartbeats?code=k", script
    finally:
        server.shutdown()
        server.server_close()


def _sender(url: str, **kw: Any) -> runner.Sender:
    return runner.Sender(url, "tok-1234", retry_base=0.001, retry_max=0.005, **kw)


def test_ask_returns_the_json_answer_after_transient_failures(
    endpoint: tuple[str, _Script],
) -> None:
    url, script = endpoint
    script.answers = [
        (503, b'{"error": "down"}'),
        None,  # no answer at all
        (200, b'{"task_id": "t1", "doma'),  # cut off: not JSON, asked again
        (429, b"{}"),
        (200, b'{"accepted": true, "kind": "next_task", "task_id": "t1", "domain": "chrome"}'),
    ]
    sender = _sender(url)
    try:
        reply = sender.ask({"kind": "next_task", "job_name": "j"}, tries=5)
    finally:
        sender.close(1)
    assert reply.outcome == runner.Reply.OK and reply.status == 200
    assert reply.data["task_id"] == "t1"
    assert len(script.bodies) == 5 and all(b["kind"] == "next_task" for b in script.bodies)
    assert set(script.auth) == {"Bearer tok-1234"}


@pytest.mark.parametrize(
    ("answers", "tries", "outcome", "status", "asked"),
    [
        ([(409, b'{"error": "not a queue job"}')], 5, runner.Reply.REFUSED, 409, 1),
        ([(404, b"{}")], 5, runner.Reply.REFUSED, 404, 1),
        ([(403, b"{}")] * 3, 5, runner.Reply.AUTH, 403, 3),  # auth_retries=2: 3 tries
        ([(500, b"{}"), None, (502, b"{}")], 3, runner.Reply.GAVE_UP, None, 3),
        ([(200, b"[1, 2]")] * 2, 2, runner.Reply.GAVE_UP, None, 2),  # not an object
    ],
)
def test_ask_ends_on_what_will_not_change_and_after_its_tries(
    endpoint: tuple[str, _Script],
    answers: list[tuple[int, bytes] | None],
    tries: int,
    outcome: str,
    status: int | None,
    asked: int,
) -> None:
    url, script = endpoint
    script.answers = list(answers)
    sender = _sender(url, auth_retries=2)
    try:
        reply = sender.ask({"kind": "next_task"}, tries=tries)
    finally:
        sender.close(1)
    assert (reply.outcome, len(script.bodies)) == (outcome, asked)
    if status is not None:
        assert reply.status == status
    if status == 409:
        assert reply.why.endswith(": not a queue job")  # the app's own words, for the log
    assert "code=k" not in reply.why  # the URL's query is never in a reason


def test_ask_stops_between_tries_when_told(endpoint: tuple[str, _Script]) -> None:
    url, script = endpoint
    script.answers = [(503, b"{}")] * 5
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    sender = _sender(url)
    try:
        reply = sender.ask({"kind": "next_task"}, tries=5, stop=stop)
    finally:
        sender.close(1)
    assert reply.outcome == runner.Reply.STOPPED
    assert len(script.bodies) == 2  # stop() is asked between tries: before the 2nd and 3rd


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _FakeSender:
    """Answers `ask` from a list, without a network; each ask (and the task run after it)
    takes `step` seconds of the fake clock."""

    disabled = False

    def __init__(self, replies: list[runner.Reply], clock: _Clock, step: float) -> None:
        self.replies = replies
        self.clock = clock
        self.step = step
        self.asked: list[dict[str, object]] = []

    def ask(self, message: dict[str, object], tries: int, stop: Any = None) -> runner.Reply:
        self.asked.append(message)
        self.clock.now += self.step
        return self.replies.pop(0)


def _queue(
    cfg: runner.Config,
    replies: list[runner.Reply],
    clock: _Clock,
    step: float = 1.0,
    catalog: dict[str, str] | None = None,
) -> tuple[runner.TaskQueue, _FakeSender]:
    sender = _FakeSender(replies, clock, step)
    reporter = runner.Reporter(cfg.job_name, sender)  # type: ignore[arg-type]
    return runner.TaskQueue(cfg, reporter, catalog or {}, clock.now, clock=clock), sender


def _task(task_id: str | None, **fields: object) -> runner.Reply:
    data: dict[str, object] = {"accepted": True, "kind": "next_task", "task_id": task_id}
    data.update(fields)
    return runner.Reply(runner.Reply.OK, 200, data)


def test_the_claim_margin_stops_asking_once_too_little_time_is_left() -> None:
    cfg = runner.Config(
        {**ENV, "WAA_JOB_TIMEOUT_SECONDS": "7200", "WAA_CLAIM_MARGIN_SECONDS": "1800"}
    )
    clock = _Clock()
    # Each task takes 2000 s: after the first (5200 s left) it asks again; after the second
    # (3200 s left) too; after the third, 1200 s are left: under the margin, it stops.
    queue, sender = _queue(cfg, [_task("a"), _task("b"), _task("c"), _task("d")], clock, 2000)
    handed = []
    while True:
        assignment = queue.next()
        if assignment.item is None:
            break
        handed.append(assignment.item)
    assert handed == ["a", "b", "c"]
    assert queue.asks == 3 and len(sender.asked) == 3
    assert assignment.exit_code == runner.EXIT_OK and not assignment.failure
    assert assignment.stop == (
        "1200 s left of the job's 7200 s timeout, under the claim margin of 1800 s"
    )
    assert {k: sender.asked[0][k] for k in ("kind", "job_name")} == {
        "kind": "next_task",
        "job_name": "waa-e-w0-a1",
    }


def test_without_a_job_timeout_it_asks_until_told_to_exit() -> None:
    cfg = runner.Config(ENV)
    assert (cfg.job_timeout, cfg.claim_margin, cfg.next_task_tries) == (0, 1800, 12)
    clock = _Clock()
    queue, _ = _queue(cfg, [_task("a"), _task(None, exit=True, reason="deadline")], clock, 1e6)
    assert queue.next().item == "a"
    stop = queue.next()
    assert (stop.item, stop.stop) == (None, "the control plane says exit: deadline")


@pytest.mark.parametrize(
    ("reply", "exit_code", "words"),
    [
        (_task("../../etc"), runner.EXIT_INTERNAL, "neither exit nor a valid task id"),
        (_task("t1#12"), runner.EXIT_INTERNAL, "neither exit nor a valid task id"),
        (_task(None), runner.EXIT_INTERNAL, "neither exit nor a valid task id"),
        (runner.Reply(runner.Reply.REFUSED, 400, why="HTTP 400"), runner.EXIT_INTERNAL, "refused"),
        (runner.Reply(runner.Reply.AUTH, 403, why="HTTP 403"), runner.EXIT_CONFIG, ""),
        (runner.Reply(runner.Reply.REFUSED, 409, why="HTTP 409"), runner.EXIT_CONFIG, "409"),
    ],
)
def test_answers_that_cannot_be_run_end_the_job_with_a_reason(
    reply: runner.Reply, exit_code: int, words: str
) -> None:
    clock = _Clock()
    queue, _ = _queue(runner.Config(ENV), [reply], clock)
    assignment = queue.next()
    assert (assignment.item, assignment.exit_code) == (None, exit_code)
    assert words in assignment.failure


def test_the_domain_comes_from_the_answer_else_the_catalog() -> None:
    clock = _Clock()
    replies = [
        _task("t1", domain="office"),
        _task("t2#4", domain=""),
        _task("t3", domain="../up"),  # not a folder name: the catalog's instead
        _task("t4"),
    ]
    catalog = {"t1": "notepad", "t2": "chrome", "t3": "vlc"}
    queue, _ = _queue(runner.Config(ENV), replies, clock, catalog=catalog)
    assert [(a.item, a.domain) for a in (queue.next() for _ in range(4))] == [
        ("t1", "office"),
        ("t2#4", "chrome"),
        ("t3", "vlc"),
        ("t4", "unknown"),
    ]


def test_the_task_id_rule_is_the_wire_contracts() -> None:
    assert runner._TASK_ID.pattern == TASK_ID_PATTERN
    # The answer's fields, as the runner reads them, are NextTask's.
    assert set(NextTask.model_fields) == {"task_id", "domain", "duplicate", "exit", "reason"}


def test_queue_settings_are_validated() -> None:
    with pytest.raises(runner.ConfigError) as err:
        runner.Config({**ENV, "WAA_TASK_SOURCE": "pull", "WAA_CLAIM_MARGIN_SECONDS": "-1"})
    assert "WAA_TASK_SOURCE must be static or queue, got 'pull'" in str(err.value)
    assert "WAA_CLAIM_MARGIN_SECONDS must be at least 0" in str(err.value)
    with pytest.raises(runner.ConfigError, match="WAA_TASK_IDS must be empty"):
        runner.Config({**ENV, "WAA_TASK_IDS": "a,b"})
    assert repr(runner.Config(ENV)) == "Config(job_name='waa-e-w0-a1', tasks=queue)"
    static = runner.Config({**ENV, "WAA_TASK_SOURCE": "", "WAA_TASK_IDS": "a"})
    assert (static.queue, static.task_ids) == (False, ["a"])


def test_a_task_this_job_ran_is_never_run_again() -> None:
    clock = _Clock()
    cfg = runner.Config(ENV)
    queue, _ = _queue(cfg, [_task("t1"), _task("t1")], clock)
    assert queue.next().item == "t1"
    again = queue.next()
    assert (again.item, again.exit_code) == (None, runner.EXIT_INTERNAL)
    assert "handed task t1 again after this job ran it" in again.failure
    # Handed again after its result was recorded here: the result is sent once more, then the
    # job refuses the task.
    queue, _ = _queue(cfg, [_task("t1"), _task("t1"), _task("t1")], clock)
    result: dict[str, object] = {"task_id": "t1", "status": "completed", "score": 1.0}
    assert queue.next().item == "t1"
    queue.ran("t1", result)
    resend = queue.next()
    assert (resend.item, resend.resend, queue.resent) == ("t1", result, ["t1"])
    refused = queue.next()
    assert (refused.item, refused.exit_code) == (None, runner.EXIT_INTERNAL)
    # As a tail copy (it failed here, it runs long elsewhere): not run, the job ends normally.
    queue, _ = _queue(cfg, [_task("t1"), _task("t1", duplicate=True)], clock)
    assert queue.next().item == "t1"
    copy = queue.next()
    assert (copy.item, copy.exit_code, copy.failure) == (None, runner.EXIT_OK, "")


def test_ask_does_not_try_once_the_token_is_known_refused(endpoint: tuple[str, _Script]) -> None:
    url, script = endpoint
    sender = _sender(url)
    sender.disabled = True
    try:
        reply = sender.ask({"kind": "next_task"}, tries=5)
    finally:
        sender.close(1)
    assert reply.outcome == runner.Reply.AUTH and script.bodies == []
