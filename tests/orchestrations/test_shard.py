"""Every path of the shard orchestration, in process, on a fake Durable context (milliseconds).

The activities are fakes under their real names (`domain.names`); a scripted world decides what
each attempt's job does (starts and completes, never starts, hangs, fails, has no KVM ...) and
raises the events the real triggers would raise (`container_started_aN`, `job_ended_aN`,
`cancel`). What a path must do is asserted on what the orchestration did: the activities it
called with which inputs, when (virtual time), and what it returned. The fakes read and answer
the activities' contracts (`domain.contracts`), as the real activities do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from domain import bounds, names
from domain.contracts import (
    CapacityInput,
    CapacityResult,
    CapacityStatus,
    CloseShardInput,
    ContainerStarted,
    FinishAttemptInput,
    JobEnded,
    JobSnapshot,
    PrepareAttemptInput,
    ShardInput,
    ShardState,
    ShardSummary,
    SubmitJobInput,
    SubmitJobResult,
    SubmitStatus,
)
from domain.jobs import FailureKind, JobState, Tier
from domain.naming import job_name
from domain.outcomes import CANCELLED_BY_USER
from domain.policy import AttemptOutcome, PolicyConfig, backoff_seconds, counts_against_tier
from orchestrations.shard import SUBMIT_RETRY
from orchestrations.shard import shard as shard_function
from orchestrations.waits import RUN_DEADLINE_GRACE
from tests.orchestrations.fake_durable import EPOCH, FakeDurableContext

shard = shard_function.build().get_user_function().orchestrator_function
EVALUATION = "a1b2c3d4e5f6"
TASKS = ["t1", "t2", "t3"]
MIN = timedelta(minutes=1)
# As a snapshot recorded before some of today's fields existed: forwarded with these keys only.
JOB = JobSnapshot(image="winarena:latest", vm_size="Standard_D4s_v5")

# What one attempt's job does, in the world's script.
COMPLETES = "completes"
NEVER_STARTS = "never_starts"
HANGS = "hangs"  # starts, then sends nothing at all
GOES_QUIET = "goes_quiet"  # starts, then the sweeper reports it stuck (no heartbeat)
FAILS = "fails"
NO_KVM = "no_kvm"  # the runner's permanent failure for the tier
REFUSED = "refused"  # the backend refuses the submission for good (quota, auth)
THROTTLED = "throttled"  # every submission try raises a transient error
OVER_BUDGET = "over_budget"


@dataclass
class World:
    """The state store and the cloud, as the shard's activities see them."""

    ctx: FakeDurableContext
    script: list[str]
    remaining: list[str] = field(default_factory=lambda: list(TASKS))
    breaker: dict[str, int] = field(default_factory=dict)
    cancel_requested: bool = False
    cancel_failures: int = 0  # finish_attempt calls (not best effort) that raise first
    on_prepare: Callable[[World, int], None] | None = None
    prepares: int = 0
    # Per tier, what ensure_capacity and then each capacity_status answer, in order
    # ("ready", "pending" or "failed"); once a tier's script is used up, its capacity is ready.
    capacity: dict[str, list[str]] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        return ShardState(
            remaining=list(self.remaining),
            breaker={Tier(t): n for t, n in self.breaker.items()},
            cancel_requested=self.cancel_requested,
        ).to_json()

    def prepare_attempt(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert PrepareAttemptInput.from_json(payload).task_ids == TASKS
        self.prepares += 1
        if self.on_prepare is not None:
            self.on_prepare(self, self.prepares)
        return self.state()

    def submit_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        attempt = SubmitJobInput.from_json(payload).attempt
        behaviour = self.script[attempt - 1] if attempt <= len(self.script) else COMPLETES
        started, ended = names.started_event(attempt), names.ended_event(attempt)
        if behaviour == THROTTLED:
            raise RuntimeError("SubmissionError: 429 Too Many Requests")
        if behaviour == OVER_BUDGET:
            return SubmitJobResult(
                status=SubmitStatus.BUDGET, reason="budget exhausted: no", failure_kind=None
            ).to_json()
        if behaviour == REFUSED:
            return SubmitJobResult(
                status=SubmitStatus.FAILED,
                reason="quota exceeded",
                failure_kind=FailureKind.PERMANENT_FOR_TIER,
            ).to_json()
        if behaviour in (COMPLETES, HANGS, GOES_QUIET, FAILS):
            event = ContainerStarted(job_name=job_name(EVALUATION, 0, attempt))
            self.ctx.raise_event(started, event.to_json(), after=4 * MIN)
        if behaviour == COMPLETES:
            self.ctx.raise_event(
                ended, JobEnded(state=JobState.COMPLETED).to_json(), after=30 * MIN
            )
            self.remaining = []
        elif behaviour == GOES_QUIET:
            stuck = JobEnded(state=JobState.FAILED, stuck=True, reason="no heartbeat for 10 min")
            self.ctx.raise_event(ended, stuck.to_json(), after=20 * MIN)
        elif behaviour == FAILS:
            failed = JobEnded(state=JobState.FAILED, reason="exit 1")
            self.ctx.raise_event(ended, failed.to_json(), after=15 * MIN)
        elif behaviour == NO_KVM:
            failed = JobEnded(
                state=JobState.FAILED,
                reason="no /dev/kvm",
                failure_kind=FailureKind.PERMANENT_FOR_TIER,
            )
            self.ctx.raise_event(ended, failed.to_json(), after=2 * MIN)
        return SubmitJobResult(
            status=SubmitStatus.SUBMITTED, reason="", failure_kind=None
        ).to_json()

    def capacity_answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        script = self.capacity.get(CapacityInput.from_json(payload).tier.value, [])
        status = CapacityStatus(script.pop(0) if script else "ready")
        if status is CapacityStatus.FAILED:
            return CapacityResult(
                status=status,
                reason="cluster quota exceeded",
                failure_kind=FailureKind.PERMANENT_FOR_TIER,
            ).to_json()
        reason = "cluster creating" if status is CapacityStatus.PENDING else ""
        return CapacityResult(status=status, reason=reason, failure_kind=None).to_json()

    def finish_attempt(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = FinishAttemptInput.from_json(payload)
        if self.cancel_failures and not request.cancel_best_effort:
            self.cancel_failures -= 1
            raise RuntimeError("CancelError: the backend refused the cancel")
        if counts_against_tier(request.outcome):
            self.breaker[request.tier.value] = self.breaker.get(request.tier.value, 0) + 1
        return self.state()

    def close_shard(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = CloseShardInput.from_json(payload)
        return ShardSummary(
            shard_index=request.shard_index,
            not_run=len(self.remaining),
            attempts=request.attempts,
            reason=request.reason,
        ).to_json()


def run_shard(
    script: list[str],
    *,
    tiers: tuple[Tier, ...] = (Tier.AZURE_ML, Tier.BATCH, Tier.VM),
    policy: PolicyConfig | None = None,
    setup: Callable[[World], None] | None = None,
) -> tuple[dict[str, Any], World]:
    ctx = FakeDurableContext(
        ShardInput(
            evaluation_id=EVALUATION,
            shard_index=0,
            task_ids=TASKS,
            tiers=list(tiers),
            policy=policy or PolicyConfig(),
            job=JOB,
        ).to_json(),
        instance_id=f"{EVALUATION}:s0",
    )
    world = World(ctx, script)
    if setup is not None:
        setup(world)
    ctx.activities = {
        names.PREPARE_ATTEMPT: world.prepare_attempt,
        names.ENSURE_CAPACITY: world.capacity_answer,
        names.CAPACITY_STATUS: world.capacity_answer,
        names.SUBMIT_JOB: world.submit_job,
        names.FINISH_ATTEMPT: world.finish_attempt,
        names.CLOSE_SHARD: world.close_shard,
    }
    return ctx.run(shard), world


def outcomes(world: World) -> list[tuple[str, str]]:
    """(tier, outcome) of every attempt, from what finish_attempt was told."""
    return [
        (f["tier"], f["outcome"])
        for f in world.ctx.calls_of(names.FINISH_ATTEMPT)
        if not f.get("cancel_best_effort")
    ]


def submissions(world: World) -> list[dict[str, Any]]:
    """One entry per attempt (a retried submission counts once)."""
    seen: dict[int, dict[str, Any]] = {}
    for s in world.ctx.calls_of(names.SUBMIT_JOB):
        seen.setdefault(s["attempt"], s)
    return list(seen.values())


def test_a_job_that_completes_closes_the_shard_after_one_attempt() -> None:
    summary, world = run_shard([COMPLETES])
    assert outcomes(world) == [("azureml", "completed")]
    assert summary == {"shard_index": 0, "not_run": 0, "attempts": 1, "reason": "no tasks remain"}
    (submitted,) = submissions(world)
    assert submitted["job_name"] == job_name(EVALUATION, 0, 1)
    assert submitted["task_ids"] == TASKS
    assert submitted["failover"] is False
    assert world.ctx.custom_status == {"shard": 0, "attempt": 1, "tier": None, "phase": "closing"}


def test_start_deadline_cancels_and_backs_off_before_the_next_attempt() -> None:
    config = PolicyConfig()
    summary, world = run_shard([NEVER_STARTS, COMPLETES])
    assert outcomes(world) == [("azureml", "start_timeout"), ("azureml", "completed")]
    finish = world.ctx.calls_of(names.FINISH_ATTEMPT)[0]
    assert finish["reason"] == "container did not start within 10 min (no heartbeat)"
    assert finish["submitted"] is True
    # The second submission waits the start deadline, then the jittered first backoff.
    times = [t for t, name, _ in world.ctx.calls if name == names.SUBMIT_JOB]
    expected = timedelta(seconds=config.container_start_timeout_seconds) + timedelta(
        seconds=backoff_seconds(config, EVALUATION, 0, 1)
    )
    assert times[1] - times[0] == expected
    assert summary["not_run"] == 0


def test_a_job_that_hangs_silently_is_stopped_at_the_run_deadline() -> None:
    config = PolicyConfig(job_timeout_seconds=3600)
    _, world = run_shard([HANGS, COMPLETES], policy=config)
    assert outcomes(world) == [("azureml", "stuck"), ("azureml", "completed")]
    finish = world.ctx.calls_of(names.FINISH_ATTEMPT)[0]
    assert finish["reason"] == "job still running past its 1 h deadline"
    finished_at = next(t for t, n, _ in world.ctx.calls if n == names.FINISH_ATTEMPT)
    assert finished_at == EPOCH + timedelta(hours=1) + RUN_DEADLINE_GRACE


def test_a_job_reported_stuck_by_the_sweeper_is_retried() -> None:
    _, world = run_shard([GOES_QUIET, COMPLETES])
    assert outcomes(world) == [("azureml", "stuck"), ("azureml", "completed")]
    assert world.ctx.calls_of(names.FINISH_ATTEMPT)[0]["reason"] == "no heartbeat for 10 min"


def test_tier_out_of_attempts_fails_over_to_the_next_tier_at_once() -> None:
    _, world = run_shard([NEVER_STARTS, NEVER_STARTS, COMPLETES])
    assert outcomes(world) == [
        ("azureml", "start_timeout"),
        ("azureml", "start_timeout"),
        ("batch", "completed"),
    ]
    third = submissions(world)[2]
    assert third["tier"] == "batch" and third["failover"] is True
    finish_2 = [t for t, n, _ in world.ctx.calls if n == names.FINISH_ATTEMPT][1]
    submit_3 = [t for t, n, _ in world.ctx.calls if n == names.SUBMIT_JOB][-1]
    assert submit_3 == finish_2  # a failover does not back off


def test_no_nested_virtualization_is_permanent_for_the_tier() -> None:
    _, world = run_shard([NO_KVM, COMPLETES])
    assert outcomes(world) == [("azureml", "job_failed"), ("batch", "completed")]


def test_a_refused_submission_fails_over_without_waiting_for_a_container() -> None:
    _, world = run_shard([REFUSED, COMPLETES])
    assert outcomes(world) == [("azureml", "submit_failed"), ("batch", "completed")]
    assert world.ctx.calls_of(names.FINISH_ATTEMPT)[0]["submitted"] is False


def test_throttled_submissions_are_retried_by_the_retry_policy_then_count_as_a_failure() -> None:
    _, world = run_shard([THROTTLED, COMPLETES])
    tries = [s for s in world.ctx.calls_of(names.SUBMIT_JOB) if s["attempt"] == 1]
    assert len(tries) == SUBMIT_RETRY.max_number_of_attempts
    first = world.ctx.calls_of(names.FINISH_ATTEMPT)[0]
    assert first["outcome"] == "submit_failed"
    assert first["reason"] == "submission failed: SubmissionError: 429 Too Many Requests"
    assert outcomes(world)[-1] == ("azureml", "completed")


def test_an_open_breaker_found_after_the_backoff_sends_the_attempt_elsewhere() -> None:
    def other_shards_fail_meanwhile(world: World, prepares: int) -> None:
        if prepares == 2:  # the re-read after the first backoff
            world.breaker["azureml"] = PolicyConfig().breaker_threshold

    _, world = run_shard(
        [FAILS, COMPLETES], setup=lambda w: setattr(w, "on_prepare", other_shards_fail_meanwhile)
    )
    assert [s["tier"] for s in submissions(world)] == ["azureml", "batch"]
    assert world.prepares == 2


def test_the_breaker_open_for_every_tier_gives_up_before_submitting() -> None:
    def all_open(world: World) -> None:
        world.breaker = {t.value: PolicyConfig().breaker_threshold for t in Tier}

    summary, world = run_shard([COMPLETES], setup=all_open)
    assert submissions(world) == []
    assert summary["reason"].startswith("no compute tier left")
    assert summary["not_run"] == len(TASKS)


def test_budget_stops_the_shard_with_its_reason() -> None:
    summary, world = run_shard([OVER_BUDGET])
    assert outcomes(world) == []
    assert summary["reason"] == "budget exhausted: no"
    assert summary["attempts"] == 0


def test_cancel_during_the_backoff_ends_the_shard_without_another_job() -> None:
    def cancel_soon(world: World) -> None:
        world.ctx.raise_event(names.CANCEL_EVENT, None, after=11 * MIN)

    summary, world = run_shard([NEVER_STARTS, COMPLETES], setup=cancel_soon)
    assert len(submissions(world)) == 1
    assert summary["reason"] == CANCELLED_BY_USER
    # The backoff's timer lost the race and was cancelled (a timer left running would keep the
    # instance alive until it fires).
    backoff_timer = world.ctx.timers[-1]
    assert backoff_timer.cancelled


def test_cancel_while_the_job_runs_cancels_that_job() -> None:
    def cancel_soon(world: World) -> None:
        world.ctx.raise_event(names.CANCEL_EVENT, None, after=10 * MIN)

    summary, world = run_shard([HANGS], setup=cancel_soon)
    assert outcomes(world) == [("azureml", "cancelled")]
    assert summary["reason"] == CANCELLED_BY_USER


def test_a_cancel_requested_before_the_first_attempt_submits_nothing() -> None:
    summary, world = run_shard([COMPLETES], setup=lambda w: setattr(w, "cancel_requested", True))
    assert submissions(world) == []
    assert summary["reason"] == CANCELLED_BY_USER


def test_a_failed_cancel_is_retried_and_then_left_to_the_sweeper() -> None:
    retries = 5  # CANCEL_RETRY's attempts: every one of them refused

    _, world = run_shard(
        [NEVER_STARTS, COMPLETES], setup=lambda w: setattr(w, "cancel_failures", retries)
    )
    finishes = world.ctx.calls_of(names.FINISH_ATTEMPT)
    first_attempt = [f for f in finishes if f["attempt"] == 1]
    assert len(first_attempt) == retries + 1
    assert first_attempt[-1]["cancel_best_effort"] is True
    assert outcomes(world)[-1] == ("azureml", "completed")


def test_attempts_are_capped_by_max_attempts() -> None:
    config = PolicyConfig(max_attempts=3)
    summary, world = run_shard([NEVER_STARTS] * 5, policy=config)
    assert len(submissions(world)) == 3
    assert summary["reason"].startswith("attempts exhausted: 3 attempt(s)")
    assert summary["not_run"] == len(TASKS)


def test_only_tasks_without_a_result_are_resubmitted() -> None:
    def partial(world: World) -> None:
        original = world.submit_job

        def first_job_finishes_one_task(payload: dict[str, Any]) -> dict[str, Any]:
            if payload["attempt"] == 1:
                world.remaining = ["t2", "t3"]
            return original(payload)

        world.submit_job = first_job_finishes_one_task  # type: ignore[method-assign]

    _, world = run_shard([FAILS, COMPLETES], setup=partial)
    assert [s["task_ids"] for s in submissions(world)] == [TASKS, ["t2", "t3"]]


@pytest.mark.parametrize("tiers", [(Tier.VM,), (Tier.BATCH, Tier.VM)])
def test_the_first_attempt_goes_to_the_first_configured_tier(tiers: tuple[Tier, ...]) -> None:
    _, world = run_shard([COMPLETES], tiers=tiers)
    assert submissions(world)[0]["tier"] == tiers[0].value


def test_without_a_start_deadline_a_job_that_never_starts_waits_for_the_run_deadline() -> None:
    config = PolicyConfig(start_deadline_enabled=False, job_timeout_seconds=4 * 3600)
    _, world = run_shard([NEVER_STARTS, COMPLETES], policy=config)
    assert outcomes(world)[0] == ("azureml", "stuck")
    finished_at = next(t for t, n, _ in world.ctx.calls if n == names.FINISH_ATTEMPT)
    assert finished_at == EPOCH + timedelta(hours=4) + RUN_DEADLINE_GRACE


# --- capacity: started by one activity, polled between durable timers ---------------------


def test_pending_capacity_is_polled_with_durable_timers_before_the_first_submission() -> None:
    poll = timedelta(seconds=bounds.CAPACITY_POLL_SECONDS)
    _, world = run_shard(
        [COMPLETES], setup=lambda w: w.capacity.update(azureml=["pending", "pending", "pending"])
    )
    assert outcomes(world) == [("azureml", "completed")]
    ensured = [t for t, n, _ in world.ctx.calls if n == names.ENSURE_CAPACITY]
    polled = [t for t, n, _ in world.ctx.calls if n == names.CAPACITY_STATUS]
    assert ensured == [EPOCH]
    assert polled == [EPOCH + poll, EPOCH + 2 * poll, EPOCH + 3 * poll]
    # The third poll saw it ready: the job is submitted at once, and its start deadline only
    # starts counting then.
    (submitted_at,) = [t for t, n, _ in world.ctx.calls if n == names.SUBMIT_JOB]
    assert submitted_at == EPOCH + 3 * poll
    assert len(world.ctx.timers) >= 3
    assert world.ctx.calls_of(names.CAPACITY_STATUS)[0] == {
        "image": "winarena:latest",
        "vm_size": "Standard_D4s_v5",
        "evaluation_id": EVALUATION,
        "shard_index": 0,
        "tier": "azureml",
    }


def test_capacity_not_usable_by_the_deadline_fails_over_to_the_next_tier() -> None:
    deadline = timedelta(seconds=bounds.CAPACITY_DEADLINE_SECONDS)
    polls = bounds.CAPACITY_DEADLINE_SECONDS // bounds.CAPACITY_POLL_SECONDS
    _, world = run_shard(
        [COMPLETES, COMPLETES], setup=lambda w: w.capacity.update(azureml=["pending"] * 1000)
    )
    assert outcomes(world) == [("azureml", "submit_failed"), ("batch", "completed")]
    first = world.ctx.calls_of(names.FINISH_ATTEMPT)[0]
    assert first["submitted"] is False
    assert first["failure_kind"] == FailureKind.PERMANENT_FOR_TIER.value
    assert first["reason"] == (
        f"azureml capacity not usable within {deadline.total_seconds() / 60:g} min "
        "(cluster creating)"
    )
    # Polled up to the deadline and not after it; no job was ever submitted to Azure ML.
    polled = [t for t, n, p in world.ctx.calls if n == names.CAPACITY_STATUS]
    assert len(polled) == polls and polled[-1] == EPOCH + deadline
    assert [s["tier"] for s in submissions(world)] == ["batch"]


def test_capacity_that_fails_for_good_fails_over_without_waiting() -> None:
    _, world = run_shard(
        [COMPLETES, COMPLETES], setup=lambda w: w.capacity.update(azureml=["failed"])
    )
    assert outcomes(world) == [("azureml", "submit_failed"), ("batch", "completed")]
    assert world.ctx.calls_of(names.FINISH_ATTEMPT)[0]["reason"] == "cluster quota exceeded"
    assert world.ctx.calls_of(names.CAPACITY_STATUS) == []
    assert [s["tier"] for s in submissions(world)] == ["batch"]


def test_capacity_is_ensured_once_per_tier_of_the_shard() -> None:
    _, world = run_shard([NEVER_STARTS, NEVER_STARTS, COMPLETES])
    assert [c["tier"] for c in world.ctx.calls_of(names.ENSURE_CAPACITY)] == ["azureml", "batch"]


def test_cancel_while_waiting_for_capacity_submits_nothing() -> None:
    def pending_then_cancel(world: World) -> None:
        world.capacity["azureml"] = ["pending"] * 1000
        world.ctx.raise_event(names.CANCEL_EVENT, None, after=timedelta(minutes=5, seconds=30))

    summary, world = run_shard([COMPLETES], setup=pending_then_cancel)
    assert submissions(world) == []
    assert outcomes(world) == []
    assert summary["reason"] == CANCELLED_BY_USER
    assert world.ctx.timers[-1].cancelled


# --- the contracts: what the shard sends and reads --------------------------------------------

ACTIVITY_INPUTS: dict[str, Any] = {
    names.PREPARE_ATTEMPT: PrepareAttemptInput,
    names.ENSURE_CAPACITY: CapacityInput,
    names.CAPACITY_STATUS: CapacityInput,
    names.SUBMIT_JOB: SubmitJobInput,
    names.FINISH_ATTEMPT: FinishAttemptInput,
    names.CLOSE_SHARD: CloseShardInput,
}


def test_every_activity_input_is_exactly_its_contract() -> None:
    def busy(world: World) -> None:
        world.capacity["azureml"] = ["pending", "ready"]
        world.cancel_failures = 5  # the first attempt's finish falls back to best effort

    summary, world = run_shard([NEVER_STARTS, NEVER_STARTS, COMPLETES], setup=busy)
    called = {name for _, name, _ in world.ctx.calls}
    assert called == set(ACTIVITY_INPUTS)
    for _, name, sent in world.ctx.calls:
        # Nothing the contract does not know, nothing it would add: the shape a history holds.
        assert ACTIVITY_INPUTS[name].from_json(sent).to_json() == sent, name
    for sent in world.ctx.calls_of(names.SUBMIT_JOB) + world.ctx.calls_of(names.ENSURE_CAPACITY):
        # The job snapshot is forwarded with the keys it arrived with, and no others.
        assert {k: sent[k] for k in JOB.to_json()} == JOB.to_json()
        assert not (set(JobSnapshot.model_fields) - set(JOB.to_json())) & set(sent)
    best_effort = [f for f in world.ctx.calls_of(names.FINISH_ATTEMPT) if "cancel_best_effort" in f]
    assert [f["attempt"] for f in best_effort] == [1]
    assert ShardSummary.from_json(summary) == ShardSummary(
        shard_index=0, not_run=0, attempts=3, reason="no tasks remain"
    )


def test_an_ended_event_without_a_reason_says_how_the_job_ended() -> None:
    def bare_end(world: World) -> None:
        original = world.submit_job

        def submit(payload: dict[str, Any]) -> dict[str, Any]:
            answer = original(payload)
            if payload["attempt"] == 1:  # started (HANGS), then a terse end from Event Grid
                world.ctx.raise_event(names.ended_event(1), {"state": "failed"}, after=9 * MIN)
            return answer

        world.submit_job = submit  # type: ignore[method-assign]

    _, world = run_shard([HANGS, COMPLETES], setup=bare_end)
    first = FinishAttemptInput.from_json(world.ctx.calls_of(names.FINISH_ATTEMPT)[0])
    assert (first.outcome, first.reason, first.failure_kind) == (
        AttemptOutcome.JOB_FAILED,
        "job failed",
        FailureKind.JOB_FAILED,
    )


def test_fields_a_newer_deploy_added_to_an_answer_are_ignored() -> None:
    def newer_prepare(world: World) -> None:
        original = world.prepare_attempt
        world.prepare_attempt = lambda p: {**original(p), "quota_left": 3}  # type: ignore[method-assign]

    summary, world = run_shard([COMPLETES], setup=newer_prepare)
    assert outcomes(world) == [("azureml", "completed")]
    assert summary["not_run"] == 0
