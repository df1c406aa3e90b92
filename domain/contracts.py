"""What the orchestrations, their activities and the events they wait on say to each other.

One model per hop, in one place: the orchestration inputs (the evaluation, a shard, the job
snapshot every job of the evaluation is run with), every activity's input and result, and the
payloads of the events a shard waits on. A sender builds a model and sends `to_json()`; a
receiver reads with `model_validate`. Keys such as `heartbeat_timeout_seconds` are spelled here
and nowhere else on the way (the job row in the state table has its own columns).

These messages are written into Durable histories and replayed from there after a deploy, so:
- what travels is plain JSON of the same shape as before the models existed (the replay test in
  `tests/replay` holds histories recorded then);
- every field added later has a default, and unknown fields are ignored (`extra="ignore"`), so
  an instance started by an older or newer deploy still reads its history;
- `to_json()` sends the fields the sender set and leaves the others to the receiver's default
  (`exclude_unset`): a message that was forwarded (the job snapshot) keeps the keys it was
  recorded with, and an optional flag such as `cancel_best_effort` is absent unless raised. So
  a sender names every field it means to send, defaults included (`CancelRequested(reason=...)`,
  not `CancelRequested()`, which sends `{}`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_serializer

from domain.jobs import FailureKind, JobState, Tier
from domain.outcomes import CANCELLED_BY_USER
from domain.policy import AttemptOutcome, PolicyConfig
from domain.requests import EvaluationRequest

_POLICY = PolicyConfig.model_fields
# PolicyConfig fields added after the recorded histories (tests/replay), in the order added.
_POLICY_ADDED_LATER = ("breaker_cooldown_seconds",)
_REQUEST = EvaluationRequest.model_fields

# A reason or failure kind read from a table row may be missing, null or empty there: it reads
# as none, as it did when these messages were plain dicts.
Reason = Annotated[str, BeforeValidator(lambda v: "" if v is None else v)]
Kind = Annotated[FailureKind | None, BeforeValidator(lambda v: v or None)]


class Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return cls.model_validate(data)


class _CarriesPolicy(Contract):
    policy: PolicyConfig

    # The policy travels whole: `exclude_unset` would otherwise drop the fields that
    # `PolicyConfig.for_request` left at their defaults. A field added since histories were
    # first recorded travels only when it is not its default (which is what an instance started
    # before it reads), so replaying such an instance forwards the policy it recorded.
    @field_serializer("policy")
    def _whole_policy(self, policy: PolicyConfig) -> dict[str, Any]:
        whole = policy.model_dump(mode="json")
        for name in _POLICY_ADDED_LATER:
            if whole[name] == _POLICY[name].default:
                del whole[name]
        return whole


# --- orchestration inputs -----------------------------------------------------------------------


class JobSnapshot(Contract):
    """How every job of the evaluation runs, fixed when it starts so replays never read
    settings. The defaults are the request's (an instance always carries them all)."""

    vm_size: str
    spot: bool = _REQUEST["spot"].default
    image: str = ""
    agent: str = _REQUEST["agent"].default
    model: str = _REQUEST["model"].default
    max_steps: int = _REQUEST["max_steps"].default
    som_origin: str = _REQUEST["som_origin"].default
    a11y_backend: str = _REQUEST["a11y_backend"].default
    # Whose credentials the jobs get ("openai" | "azure"; resolved at start, see
    # domain.requests.resolve_model_provider). "" in an instance started before it existed:
    # its jobs get no model credentials, as then.
    model_provider: str = ""
    # The evaluation's shards in parallel: the capacity to make usable.
    workers: int = _REQUEST["workers"].default
    job_timeout_seconds: float = _POLICY["job_timeout_seconds"].default
    heartbeat_timeout_seconds: float = _POLICY["heartbeat_timeout_seconds"].default
    stuck_detection: bool = _POLICY["stuck_detection_enabled"].default
    task_retries: int = _POLICY["task_retries"].default

    @classmethod
    def for_request(
        cls, req: EvaluationRequest, policy: PolicyConfig, *, image: str, workers: int
    ) -> JobSnapshot:
        return cls(
            vm_size=req.vm_size,
            spot=req.spot,
            image=image,
            agent=req.agent,
            model=req.model,
            max_steps=req.max_steps,
            som_origin=req.som_origin,
            a11y_backend=req.a11y_backend,
            model_provider=req.model_provider.value if req.model_provider else "",
            workers=workers,
            job_timeout_seconds=policy.job_timeout_seconds,
            heartbeat_timeout_seconds=policy.heartbeat_timeout_seconds,
            stuck_detection=policy.stuck_detection_enabled,
            task_retries=policy.task_retries,
        )


class PlannedShard(Contract):
    index: int
    task_ids: list[str]
    vm_size: str


class Distribution(StrEnum):
    """How tasks reach the jobs (EvaluationRequest.distribution)."""

    QUEUE = "queue"  # worker slots; each job asks for its next task
    STATIC = "static"  # fixed shards planned up front


class EvaluationInput(_CarriesPolicy):
    evaluation_id: str
    # Static: the planned shards. Queue: empty (the tasks wait in the evaluation's queue).
    shards: list[PlannedShard]
    tiers: list[Tier]
    job: JobSnapshot
    # An instance started before the queue existed has no `distribution`: it ran static shards.
    distribution: Distribution = Distribution.STATIC
    # Queue: the number of worker slots (one `worker` sub-orchestration each).
    slots: int = 0
    # Queue: a task past this many times its expected minutes may get a second copy when the
    # queue is empty (0: no tail copies).
    tail_copy_factor: float = 0.0


