"""Response bodies of the HTTP API, as pydantic models, for its OpenAPI description.

The endpoints build these bodies as plain dicts (triggers/http_api.py, triggers/heartbeats.py,
adapters/state/views.py); the models here state the shape those dicts have, field for field,
and tests/openapi checks every real response against them (schemathesis validates each
response body against the schema generated from these models). The request bodies are not
repeated here: the document uses the models the endpoints validate with
(`domain.requests.EvaluationRequest`, `domain.messages.JobMessage`), and the results table is
`domain.results.DomainResult` itself.

Objects accept properties beyond those listed (no `additionalProperties: false`): a client must
ignore what it does not know, so the API can add a field without breaking one; every listed
field that the endpoint always writes is required.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from domain.contracts import Distribution, EvaluationState
from domain.jobs import JobState, Tier
from domain.outcomes import TaskOutcome
from domain.requests import EvaluationRequest
from domain.results import DomainResult

# What a retry decides itself, so its body may not set them (the retry endpoint refuses them
# with 400 naming the field): the tasks (the original's runs that did not complete), the trials
# they belong to, and the idempotency key (derived from the original).
RETRY_FIXED_FIELDS = ("tasks", "task_set", "trials", "idempotency_key")


class _Body(BaseModel):
    # `defer_build`: the models are only turned into JSON Schema, never used on the hot path.
    model_config = ConfigDict(defer_build=True)


class ErrorBody(_Body):
    """Every 4xx: what is wrong, starting with the field to fix (triggers/http_api.py `error`)."""

    error: str = Field(description="What is wrong; starts with the field it is about.")
    field: str | None = Field(
        default=None,
        description="The request field (or header, or path parameter) to fix, when there is one.",
    )


class Links(_Body):
    status_url: str = Field(description="GET this for the evaluation's status.")
    cancel_url: str = Field(description="POST here to cancel the evaluation.")


class EvaluationStarted(Links):
    """202 of POST /api/evaluations: the evaluation was created and its orchestration started."""

    evaluation_id: str
    created: Literal[True]
    tasks: int = Field(description="Tasks in the evaluation.")
    shards: int = Field(
        description="Jobs run side by side: the worker slots with the queue, else the shards "
        "the tasks were split into."
    )
    distribution: Distribution | None = Field(
        default=None, description="How the tasks reach the jobs (request `distribution`)."
    )
    trials: int | None = Field(default=None, description="Runs of each task (request `trials`).")
    runs: int | None = Field(default=None, description="Task runs: tasks x trials.")
    retry_of: str | None = Field(default=None, description="A retry: the evaluation it retries.")


class EvaluationExisting(Links):
    """200 of POST /api/evaluations (the idempotency key names an evaluation already started)
    and of POST /api/evaluations/{id}/retry (a retry exists already and `force` is not set)."""

    evaluation_id: str
    created: Literal[False]
    retry_of: str | None = None
    retried_by: list[str] | None = None


class EvaluationListItem(Links):
    evaluation_id: str
    state: EvaluationState | None
    created_at: str = Field(description="ISO 8601 time the evaluation was created.")
    tasks: int
    policy: str | None
    distribution: Distribution | None = Field(
        default=None, description="How the tasks reach the jobs (request `distribution`)."
    )


class EvaluationList(_Body):
    """200 of GET /api/evaluations: the most recent evaluations, newest first."""

    evaluations: list[EvaluationListItem]


class Counts(_Body):
    """Task outcomes: did the infrastructure run each task (not the agent's score)."""

    total: int
    completed: int
    failed: int
    running: int
    pending: int
    not_run: int


class Cost(_Body):
    so_far_usd: float
    estimated_total_usd: float
    per_completed_task_usd: float | None
    budget_usd: float | None = None


class ShardView(_Body):
    shard: int
    tasks: int
    tier: Tier | None
    attempt: int
    job_name: str | None
    status: str
    job_state: JobState | None
    seconds_since_heartbeat: float | None
    retries: int
    failovers: int
    reason: str
    current_task: str | None = Field(
        default=None,
        description="Queue distribution: the task the slot's job claimed and runs now (null "
        "between tasks, or when no job of the slot is alive).",
    )
    current_task_since: str | None = Field(
        default=None, description="ISO 8601 time the slot's job claimed `current_task`."
    )


class TaskView(_Body):
    task_id: str
    domain: str
    shard: int | None = Field(
        description="The task's shard (static distribution); with the queue, the slot it was "
        "planned on, a hint only: any slot's job may claim it."
    )
    outcome: TaskOutcome
    reason: str
    score: float | None
    attempt: int | None
    failed_runs: int
    # A run of one trial of several: `task_id` is then "<task>#<trial>".
    task: str | None = None
    trial: int | None = None
    artifacts: str | None = Field(
        default=None, description="Blob URL (no SAS) of the task's uploaded result folder."
    )


class ResultsTable(_Body):
    """The agent's score per domain and over all tasks (domain/results.py)."""

    domains: list[DomainResult]
    overall: DomainResult


class EvaluationStatus(_Body):
    """200 of GET /api/evaluations/{id} (adapters/state/views.py `evaluation_view`)."""

    evaluation_id: str
    state: EvaluationState
    created_at: str
    policy: str | None
    distribution: Distribution = Field(
        description="How the tasks reach the jobs: `queue` (each job asks for its next task; "
        "`shards` are then worker slots) or `static` (fixed shards planned up front). An "
        "evaluation started before the queue existed shows `static`."
    )
    workers: int
    vm_size: str
    spot: bool
    tiers: list[str]
    counts: Counts
    cost: Cost
    elapsed_seconds: float
    eta_seconds: float | None
    shards: list[ShardView]
    results: ResultsTable
    trials: int | None = None
    retry_of: str | None = Field(default=None, description="The evaluation this one retries.")
    retried_by: list[str] | None = Field(
        default=None, description="The retries of this evaluation, oldest first."
    )
    runtime_status: str | None = Field(
        description="The Durable orchestration's runtime status (Running, Completed, ...)."
    )
    summary: dict[str, Any] | None = Field(
        default=None, description="Written when the evaluation ends: outcomes, makespan, cost."
    )
    tasks: list[TaskView] | None = Field(
        default=None, description="Every task's outcome; left out with ?tasks=false."
    )


class EvaluationResults(ResultsTable):
    """200 (JSON) of GET /api/evaluations/{id}/results."""

    evaluation_id: str
    state: EvaluationState


class CancelAccepted(Links):
    """202 of POST /api/evaluations/{id}/cancel."""

    evaluation_id: str
    cancel_requested: Literal[True]


class HeartbeatAccepted(_Body):
    """202 of POST /api/heartbeats: the message was recorded."""

    accepted: Literal[True]
    kind: str


class ArtifactUrls(HeartbeatAccepted):
    """200 of POST /api/heartbeats with kind "artifact_urls" (the runner wire contract): one
    write-only upload URL per file of a task's result folder."""

    prefix: str = Field(description="Blob URL of the task's folder, without a SAS.")
    urls: dict[str, str] = Field(description="Relative path -> blob URL with a write-only SAS.")
    expires_at: str


class OpenApiDocument(_Body):
    """200 of GET /api/openapi.json: this document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


# The body of POST /api/evaluations/{id}/retry: the start request's own fields (the same
# FieldInfo, so the same types, bounds and patterns) but those a retry fixes, each optional with
# the original evaluation's value as the default, plus `force`.
RetryRequest: type[BaseModel] = create_model(
    "RetryRequest",
    __config__=ConfigDict(extra="forbid", defer_build=True),
    __doc__="Overrides of the retried evaluation's options; every field is optional.",
    force=(
        bool,
        Field(default=False, description="Start another retry even if one exists already."),
    ),
    **{
        name: (info.annotation, info)
        for name, info in EvaluationRequest.model_fields.items()
        if name not in RETRY_FIXED_FIELDS
    },
)
