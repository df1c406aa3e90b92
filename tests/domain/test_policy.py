from __future__ import annotations

import json

import pytest

from domain.jobs import FailureKind, Tier
from domain.messages import RunnerFailure, RunnerFailureCode
from domain.policy import (
    AttemptOutcome,
    AttemptRecord,
    BreakerState,
    PolicyConfig,
    backoff_seconds,
    breaker_after_failure,
    classify_runner_failure,
    classify_runner_report,
    next_step,
    projected_cost_exceeds,
)
from domain.requests import parse_evaluation_request

ALL_TIERS = [Tier.AZURE_ML, Tier.BATCH, Tier.VM]
CONFIG = PolicyConfig()
NO_JITTER = PolicyConfig(jitter_fraction=0.0)
CLOSED = BreakerState()


def rec(
    attempt: int,
    tier: Tier,
    outcome: AttemptOutcome,
    kind: FailureKind | None = None,
    reason: str = "",
) -> AttemptRecord:
    return AttemptRecord(
        attempt=attempt, tier=tier, outcome=outcome, reason=reason, failure_kind=kind
    )


def step(
    attempts: list[AttemptRecord],
    *,
    config: PolicyConfig = CONFIG,
    tiers: list[Tier] = ALL_TIERS,
    breaker: BreakerState = CLOSED,
    remaining: int = 5,
):
    return next_step(
        config,
        attempts=attempts,
        tiers=tiers,
        breaker=breaker,
        remaining_tasks=remaining,
        evaluation_id="ev1",
        shard_index=3,
    )


# --- configuration ---------------------------------------------------------------------------


def test_configs_from_a_request() -> None:
    req = parse_evaluation_request(
        b'{"task_set": "waa-smoke", "container_start_timeout_minutes": 12, '
        b'"heartbeat_timeout_minutes": 7, "job_timeout_hours": 3, "task_retries": 2}',
        10,
    )
    resilient = PolicyConfig.resilient(req)
    assert resilient.task_retries == 2
    assert resilient.container_start_timeout_seconds == 720
    assert resilient.heartbeat_timeout_seconds == 420
    assert resilient.job_timeout_seconds == 3 * 3600
    assert resilient.start_deadline_enabled and resilient.stuck_detection_enabled
    assert resilient.failover_enabled
    assert resilient.max_attempts > resilient.max_attempts_per_tier >= 2

    naive = PolicyConfig.naive(req)
    assert naive.max_attempts == 1
    assert naive.job_timeout_seconds == 4 * 3600
    assert not (naive.start_deadline_enabled or naive.stuck_detection_enabled)
    assert not naive.failover_enabled
    assert naive.task_retries == 0
    assert PolicyConfig.for_request(req) == resilient


def test_config_survives_a_json_round_trip() -> None:
    config = PolicyConfig(max_attempts=4, backoff_cap_seconds=300)
    assert PolicyConfig.model_validate(json.loads(config.model_dump_json())) == config


# --- backoff ----------------------------------------------------------------------------------


def test_backoff_grows_exponentially_then_caps() -> None:
    delays = [backoff_seconds(NO_JITTER, "ev1", 0, n) for n in range(1, 8)]
    assert delays == [60, 120, 240, 480, 900, 900, 900]
    assert backoff_seconds(NO_JITTER, "ev1", 0, 10_000) == 900


def test_backoff_is_deterministic_and_varies_by_shard_and_attempt() -> None:
    first = [backoff_seconds(CONFIG, "ev1", shard, 1) for shard in range(20)]
    assert first == [backoff_seconds(CONFIG, "ev1", shard, 1) for shard in range(20)]
    assert len(set(first)) > 10  # jitter spreads shards that failed together
    assert backoff_seconds(CONFIG, "ev1", 0, 2) != backoff_seconds(CONFIG, "ev2", 0, 2)


def test_jitter_stays_within_bounds_and_under_the_cap() -> None:
    for shard in range(50):
        for attempt in range(1, 9):
            base = backoff_seconds(NO_JITTER, "ev9", shard, attempt)
            delay = backoff_seconds(CONFIG, "ev9", shard, attempt)
            assert base * 0.8 <= delay <= min(base * 1.2, CONFIG.backoff_cap_seconds)


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff_seconds(CONFIG, "ev1", 0, 0)


# --- breaker ----------------------------------------------------------------------------------