class ShardInput(_CarriesPolicy):
    evaluation_id: str
    shard_index: int
    task_ids: list[str]
    tiers: list[Tier]
    # Right-sizing may give a shard its own VM size: the snapshot's vm_size is the shard's.
    job: JobSnapshot


class WorkerInput(_CarriesPolicy):
    """One worker slot of a queue-distributed evaluation: one job at a time while the
    evaluation's queue has work. `slot` is used wherever a shard's index would be (job names,
    the `shard-NNN` row, log fields)."""

    evaluation_id: str
    slot: int
    slots: int  # the evaluation's slot count (a job's expected share of the queue)
    tiers: list[Tier]
    job: JobSnapshot
    tail_copy_factor: float = 0.0


class EvaluationState(StrEnum):
    """The evaluation row's `state` (finalize_evaluation writes the end)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # a shard orchestration itself failed
    CANCELLED = "cancelled"


# --- activities ---------------------------------------------------------------------------------


class PrepareAttemptInput(Contract):
    evaluation_id: str
    shard_index: int
    task_ids: list[str]
    # Queue distribution: `task_ids` is empty and `remaining` is the queue's claimable tasks.
    queue: bool = False


class ShardState(Contract):
    """What a shard decides its next attempt on (prepare_attempt's and finish_attempt's
    result): tasks still without a final outcome, tier failures so far in the evaluation (the
    circuit breaker), and whether the user cancelled."""

    remaining: list[str]
    breaker: dict[Tier, int] = Field(default_factory=dict)
    cancel_requested: bool = False


class CapacityInput(JobSnapshot):
    evaluation_id: str
    shard_index: int
    tier: Tier


class CapacityStatus(StrEnum):
    READY = "ready"
    PENDING = "pending"  # being made usable: poll `capacity_status` again
    FAILED = "failed"


class CapacityResult(Contract):
    """ensure_capacity's and capacity_status's answer."""

    status: CapacityStatus
    reason: Reason = ""
    failure_kind: Kind = None


class SubmitJobInput(JobSnapshot):
    evaluation_id: str
    shard_index: int
    attempt: int
    tier: Tier
    job_name: str
    task_ids: list[str]
    instance_id: str  # the shard orchestration's, which the job's events are raised on
    failover: bool = False  # the previous attempt ran on another tier
    # Queue distribution: `task_ids` is empty; the job asks for its tasks. `expected_tasks` is
    # its share of the queue (for the budget reservation); `tail_copy_factor` as in
    # EvaluationInput, recorded on the job row for the `next_task` answers.
    queue: bool = False
    expected_tasks: int = 0
    tail_copy_factor: float = 0.0


class SubmitStatus(StrEnum):
    SUBMITTED = "submitted"
    FAILED = "failed"  # this attempt ends without a job (refused, or capacity not usable)
    BUDGET = "budget"  # not submitted: the next job's projected cost would pass the budget


class SubmitJobResult(Contract):
    status: SubmitStatus
    reason: Reason = ""
    failure_kind: Kind = None


class FinishAttemptInput(Contract):
    evaluation_id: str
    shard_index: int
    task_ids: list[str]  # all of the shard's, to tell which remain
    attempt: int
    tier: Tier
    job_name: str
    submitted: bool  # a job exists for this attempt (and may need cancelling)
    outcome: AttemptOutcome
    reason: Reason
    failure_kind: Kind = None
    # The retried cancel kept failing: record it for the sweeper instead of failing again.
    cancel_best_effort: bool = False
    queue: bool = False  # as in PrepareAttemptInput


class CloseShardInput(Contract):
    evaluation_id: str
    shard_index: int
    task_ids: list[str]
    reason: Reason  # recorded with every task left without an outcome
    attempts: int
    # Queue distribution: a slot closes no task (other slots may still run them); the
    # evaluation closes what is left at the end (FinalizeEvaluationInput.not_run_reason).
    queue: bool = False


class ShardSummary(Contract):
    """close_shard's result, and the shard orchestration's output."""

    shard_index: int
    not_run: int
    attempts: int
    reason: Reason = ""


class FinalizeEvaluationInput(Contract):
    evaluation_id: str
    error: Reason = ""  # a shard orchestration failed: its first line
    # Queue distribution: the reason recorded with every task still without an outcome when
    # all slots have ended (why the last slots gave up). "" : the static default reason.
    not_run_reason: Reason = ""


# --- events a shard waits on --------------------------------------------------------------------


class ContainerStarted(Contract):
    """`container_started_a{N}`: the attempt's first heartbeat arrived."""

    job_name: str = ""


class JobEnded(Contract):
    """`job_ended_a{N}`: the attempt's job reached a terminal state (Event Grid, the runner's
    last heartbeat, or the sweeper's reconciliation; `stuck` when the sweeper stopped it)."""

    state: JobState
    reason: Reason = ""
    failure_kind: Kind = None
    stuck: bool = False


class CancelRequested(Contract):
    """`cancel`: the user cancelled the evaluation."""

    reason: str = CANCELLED_BY_USER
