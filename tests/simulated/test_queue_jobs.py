"""Queue jobs (issue 10): a job with `spec.queue` asks the app for each next task over HTTP
(here a fake queue on 127.0.0.1), runs what it is told, and finishes when told exit."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from adapters.compute import runner_exit_codes
from adapters.compute.simulated import (
    MESSAGE_RETRY_DELAYS,
    TASK_SPREAD,
    HangAfter,
    LostMessages,
    MessageFault,
    NeverStarts,
    NoNestedVirtualization,
    RunnerCrash,
    SpotEviction,
    get_profile,
)
from adapters.compute.simulated.faults import RunDraws
from adapters.compute.simulated.jobs import draw_plan, draw_task
from adapters.compute.simulated.timings import (
    PROVISION_SECONDS,
    QUEUE_SECONDS,
    REGIONAL_PULL_SECONDS,
)
from domain.jobs import JobState, Tier
from domain.messages import JobMessage, MessageKind, RunnerFailureCode
from domain.planning import DOMAIN_MINUTES
from tests.simulated.queue_support import (
    TOKEN,
    FakeQueue,
    make_queue_cloud,
    queue_endpoint,
    queue_spec,
)
from tests.simulated.support import ManualScheduler

TASKS = [f"notepad-task-{i}" for i in range(5)]


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue(ManualScheduler(), pending=list(TASKS))


@pytest.fixture
def url(queue: FakeQueue):
    with queue_endpoint(queue) as u:
        yield u


def _messages(rec, url: str, job_name: str) -> list:
    return [p for p in rec.posts if p.url == url and p.body["job_name"] == job_name]


def _kinds(rec, url: str, job_name: str) -> list[str]:
    return [p.body["kind"] for p in _messages(rec, url, job_name)]


@dataclass
class LoseFirstAsks(MessageFault):
    """Loses the first `count` next_task asks of a job (a test's own delivery fault)."""

    count: int
    lost: list[int] = field(default_factory=list)

    def loses(self, kind: MessageKind) -> bool:
        if kind is not MessageKind.NEXT_TASK or len(self.lost) >= self.count:
            return False
        self.lost.append(1)
        return True


def test_a_queue_job_asks_after_boot_and_after_each_result_and_exits_completed(
    queue: FakeQueue, url: str
) -> None:
    queue.pending = TASKS[:3]
    cloud, rec = make_queue_cloud(url, queue)
    s = queue_spec(url, expected=3)
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()

    asks = queue.asks_of(s.job_name)
    assert len(asks) == 4  # three tasks, then exit
    for a in asks:
        assert a.headers["Authorization"] == f"Bearer {TOKEN}"
        assert a.body["kind"] == "next_task"
    assert asks[-1].answer is not None and asks[-1].answer["exit"] is True
    kinds = _kinds(rec, url, s.job_name)
    assert kinds[0] == "heartbeat" and kinds[-1] == "finished"
    msgs = _messages(rec, url, s.job_name)
    for m in msgs:
        JobMessage.model_validate(m.body)
    assert msgs[-1].body["exit_code"] == 0
    results = [m for m in msgs if m.body["kind"] == "task_result"]
    assert [m.body["task_result"]["task_id"] for m in results] == TASKS[:3]
    # The first ask right after the boot heartbeat; each next one right after a result.
    assert asks[0].at == msgs[0].at
    assert [a.at for a in asks[1:]] == [m.at for m in results]
    assert cloud.backend(Tier.AZURE_ML).status(s.job_name).state is JobState.COMPLETED

    (entry,) = cloud.jobs_of("eval1")
    assert entry.queue and entry.tasks_total == 3 and entry.tasks_run == 3
    assert entry.fault_at is None and entry.cancelled_at is None
    assert [t for t, _, _ in entry.task_spans] == TASKS[:3]
    for (_task, start, end), m in zip(entry.task_spans, results, strict=True):
        assert end == m.at
        dur = m.body["task_result"]["duration_seconds"]
        assert (end - start).total_seconds() == pytest.approx(dur, abs=0.01)
        mean = 60 * DOMAIN_MINUTES["notepad"]  # the answer's domain
        assert (1 - TASK_SPREAD) * mean <= dur <= (1 + TASK_SPREAD) * mean
    assert entry.task_spans[0][1] == asks[0].at
    assert all(a[2] == b[1] for a, b in zip(entry.task_spans, entry.task_spans[1:], strict=False))


def test_an_empty_queue_ends_the_job_completed_without_a_task(queue: FakeQueue, url: str) -> None:
    queue.pending = []
    cloud, rec = make_queue_cloud(url, queue)
    s = queue_spec(url, expected=2)
    cloud.backend(Tier.BATCH).submit(s)
    queue.scheduler.run_all()
    assert _kinds(rec, url, s.job_name)[-1] == "finished"
    assert cloud.backend(Tier.BATCH).status(s.job_name).state is JobState.COMPLETED
    (entry,) = cloud.jobs_of("eval1")
    assert entry.task_spans == () and entry.tasks_run == 0


def _world(seed: int, tasks: list[str]) -> list[tuple[str, float, str, float]]:
    queue = FakeQueue(ManualScheduler(), pending=list(tasks))
    with queue_endpoint(queue) as url:
        cloud, rec = make_queue_cloud(url, queue, profile="seed", seed=seed)
        s = queue_spec(url, expected=len(tasks))
        cloud.backend(Tier.AZURE_ML).submit(s)
        queue.scheduler.run_all()
    return [
        (
            r["task_id"],
            r["duration_seconds"],
            r["status"],
            r.get("score", 0.0),
        )
        for p in rec.posts
        if p.url == url and p.body["kind"] == "task_result"
        for r in [p.body["task_result"]]
    ]


def test_each_task_is_drawn_from_its_own_seeded_generator() -> None:
    first = _world(3, TASKS)
    assert first == _world(3, TASKS)  # the same seed, the same world
    assert first != _world(4, TASKS)
    # Handed out in another order, each task still draws the same run in the same job.
    again = {r[0]: r for r in _world(3, list(reversed(TASKS)))}
    common = [r for r in first if r[0] in again]
    assert common and all(again[r[0]] == r for r in common)
    tf = get_profile("seed").for_tier(Tier.AZURE_ML)
    for task, duration, status, score in first:
        seconds, (want_status, want_score, _) = draw_task(
            3, Tier.AZURE_ML, "eval1-s0-a1", task, "notepad", tf
        )
        assert duration == round(seconds, 3)
        assert (status, score) == (want_status.value, want_score)


def test_run_fault_draws_range_over_the_expected_tasks(url: str) -> None:
    tf = get_profile("chaos").for_tier(Tier.AZURE_ML)
    s = queue_spec(url, expected=40)
    plan = draw_plan(9, Tier.AZURE_ML, s, [], tf)
    rng = random.Random(f"9/job/{Tier.AZURE_ML}/{s.job_name}")
    for _ in range(4):  # queue, provision, pull, boot
        rng.random()
    assert plan.draws == RunDraws.draw(rng, 40)
    assert plan.task_seconds == [] and plan.task_outcomes == []


@pytest.mark.parametrize("k", [1, 3])
def test_a_crash_at_the_kth_task_holds_that_task_and_sends_k_results(
    queue: FakeQueue, url: str, k: int
) -> None:
    cloud, rec = make_queue_cloud(url, queue)
    s = queue_spec(url, expected=5)
    cloud.script(s.job_name, RunnerCrash(tasks=k, code=RunnerFailureCode.TASK_CRASHED))
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    kinds = _kinds(rec, url, s.job_name)
    assert kinds.count("task_result") == k and kinds[-1] == "failure"
    assert len(queue.asks_of(s.job_name)) == k + 1  # it claimed task k, then crashed
    assert queue.held[s.job_name] == TASKS[k]
    (entry,) = cloud.jobs_of("eval1")
    assert entry.state is JobState.FAILED and entry.fault == "RunnerCrash"
    assert [t for t, _, _ in entry.task_spans] == TASKS[:k]
    assert entry.fault_at == entry.task_spans[-1][2]


def test_a_hang_at_the_kth_task_asks_nothing_more(queue: FakeQueue, url: str) -> None:
    cloud, rec = make_queue_cloud(url, queue)
    s = queue_spec(url, expected=5, timeout_seconds=6 * 3600)
    cloud.script(s.job_name, HangAfter(2))
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    assert len(queue.asks_of(s.job_name)) == 3
    kinds = _kinds(rec, url, s.job_name)
    assert kinds.count("task_result") == 2 and "finished" not in kinds
    (entry,) = cloud.jobs_of("eval1")
    assert entry.fault_at == entry.task_spans[-1][2]
    assert entry.state is JobState.FAILED  # its own timeout
    # No message after the hang (heartbeats stopped too).
    assert all(m.at <= entry.fault_at for m in _messages(rec, url, s.job_name))


def test_an_eviction_during_the_kth_task(queue: FakeQueue, url: str) -> None:
    cloud, _rec = make_queue_cloud(url, queue)
    s = queue_spec(url, expected=5, spot=True)
    cloud.script(s.job_name, SpotEviction(tasks=1))
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    (entry,) = cloud.jobs_of("eval1")
    assert entry.state is JobState.FAILED and [t for t, _, _ in entry.task_spans] == TASKS[:1]
    assert queue.held[s.job_name] == TASKS[1]
    # Evicted partway into task 1, which started when its ask was answered.
    started = queue.asks_of(s.job_name)[1].at
    assert started < entry.fault_at == entry.ended_at
    assert (entry.fault_at - started) < timedelta(seconds=(1 + TASK_SPREAD) * 60 * 15)


def test_faults_before_any_task_are_recorded_where_they_take_effect(
    queue: FakeQueue, url: str
) -> None:
    cloud, _rec = make_queue_cloud(url, queue)
    never = queue_spec(url, "eval1-s0-a1", timeout_seconds=3600)
    nokvm = queue_spec(url, "eval1-s1-a1", shard=1)
    cloud.script(never.job_name, NeverStarts())
    cloud.script(nokvm.job_name, NoNestedVirtualization())
    for s in (never, nokvm):
        cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    assert queue.asks == []  # neither ever asked
    e_never, e_nokvm = cloud.jobs_of("eval1")
    assert e_never.job_name == never.job_name and e_never.started_at is None
    low = QUEUE_SECONDS[0] + PROVISION_SECONDS[0] + 300  # Docker Hub pull
    assert e_never.fault_at is not None
    assert (e_never.fault_at - e_never.submitted_at).total_seconds() >= low
    assert e_nokvm.fault_at is not None and e_nokvm.started_at is not None
    assert (e_nokvm.started_at - e_nokvm.fault_at).total_seconds() == pytest.approx(2.0)
    assert REGIONAL_PULL_SECONDS  # (imported for the timing vocabulary)


def test_a_lost_ask_is_asked_again_after_the_retry_delay(queue: FakeQueue, url: str) -> None:
    cloud, rec = make_queue_cloud(url, queue)
    queue.pending = TASKS[:1]
    s = queue_spec(url, expected=1)
    cloud.script(s.job_name, LoseFirstAsks(2))
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    boot = _messages(rec, url, s.job_name)[0].at
    asks = queue.asks_of(s.job_name)
    # Two asks lost: the third reaches the app after the first two retry delays.
    assert asks[0].at - boot == timedelta(seconds=sum(MESSAGE_RETRY_DELAYS[:2]))
    assert len(asks) == 2  # the task, then exit
    (entry,) = cloud.jobs_of("eval1")
    assert entry.messages_lost == 2
    assert entry.state is JobState.COMPLETED and [t for t, _, _ in entry.task_spans] == TASKS[:1]


def test_a_failed_answer_is_retried_and_the_app_answers_the_same_task(
    queue: FakeQueue, url: str
) -> None:
    cloud, _rec = make_queue_cloud(url, queue)
    queue.pending = TASKS[:2]
    queue.statuses = [503, 500]
    queue.process_failed = True  # the app claimed, but its answer did not come back
    s = queue_spec(url, expected=2)
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    asks = queue.asks_of(s.job_name)
    assert [a.status for a in asks] == [503, 500, 200, 200, 200]
    assert [a.answer["task_id"] for a in asks[:3]] == [TASKS[0]] * 3  # idempotent
    assert (asks[1].at - asks[0].at).total_seconds() == MESSAGE_RETRY_DELAYS[0]
    assert (asks[2].at - asks[1].at).total_seconds() == MESSAGE_RETRY_DELAYS[1]
    results = [t for _, t in queue.results]
    assert results == TASKS[:2]  # each run once
    assert cloud.backend(Tier.AZURE_ML).status(s.job_name).state is JobState.COMPLETED


def test_no_answer_after_every_retry_fails_the_job(queue: FakeQueue, url: str) -> None:
    cloud, rec = make_queue_cloud(url, queue)
    queue.statuses = [503] * 10
    s = queue_spec(url, expected=2)
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    assert len(queue.asks_of(s.job_name)) == 1 + len(MESSAGE_RETRY_DELAYS)
    kinds = _kinds(rec, url, s.job_name)
    assert kinds[-1] == "failure"
    status = cloud.backend(Tier.AZURE_ML).status(s.job_name)
    assert status.state is JobState.FAILED
    assert status.detail == f"container exited with code {runner_exit_codes.INTERNAL}"
    assert cloud.jobs_of("eval1")[0].fault_at is None  # not a run fault


@pytest.mark.parametrize(("status", "failure"), [(409, True), (403, False)])
def test_a_refused_ask_ends_the_runner_with_its_config_code(
    queue: FakeQueue, url: str, status: int, failure: bool
) -> None:
    cloud, rec = make_queue_cloud(url, queue)
    queue.statuses = [status]
    s = queue_spec(url)
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    assert len(queue.asks_of(s.job_name)) == 1
    assert ("failure" in _kinds(rec, url, s.job_name)) is failure
    job = cloud.backend(Tier.AZURE_ML).status(s.job_name)
    assert job.state is JobState.FAILED
    assert job.detail == f"container exited with code {runner_exit_codes.CONFIG}"


def test_a_task_handed_again_as_a_copy_ends_the_job_normally(queue: FakeQueue, url: str) -> None:
    cloud, _rec = make_queue_cloud(url, queue)
    queue.pending = TASKS[:1]
    s = queue_spec(url, expected=2)
    cloud.backend(Tier.AZURE_ML).submit(s)
    # After its first task, the app hands the same task again as a tail copy.
    original = queue.on_message

    def then_copy(body):
        original(body)
        if body.get("kind") == "task_result":
            queue.duplicate_of[s.job_name] = TASKS[0]

    queue.on_message = then_copy  # type: ignore[method-assign]
    queue.scheduler.run_all()
    assert cloud.backend(Tier.AZURE_ML).status(s.job_name).state is JobState.COMPLETED
    assert [t for _, t in queue.results] == TASKS[:1]


def test_a_cancel_is_recorded_and_the_cancelled_task_has_no_span(
    queue: FakeQueue, url: str
) -> None:
    cloud, _rec = make_queue_cloud(url, queue)
    s = queue_spec(url, expected=5)
    backend = cloud.backend(Tier.AZURE_ML)
    backend.submit(s)
    sched = queue.scheduler
    while len(queue.results) < 2:
        sched.advance(60)
    sched.advance(60)  # task 2 runs
    backend.cancel(s.job_name)
    cancelled = sched.now()
    sched.run_all()
    (entry,) = cloud.jobs_of("eval1")
    assert entry.state is JobState.CANCELLED and entry.cancelled_at == cancelled
    assert [t for t, _, _ in entry.task_spans] == TASKS[:2]
    assert len(queue.asks_of(s.job_name)) == 3  # nothing asked after the cancel
    assert entry.fault_at is None


def test_jobs_of_lists_one_evaluation_by_submission(queue: FakeQueue, url: str) -> None:
    cloud, _rec = make_queue_cloud(url, queue)
    backend = cloud.backend(Tier.AZURE_ML)
    backend.submit(queue_spec(url, "eval1-s1-a1", shard=1))
    backend.submit(queue_spec(url, "other-s0-a1", evaluation_id="other"))
    queue.scheduler.advance(10)
    backend.submit(queue_spec(url, "eval1-s0-a1"))
    assert [e.job_name for e in cloud.jobs_of("eval1")] == ["eval1-s1-a1", "eval1-s0-a1"]
    assert [e.job_name for e in cloud.jobs_of("other")] == ["other-s0-a1"]
    assert cloud.jobs_of("nope") == []


def test_the_runner_stops_asking_within_its_claim_margin(queue: FakeQueue, url: str) -> None:
    cloud, rec = make_queue_cloud(url, queue)
    # Asks while under 130 s of the runner's 4 h have passed (the first ask, after the boot of
    # at most 120 s), not after its first task.
    env = {"WAA_JOB_TIMEOUT_SECONDS": "14400", "WAA_CLAIM_MARGIN_SECONDS": str(14400 - 130)}
    s = queue_spec(url, expected=5).model_copy(update={"environment": env})
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    assert len(queue.asks_of(s.job_name)) == 1
    msgs = _messages(rec, url, s.job_name)
    assert msgs[-1].body["kind"] == "finished" and msgs[-1].body["exit_code"] == 0
    assert cloud.backend(Tier.AZURE_ML).status(s.job_name).state is JobState.COMPLETED
    assert [t for t, _, _ in cloud.jobs_of("eval1")[0].task_spans] == TASKS[:1]


def test_an_injected_crash_is_recorded_when_it_happens(queue: FakeQueue, url: str) -> None:
    cloud, _rec = make_queue_cloud(url, queue)
    s = queue_spec(url, expected=5)
    cloud.backend(Tier.AZURE_ML).submit(s)
    sched = queue.scheduler
    while len(queue.results) < 1:
        sched.advance(60)
    sched.advance(30)
    cloud.inject(s.job_name, RunnerCrash(code=RunnerFailureCode.TASK_CRASHED))
    crashed = sched.now()
    sched.run_all()
    (entry,) = cloud.jobs_of("eval1")
    assert entry.fault_at == crashed and entry.state is JobState.FAILED
    assert [t for t, _, _ in entry.task_spans] == TASKS[:1]
    assert len(queue.asks_of(s.job_name)) == 2


def test_a_lost_result_then_the_same_task_handed_again_stops_the_runner(
    queue: FakeQueue, url: str
) -> None:
    # The app never saw the result, so the job still holds the task and is handed it again:
    # the runner never runs a task twice, and exits with its internal-failure code (runner.py
    # `TaskQueue._read`); the app releases the task when the job ends.
    cloud, rec = make_queue_cloud(url, queue)
    s = queue_spec(url, expected=5)
    cloud.script(s.job_name, LostMessages(frozenset({MessageKind.TASK_RESULT})))
    cloud.backend(Tier.AZURE_ML).submit(s)
    queue.scheduler.run_all()
    asks = queue.asks_of(s.job_name)
    assert [a.answer["task_id"] for a in asks if a.answer] == [TASKS[0], TASKS[0]]
    assert _kinds(rec, url, s.job_name)[-1] == "failure"
    status = cloud.backend(Tier.AZURE_ML).status(s.job_name)
    assert status.state is JobState.FAILED
    assert status.detail == f"container exited with code {runner_exit_codes.INTERNAL}"