def test_breaker_opens_at_the_threshold_and_is_pure() -> None:
    state = CLOSED
    for _ in range(2):
        state = state.record(Tier.AZURE_ML, AttemptOutcome.START_TIMEOUT)
    assert not state.is_open(Tier.AZURE_ML, 3)
    opened = state.record(Tier.AZURE_ML, AttemptOutcome.STUCK)
    assert opened.is_open(Tier.AZURE_ML, 3)
    assert not state.is_open(Tier.AZURE_ML, 3)  # the earlier state is unchanged
    assert not opened.is_open(Tier.BATCH, 3)


def test_breaker_ignores_non_failures() -> None:
    state = CLOSED
    for outcome in (AttemptOutcome.COMPLETED, AttemptOutcome.CANCELLED, AttemptOutcome.BUDGET):
        state = state.record(Tier.BATCH, outcome)
    assert state.failures == {}


def test_breaker_serializes() -> None:
    state = CLOSED.record(Tier.VM, AttemptOutcome.JOB_FAILED)
    assert BreakerState.model_validate(json.loads(state.model_dump_json())) == state


# --- next_step --------------------------------------------------------------------------------


def test_first_attempt_uses_the_first_tier_at_once() -> None:
    decision = step([])
    assert (decision.action, decision.tier, decision.delay_seconds) == ("submit", Tier.AZURE_ML, 0)
    assert step([], tiers=[Tier.VM, Tier.BATCH]).tier == Tier.VM


def test_first_attempt_skips_tiers_with_an_open_breaker() -> None:
    breaker = BreakerState(failures={Tier.AZURE_ML: 3})
    assert step([], breaker=breaker).tier == Tier.BATCH
    everything_open = BreakerState(failures={t: 5 for t in ALL_TIERS})
    decision = step([], breaker=everything_open)
    assert decision.action == "give_up"
    assert "breaker" in decision.reason


PROBING = PolicyConfig(breaker_cooldown_seconds=900.0)


def test_with_a_cooldown_every_breaker_open_means_a_probe_not_giving_up() -> None:
    everything_open = BreakerState(failures={t: 5 for t in ALL_TIERS})
    first = step([], config=PROBING, breaker=everything_open)
    assert (first.action, first.tier, first.delay_seconds, first.probe) == (
        "submit",
        Tier.AZURE_ML,
        900.0,
        True,
    )
    assert "half-open" in first.reason
    # After a failure, the first tier with attempts left that is not known broken is probed.
    attempts = [
        rec(1, Tier.AZURE_ML, AttemptOutcome.JOB_FAILED, FailureKind.PERMANENT_FOR_TIER),
        rec(2, Tier.BATCH, AttemptOutcome.STUCK),
    ]
    later = step(attempts, config=PROBING, breaker=everything_open)
    assert (later.action, later.tier, later.probe) == ("submit", Tier.BATCH, True)
    # A normal decision is never a probe; used-up and broken tiers are never probed.
    assert step([], config=PROBING).probe is False
    used_up = [
        rec(1, Tier.AZURE_ML, AttemptOutcome.JOB_FAILED, FailureKind.PERMANENT_FOR_TIER),
        rec(2, Tier.BATCH, AttemptOutcome.STUCK),
        rec(3, Tier.BATCH, AttemptOutcome.STUCK),
        rec(4, Tier.VM, AttemptOutcome.JOB_FAILED, FailureKind.PERMANENT_FOR_TIER),
    ]
    assert step(used_up, config=PROBING, breaker=everything_open).action == "give_up"
    # `max_attempts` still bounds the probes.
    capped = PolicyConfig(breaker_cooldown_seconds=900.0, max_attempts=2)
    assert step(attempts, config=capped, breaker=everything_open).action == "give_up"


def test_the_resilient_policy_probes_and_the_naive_one_and_old_snapshots_do_not() -> None:
    req = parse_evaluation_request(b'{"task_set": "waa-smoke"}', max_workers=20)
    assert PolicyConfig.resilient(req).breaker_cooldown_seconds == 900.0
    assert PolicyConfig.naive(req).breaker_cooldown_seconds == 0.0
    # A policy snapshotted before the probe existed lacks the field: it gives up, as it did.
    assert PolicyConfig.model_validate({"max_attempts": 6}).breaker_cooldown_seconds == 0.0


