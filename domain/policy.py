"""The attempt and failover policy of a shard: which tier next, after how long, or give up.

Everything here is pure and deterministic, because the shard orchestration calls it during
replay: no clock, no randomness (jitter is a hash of the ids), no I/O. The configuration is a
JSON-serializable model that the evaluation orchestration snapshots into its input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.jobs import FailureKind, Tier
from domain.messages import RunnerFailure, RunnerFailureCode
from domain.outcomes import attempts_exhausted, no_tier_left

if TYPE_CHECKING:
    from domain.requests import EvaluationRequest

NAIVE_JOB_TIMEOUT_SECONDS = 4 * 3600


# Failures of one tier within one evaluation before no new attempt is sent to it.
BREAKER_THRESHOLD = 3
# With every tier's breaker open, a shard or slot with work left waits this long and then sends
# one attempt to a tier anyway (the breaker half-open), instead of giving its tasks up: under a
# flaky (not broken) cloud every tier collects three failures in a long evaluation.
BREAKER_COOLDOWN_SECONDS = 900.0


class PolicyConfig(BaseModel):
    # Snapshotted into orchestration inputs, so read back from histories after a deploy: a
    # field a later deploy no longer knows is ignored, as in every contract (domain/contracts).
    model_config = ConfigDict(frozen=True, extra="ignore")

    max_attempts: int = Field(default=6, ge=1)  # total per shard, over all tiers
    max_attempts_per_tier: int = Field(default=2, ge=1)  # a tier that keeps failing is left
    backoff_base_seconds: float = Field(default=60.0, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    backoff_cap_seconds: float = Field(default=900.0, ge=0)
    jitter_fraction: float = Field(default=0.2, ge=0, le=1)
    # Failures of one tier within one evaluation before no new attempt is sent to it.
    breaker_threshold: int = Field(default=BREAKER_THRESHOLD, ge=1)
    container_start_timeout_seconds: float = Field(default=600.0, gt=0)
    heartbeat_timeout_seconds: float = Field(default=600.0, gt=0)
    job_timeout_seconds: float = Field(default=4 * 3600.0, gt=0)
    start_deadline_enabled: bool = True
    stuck_detection_enabled: bool = True
    failover_enabled: bool = True
    # 0: give up when every tier's breaker is open (instances started before the half-open
    # probe existed replay that way); else wait this long, then probe (`next_step`).
    breaker_cooldown_seconds: float = Field(default=0.0, ge=0)
    # Runs of a task that may fail before its failure is final (see EvaluationRequest).
    task_retries: int = Field(default=1, ge=0)

    @classmethod
    def resilient(cls, req: EvaluationRequest) -> PolicyConfig:
        return cls(
            task_retries=req.task_retries,
            breaker_cooldown_seconds=BREAKER_COOLDOWN_SECONDS,
            container_start_timeout_seconds=req.container_start_timeout_minutes * 60,
            heartbeat_timeout_seconds=req.heartbeat_timeout_minutes * 60,
            job_timeout_seconds=req.job_timeout_hours * 3600,
        )

    @classmethod
    def naive(cls, req: EvaluationRequest) -> PolicyConfig:
        """The setup that failed in practice: one submission per shard, nobody watching the
        start or the heartbeats, a 4-hour job timeout as the only safety net, no failover."""
        return cls(
            max_attempts=1,
            max_attempts_per_tier=1,
            container_start_timeout_seconds=req.container_start_timeout_minutes * 60,
            heartbeat_timeout_seconds=req.heartbeat_timeout_minutes * 60,
            job_timeout_seconds=NAIVE_JOB_TIMEOUT_SECONDS,
            start_deadline_enabled=False,
            stuck_detection_enabled=False,
            failover_enabled=False,
            task_retries=0,
        )

    @classmethod
    def for_request(cls, req: EvaluationRequest) -> PolicyConfig:
        return cls.naive(req) if req.policy == "naive" else cls.resilient(req)


def backoff_seconds(
    config: PolicyConfig, evaluation_id: str, shard_index: int, attempt: int
) -> float:
    """Delay before the attempt after `attempt` (1-based): base * factor^(attempt-1), capped,
    times a jitter factor in [1 - jitter, 1 + jitter] drawn from a hash of the ids, so shards
    that failed together do not all come back at once, and a replay computes the same delay.
    Never above the cap."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    # Past ~60 doublings every realistic cap is reached; bounding the exponent avoids overflow.
    exponent = min(attempt - 1, 64)
    delay = min(
        config.backoff_cap_seconds, config.backoff_base_seconds * config.backoff_factor**exponent
    )
    digest = hashlib.sha256(f"{evaluation_id}:{shard_index}:{attempt}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # in [0, 1)
    jittered = delay * (1.0 + config.jitter_fraction * (2.0 * unit - 1.0))
    return max(0.0, min(config.backoff_cap_seconds, jittered))


class AttemptOutcome(StrEnum):
    COMPLETED = "completed"
    START_TIMEOUT = "start_timeout"  # no first heartbeat before the container-start deadline
    STUCK = "stuck"  # heartbeats stopped, or the run deadline passed
    JOB_FAILED = "job_failed"  # the job or the runner reported a failure
    SUBMIT_FAILED = "submit_failed"  # the backend refused the submission
    CANCELLED = "cancelled"  # by the user
    BUDGET = "budget"  # not submitted / stopped: the budget would be exceeded


_NOT_A_TIER_FAILURE = frozenset(
    {AttemptOutcome.COMPLETED, AttemptOutcome.CANCELLED, AttemptOutcome.BUDGET}
)


class AttemptRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    attempt: int = Field(ge=1)
    tier: Tier
    outcome: AttemptOutcome
    reason: str = ""
    # None: use the outcome's default (see `failure_kind_of`).
    failure_kind: FailureKind | None = None


def counts_against_tier(outcome: AttemptOutcome) -> bool:
    """Whether an attempt with this outcome is a failure of its tier (for the breaker)."""
    return outcome not in _NOT_A_TIER_FAILURE


def failure_kind_of(record: AttemptRecord) -> FailureKind:
    """The record's failure kind; by default a missed start or a hang is treated as transient
    (the next attempt may well start), as is a failed submission."""
    if record.failure_kind is not None:
        return record.failure_kind
    if record.outcome is AttemptOutcome.JOB_FAILED:
        return FailureKind.JOB_FAILED
    return FailureKind.TRANSIENT


class BreakerState(BaseModel):
    """Per-evaluation failure counts by tier. Pure: `record` returns a new state."""

    model_config = ConfigDict(frozen=True)

    failures: dict[Tier, int] = Field(default_factory=dict)

    def is_open(self, tier: Tier, threshold: int) -> bool:
        return self.failures.get(tier, 0) >= threshold

    def record(self, tier: Tier, outcome: AttemptOutcome) -> BreakerState:
        return self.failed(tier) if counts_against_tier(outcome) else self

    def failed(self, tier: Tier) -> BreakerState:
        """One more failure of `tier`."""
        return BreakerState(failures={**self.failures, tier: self.failures.get(tier, 0) + 1})


# Jobs whose failure the breaker row remembers having counted: enough for any re-delivery of
# a recent attempt's end, small enough to stay far under a Table property's size limit.
BREAKER_JOBS_KEPT = 200


def breaker_after_failure(
    failures: Mapping[str, int], counted_jobs: Sequence[str], tier: Tier, job_name: str
) -> tuple[dict[str, int], list[str]] | None:
    """The evaluation's breaker counts (by tier value) and counted jobs after `job_name`
    failed on `tier` (an outcome `counts_against_tier`); None when this job's failure is
    already counted (a re-delivered end of attempt counts once)."""
    if job_name in counted_jobs:
        return None
    after = BreakerState(failures={Tier(t): int(n) for t, n in failures.items()}).failed(tier)
    return (
        {t.value: n for t, n in after.failures.items()},
        [*counted_jobs, job_name][-BREAKER_JOBS_KEPT:],
    )


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: Literal["submit", "give_up"]
    tier: Tier | None = None
    delay_seconds: float = 0.0
    reason: str
    # A half-open probe: sent after the delay even though the tier's breaker is open.
    probe: bool = False


def _submit(tier: Tier, delay: float, reason: str) -> Decision:
    return Decision(action="submit", tier=tier, delay_seconds=delay, reason=reason)


def _give_up(reason: str) -> Decision:
    return Decision(action="give_up", reason=reason)


def _probe(config: PolicyConfig, tier: Tier, why: str) -> Decision:
    minutes = config.breaker_cooldown_seconds / 60
    return Decision(
        action="submit",
        tier=tier,
        delay_seconds=config.breaker_cooldown_seconds,
        reason=f"probe {tier} after {minutes:g} min (breaker half-open): {why}",
        probe=True,
    )


def next_step(
    config: PolicyConfig,
    *,
    attempts: list[AttemptRecord],
    tiers: list[Tier],
    breaker: BreakerState,
    remaining_tasks: int,
    evaluation_id: str = "",
    shard_index: int = 0,
) -> Decision:
    """What the shard does next, given its attempts so far (oldest first).

    A user's cancel and a refused budget reservation end the shard before it asks (the shard
    orchestration stops at once on either), so they are never an input here.

    - Nothing left to run: give up (there is nothing to do).
    - No attempt yet: the first tier in `tiers` whose breaker is closed, at once.
    - `max_attempts` used: give up.
    - Transient failure, tier under `max_attempts_per_tier`, breaker closed: same tier after
      `backoff_seconds` (evaluation_id and shard_index seed the jitter).
    - Permanent failure for the tier, tier out of attempts, or its breaker open: the next tier
      in order that has attempts left, is not known broken for this shard and whose breaker is
      closed, at once (the failure was the tier's, waiting would not help). With failover
      disabled, or no such tier: give up.
    - Every tier's breaker open (and `breaker_cooldown_seconds` set): instead of giving up,
      probe the first tier that still has attempts and is not known broken, after the
      cooldown (`Decision.probe`: sent whatever the breaker says then).
    """
    if remaining_tasks <= 0:
        return _give_up("no tasks remain")
    order = list(dict.fromkeys(tiers))
    if not order:
        return _give_up(no_tier_left("no tiers configured"))
    threshold = config.breaker_threshold

    if not attempts:
        for tier in order:
            if not breaker.is_open(tier, threshold):
                return _submit(tier, 0.0, f"first attempt on {tier}")
        every = "the circuit breaker is open for every tier"
        if config.breaker_cooldown_seconds > 0:
            return _probe(config, order[0], every)
        return _give_up(no_tier_left(every))

    last = attempts[-1]
    if len(attempts) >= config.max_attempts:
        detail = f"{len(attempts)} attempt(s), last on {last.tier}: {last.outcome}"
        if last.reason:
            detail += f" ({last.reason})"
        return _give_up(attempts_exhausted(detail))

    used: dict[Tier, int] = {}
    broken: set[Tier] = set()
    for record in attempts:
        used[record.tier] = used.get(record.tier, 0) + 1
        if (
            counts_against_tier(record.outcome)
            and failure_kind_of(record) is FailureKind.PERMANENT_FOR_TIER
        ):
            broken.add(record.tier)

    tier = last.tier
    # A completed job that left tasks without results is retried like any failed job.
    kind = (
        FailureKind.JOB_FAILED
        if last.outcome is AttemptOutcome.COMPLETED
        else failure_kind_of(last)
    )
    if kind is FailureKind.PERMANENT_FOR_TIER:
        why = f"{tier} failed permanently: {last.reason or last.outcome}"
    elif used[tier] >= config.max_attempts_per_tier:
        why = f"{tier} used its {config.max_attempts_per_tier} attempt(s)"
    elif breaker.is_open(tier, threshold):
        why = f"circuit breaker open for {tier}"
    else:
        delay = backoff_seconds(config, evaluation_id, shard_index, len(attempts))
        return _submit(tier, delay, f"retry on {tier} after {last.outcome}")

    if not config.failover_enabled:
        return _give_up(attempts_exhausted(f"{why}; failover disabled"))
    for candidate in order:
        if candidate == tier or candidate in broken:
            continue
        if used.get(candidate, 0) >= config.max_attempts_per_tier:
            continue
        if breaker.is_open(candidate, threshold):
            continue
        return _submit(candidate, 0.0, f"fail over to {candidate}: {why}")
    if config.breaker_cooldown_seconds > 0:
        # Every tier left with attempts and not known broken was skipped for its breaker alone:
        # probe the first of them after the cooldown rather than give the tasks up.
        for candidate in order:
            if candidate in broken or used.get(candidate, 0) >= config.max_attempts_per_tier:
                continue
            return _probe(config, candidate, f"{why}; circuit breaker open for every tier")
    return _give_up(no_tier_left(why))


# What the shard runner's failure codes mean for the tier that ran it.
RUNNER_FAILURE_KINDS: dict[RunnerFailureCode, FailureKind] = {
    # /dev/kvm missing: this tier's nodes cannot run the Windows guest; no retry will help.
    RunnerFailureCode.NO_NESTED_VIRTUALIZATION: FailureKind.PERMANENT_FOR_TIER,
    # The guest did not boot or set up in time: often a slow node or pull; retry.
    RunnerFailureCode.WAA_NOT_READY: FailureKind.TRANSIENT,
    RunnerFailureCode.SETUP_FAILED: FailureKind.TRANSIENT,
    # The job itself failed; the tier may be fine.
    RunnerFailureCode.TASK_CRASHED: FailureKind.JOB_FAILED,
    RunnerFailureCode.INTERNAL: FailureKind.JOB_FAILED,
    # Where each tier finds the golden image, and with which identity its jobs read Key Vault,
    # is that tier's configuration: another attempt there fails the same way; the next tier
    # may be set up right.
    RunnerFailureCode.STORAGE_MISSING: FailureKind.PERMANENT_FOR_TIER,
    RunnerFailureCode.CREDENTIALS_UNAVAILABLE: FailureKind.PERMANENT_FOR_TIER,
}


def classify_runner_failure(code: RunnerFailureCode) -> FailureKind:
    return RUNNER_FAILURE_KINDS[RunnerFailureCode(code)]


def classify_runner_report(failure: RunnerFailure) -> FailureKind:
    """A runner's failure message: its own `permanent` flag wins over the code's default."""
    if failure.permanent:
        return FailureKind.PERMANENT_FOR_TIER
    return classify_runner_failure(failure.code)


# Reservations are sums of floats: a job that fits the budget exactly must not be refused for
# the last bit of rounding.
BUDGET_TOLERANCE_USD = 1e-9


def projected_cost_exceeds(
    budget_usd: float | None, spent_usd: float, next_job_estimate_usd: float
) -> bool:
    """Whether submitting a job expected to cost `next_job_estimate_usd` would take the
    evaluation past its budget (no budget: never). `spent_usd` is what is already committed:
    settled cost plus the reservations of jobs still running."""
    if budget_usd is None:
        return False
    return spent_usd + max(0.0, next_job_estimate_usd) > budget_usd + BUDGET_TOLERANCE_USD