def test_transient_failure_retries_the_same_tier_with_backoff() -> None:
    attempts = [rec(1, Tier.AZURE_ML, AttemptOutcome.START_TIMEOUT)]
    decision = step(attempts)
    assert decision.action == "submit"
    assert decision.tier == Tier.AZURE_ML
    assert decision.delay_seconds == backoff_seconds(CONFIG, "ev1", 3, 1)
    assert decision.delay_seconds > 0


def test_job_failure_retries_the_same_tier() -> None:
    attempts = [rec(1, Tier.BATCH, AttemptOutcome.JOB_FAILED)]
    decision = step(attempts, tiers=[Tier.BATCH, Tier.VM])
    assert (decision.action, decision.tier) == ("submit", Tier.BATCH)


def test_completed_job_with_tasks_left_is_retried() -> None:
    decision = step([rec(1, Tier.BATCH, AttemptOutcome.COMPLETED)], remaining=2)
    assert (decision.action, decision.tier) == ("submit", Tier.BATCH)


def test_permanent_failure_fails_over_at_once() -> None:
    attempts = [
        rec(1, Tier.AZURE_ML, AttemptOutcome.JOB_FAILED, FailureKind.PERMANENT_FOR_TIER, "no kvm")
    ]
    decision = step(attempts)
    assert (decision.action, decision.tier, decision.delay_seconds) == ("submit", Tier.BATCH, 0)
    assert "no kvm" in decision.reason


def test_per_tier_cap_moves_to_the_next_tier() -> None:
    attempts = [
        rec(1, Tier.AZURE_ML, AttemptOutcome.START_TIMEOUT),
        rec(2, Tier.AZURE_ML, AttemptOutcome.START_TIMEOUT),
    ]
    decision = step(attempts)
    assert (decision.action, decision.tier, decision.delay_seconds) == ("submit", Tier.BATCH, 0)


def test_open_breaker_moves_off_the_current_tier() -> None:
    attempts = [rec(1, Tier.AZURE_ML, AttemptOutcome.STUCK)]
    breaker = BreakerState(failures={Tier.AZURE_ML: 3})
    decision = step(attempts, breaker=breaker)
    assert decision.tier == Tier.BATCH


def test_failover_skips_tiers_with_open_breakers_or_known_broken() -> None:
    attempts = [
        rec(1, Tier.AZURE_ML, AttemptOutcome.JOB_FAILED, FailureKind.PERMANENT_FOR_TIER),
    ]
    breaker = BreakerState(failures={Tier.BATCH: 3})
    assert step(attempts, breaker=breaker).tier == Tier.VM


def test_give_up_when_every_tier_is_used_up() -> None:
    attempts = [
        rec(1, Tier.AZURE_ML, AttemptOutcome.SUBMIT_FAILED, FailureKind.PERMANENT_FOR_TIER),
        rec(2, Tier.BATCH, AttemptOutcome.START_TIMEOUT),
        rec(3, Tier.BATCH, AttemptOutcome.START_TIMEOUT),
        rec(4, Tier.VM, AttemptOutcome.JOB_FAILED, FailureKind.PERMANENT_FOR_TIER, "no kvm"),
    ]
    decision = step(attempts)
    assert decision.action == "give_up"
    assert decision.tier is None
    assert decision.reason.startswith("no compute tier left")


def test_give_up_when_attempts_run_out() -> None:
    config = PolicyConfig(max_attempts=3, max_attempts_per_tier=5)
    attempts = [rec(n, Tier.BATCH, AttemptOutcome.STUCK, reason="no heartbeat") for n in (1, 2, 3)]
    decision = step(attempts, config=config)
    assert decision.action == "give_up"
    assert decision.reason.startswith("attempts exhausted: 3 attempt(s)")
    assert "no heartbeat" in decision.reason


def test_whole_resilient_sequence_walks_the_tiers() -> None:
    attempts: list[AttemptRecord] = []
    tiers_used = []
    while True:
        decision = step(attempts)
        if decision.action == "give_up":
            break
        assert decision.tier is not None
        tiers_used.append(decision.tier)
        attempts.append(rec(len(attempts) + 1, decision.tier, AttemptOutcome.START_TIMEOUT))
    assert tiers_used == [Tier.AZURE_ML, Tier.AZURE_ML, Tier.BATCH, Tier.BATCH, Tier.VM, Tier.VM]
    assert len(attempts) == CONFIG.max_attempts


def test_nothing_remaining_gives_up() -> None:
    assert step([], remaining=0).action == "give_up"
    assert step([rec(1, Tier.BATCH, AttemptOutcome.STUCK)], remaining=0).action == "give_up"


def test_naive_never_makes_a_second_attempt() -> None:
    req = parse_evaluation_request(b'{"task_set": "waa-smoke", "policy": "naive"}', 10)
    naive = PolicyConfig.for_request(req)
    assert step([], config=naive).action == "submit"
    for outcome, kind in [
        (AttemptOutcome.START_TIMEOUT, None),
        (AttemptOutcome.JOB_FAILED, FailureKind.PERMANENT_FOR_TIER),
        (AttemptOutcome.SUBMIT_FAILED, FailureKind.TRANSIENT),
    ]:
        decision = step([rec(1, Tier.AZURE_ML, outcome, kind)], config=naive)
        assert decision.action == "give_up"


def test_failover_disabled_stays_on_one_tier() -> None:
    config = PolicyConfig(failover_enabled=False)
    attempts = [rec(1, Tier.AZURE_ML, AttemptOutcome.STUCK)]
    assert step(attempts, config=config).tier == Tier.AZURE_ML
    attempts.append(rec(2, Tier.AZURE_ML, AttemptOutcome.STUCK))
    decision = step(attempts, config=config)
    assert decision.action == "give_up"
    assert "failover disabled" in decision.reason


# --- classification and budget ---------------------------------------------------------------


def test_runner_failure_classification() -> None:
    expected = {
        RunnerFailureCode.NO_NESTED_VIRTUALIZATION: FailureKind.PERMANENT_FOR_TIER,
        RunnerFailureCode.WAA_NOT_READY: FailureKind.TRANSIENT,
        RunnerFailureCode.SETUP_FAILED: FailureKind.TRANSIENT,
        RunnerFailureCode.TASK_CRASHED: FailureKind.JOB_FAILED,
        RunnerFailureCode.INTERNAL: FailureKind.JOB_FAILED,
        # The tier's own configuration (its golden image path, its jobs' identity): fail over.
        RunnerFailureCode.STORAGE_MISSING: FailureKind.PERMANENT_FOR_TIER,
        RunnerFailureCode.CREDENTIALS_UNAVAILABLE: FailureKind.PERMANENT_FOR_TIER,
    }
    assert {code: classify_runner_failure(code) for code in RunnerFailureCode} == expected


def test_runner_permanent_flag_wins() -> None:
    report = RunnerFailure(code=RunnerFailureCode.SETUP_FAILED, permanent=True)
    assert classify_runner_report(report) is FailureKind.PERMANENT_FOR_TIER
    report = RunnerFailure(code=RunnerFailureCode.SETUP_FAILED)
    assert classify_runner_report(report) is FailureKind.TRANSIENT


@pytest.mark.parametrize(
    ("budget", "spent", "next_job", "exceeds"),
    [
        (None, 1000.0, 1000.0, False),
        (5.0, 0.0, 4.99, False),
        (5.0, 2.0, 3.0, False),
        (5.0, 2.0, 3.01, True),
        (5.0, 5.5, 0.0, True),
        (5.0, 1.0, -2.0, False),
    ],
)
def test_projected_cost_exceeds(
    budget: float | None, spent: float, next_job: float, exceeds: bool
) -> None:
    assert projected_cost_exceeds(budget, spent, next_job) is exceeds


def test_projected_cost_tolerates_rounding_of_summed_reservations() -> None:
    spent = sum([0.1] * 3)  # 0.30000000000000004
    assert projected_cost_exceeds(0.5, spent, 0.2) is False
    assert projected_cost_exceeds(0.5, spent, 0.2001) is True


def test_breaker_counts_each_failed_job_once() -> None:
    first = breaker_after_failure({}, [], Tier.AZURE_ML, "job-a")
    assert first == ({"azureml": 1}, ["job-a"])
    assert breaker_after_failure(*first, Tier.AZURE_ML, "job-a") is None  # re-delivered
    second = breaker_after_failure(*first, Tier.BATCH, "job-b")
    assert second == ({"azureml": 1, "batch": 1}, ["job-a", "job-b"])
    # Only the most recent jobs are remembered, so the row stays small.
    many = breaker_after_failure({"vm": 1}, [f"j{i}" for i in range(200)], Tier.VM, "new")
    assert many is not None and len(many[1]) == 200 and many[1][-1] == "new"
