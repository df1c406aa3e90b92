"""The body of `POST /api/evaluations`, validated in one place.

`parse_evaluation_request` turns raw bytes into an `EvaluationRequest` or raises `RequestError`
naming the offending field. Validation is strict: a wrong type is an error, never coerced, and an
invalid value is never replaced by a default.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from domain.cost import DEFAULT_PROVISIONING_MINUTES, PRICED_VM_SIZES, RECOMMENDED_VM_SIZE
from domain.credentials import PROVIDER_LABEL, PROVIDER_SETTINGS, ModelCredentials, ModelProvider
from domain.jobs import Tier
from domain.planning import expected_minutes
from domain.tasksets import (
    MAX_TRIALS,
    TASK_SETS,
    WAA_TASK_ID_PATTERN,
    TaskRef,
    domain_of,
    load_task_set,
    task_refs,
)

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# Domain labels of a test_all.json-shaped body; they end up in logs and status documents.
DOMAIN_LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Agent and model names are passed to the job as environment variables and arguments.
AGENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
# Far above WAA's 154 tasks, low enough that one evaluation's records stay small.
MAX_TASKS = 2000
# Workers one evaluation may ask for, unless the MAX_WORKERS app setting says otherwise.
DEFAULT_MAX_WORKERS = 20
DEFAULT_TIERS: tuple[Tier, ...] = (Tier.AZURE_ML, Tier.BATCH, Tier.VM)

_TASK_ID = re.compile(WAA_TASK_ID_PATTERN)
_DOMAIN_LABEL = re.compile(DOMAIN_LABEL_PATTERN)


class RequestError(ValueError):
    """An evaluation request was rejected. `message` starts with the field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, ctx or None)


def _check_ids(ids: object, where: str, seen: set[str]) -> list[str]:
    if not isinstance(ids, list):
        raise _fail("task_list", "{where} must be a list of task ids", where=where)
    for position, task_id in enumerate(ids):
        if not isinstance(task_id, str):
            raise _fail(
                "task_id_type", "item {i} of {where} must be a string", where=where, i=position
            )
        if not _TASK_ID.fullmatch(task_id):
            raise _fail(
                "task_id_pattern",
                "invalid task id {id} (allowed: letters, digits, '-', '_', '.'; "
                "at most 128 characters, starting with a letter or digit)",
                id=_shown(task_id),
            )
        if task_id in seen:
            raise _fail("task_id_duplicate", "duplicate task id {id}", id=_shown(task_id))
        seen.add(task_id)
    return ids


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # A flat list of WAA task ids, or WAA's own test_all.json shape (domain -> task ids).
    tasks: list[str] | dict[str, list[str]] | None = None
    task_set: str | None = None
    workers: int = 10
    vm_size: str = RECOMMENDED_VM_SIZE
    tiers: list[Tier] = Field(default_factory=lambda: list(DEFAULT_TIERS), min_length=1)
    spot: bool = False
    budget_usd: float | None = Field(default=None, gt=0, le=100_000, allow_inf_nan=False)
    container_start_timeout_minutes: float = Field(default=10, ge=1, le=180, allow_inf_nan=False)
    heartbeat_timeout_minutes: float = Field(default=10, ge=1, le=180, allow_inf_nan=False)
    job_timeout_hours: float = Field(default=4, ge=0.25, le=48, allow_inf_nan=False)
    agent: str = Field(default="navi", pattern=AGENT_PATTERN)
    model: str = Field(default="gpt-4o", pattern=MODEL_PATTERN)
    # Whose credentials the model uses: "openai" (OPENAI_API_KEY) or "azure" (Azure OpenAI:
    # AZURE_API_KEY and AZURE_ENDPOINT). Omitted: the one provider the app has credentials for
    # (`resolve_model_provider`); never a silent default when there are two, or none.
    model_provider: ModelProvider | None = None
    max_steps: int = Field(default=15, ge=1, le=100)
    # WAA's run.py `--som_origin` (default "oss"): the values its Navi agent handles ("a11y",
    # "omni", "mixed-omni" without a set-of-marks config; "oss", "mixed-oss" with one); any
    # other leaves run.py without a config and fails every task, so it is refused here.
    som_origin: Literal["oss", "a11y", "mixed-oss", "omni", "mixed-omni"] = "oss"
    # WAA's run.py `--a11y_backend` (default "uia"; its comment: "uia" or "win32").
    a11y_backend: Literal["uia", "win32"] = "uia"
    idempotency_key: str | None = Field(default=None, pattern=IDEMPOTENCY_KEY_PATTERN)
    policy: Literal["resilient", "naive"] = "resilient"
    # How tasks reach the jobs (issue 10): "queue", the default: one worker slot per worker,
    # each job asks for its next task (longest expected first) from the evaluation's queue, so
    # a failed job loses one task, not a shard; "static": fixed LPT shards planned up front.
    distribution: Literal["queue", "static"] = Field(
        default="queue",
        description="How tasks reach the jobs: `queue`, one worker slot per worker whose jobs "
        "ask for their next task (longest expected first), or `static`, fixed shards planned "
        "up front.",
    )
    # An alternative to `workers`: as many worker slots as finishing in this many hours needs
    # (`domain.planning.slots_for_target`), capped by MAX_WORKERS.
    target_hours: float | None = Field(
        default=None,
        gt=0,
        le=48,
        allow_inf_nan=False,
        description="Instead of `workers` (not with it): as many workers as finishing in this "
        "many hours needs, capped by the app's MAX_WORKERS. At least a job's provisioning plus "
        "the longest task's expected minutes.",
    )
    # Queue only: when the queue is empty and a task runs far past its expected time, a job
    # that would otherwise exit runs a second copy of it; the first result is kept.
    tail_copies: bool = Field(
        default=False,
        description="Queue only: when nothing is pending, a job that would exit runs a second "
        "copy of a task running far past its expected time; the first result is kept.",
    )
    right_size: bool = Field(
        default=False,
        description="Static only: light shards on a smaller VM size.",
    )
    # How often a task whose run failed (agent crash, setup error) is run again in a later
    # attempt before its failure is final. A task that ran and scored 0 is completed, not failed.
    task_retries: int = Field(default=1, ge=0, le=3)
    # How often each task runs, as WAA's `run.py --trial_id 0..N-1` (domain/tasksets.py run
    # keys); the results table then reports the mean and spread across trials.
    trials: int = Field(default=1, ge=1, le=MAX_TRIALS)

    @field_validator("tasks", mode="before")
    @classmethod
    def _check_tasks(cls, value: object) -> object:
        if value is None:
            return None
        seen: set[str] = set()
        if isinstance(value, list):
            _check_ids(value, "the list", seen)
        elif isinstance(value, dict):
            for label, ids in value.items():
                if not _DOMAIN_LABEL.fullmatch(label):
                    raise _fail("domain_label", "invalid domain name {d}", d=_shown(label))
                _check_ids(ids, f"domain {_shown(label)}", seen)
        else:
            raise _fail(
                "tasks_type",
                "must be a list of task ids or an object mapping each domain to its task ids",
            )
        if not seen:
            raise _fail("tasks_empty", "must name at least one task")
        if len(seen) > MAX_TASKS:
            raise _fail("tasks_too_many", "at most {n} tasks per evaluation", n=MAX_TASKS)
        return value

    @field_validator("task_set")
    @classmethod
    def _known_task_set(cls, value: str | None) -> str | None:
        if value is not None and value not in TASK_SETS:
            raise _fail(
                "task_set_unknown",
                "unknown task set {name} (known: {known})",
                name=_shown(value),
                known=", ".join(TASK_SETS),
            )
        return value

    @field_validator("workers")
    @classmethod
    def _workers_in_range(cls, value: int, info: ValidationInfo) -> int:
        context = info.context or {}
        limit = int(context.get("max_workers", DEFAULT_MAX_WORKERS))
        if not 1 <= value <= limit:
            raise _fail("workers_range", "must be between 1 and {limit}", limit=limit)
        return value

    @field_validator("vm_size")
    @classmethod
    def _priced_size(cls, value: str) -> str:
        if value not in PRICED_VM_SIZES:
            raise _fail(
                "vm_size_unknown",
                "must be one of {sizes}",
                sizes=", ".join(PRICED_VM_SIZES),
            )
        return value

    @field_validator("tiers")
    @classmethod
    def _distinct_tiers(cls, value: list[Tier]) -> list[Tier]:
        if len(set(value)) != len(value):
            raise _fail("tiers_duplicate", "each tier may appear only once")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EvaluationRequest:
        if (self.tasks is None) == (self.task_set is None):
            raise _fail("tasks_source", "give exactly one of tasks or task_set")
        if self.job_timeout_hours * 60 <= self.container_start_timeout_minutes:
            raise _fail(
                "job_timeout_short",
                "must be longer than container_start_timeout_minutes",
            )
        self._consistent_distribution()
        if self.trials > 1:
            if self.task_set is not None:
                count = sum(len(ids) for ids in load_task_set(self.task_set).values())
            elif isinstance(self.tasks, dict):
                count = sum(len(ids) for ids in self.tasks.values())
            else:
                count = len(self.tasks or [])
            if count * self.trials > MAX_TASKS:
                raise _fail(
                    "runs_too_many",
                    "{n} tasks x {t} trials is more than {max} runs per evaluation",
                    n=count,
                    t=self.trials,
                    max=MAX_TASKS,
                )
        return self

    def _consistent_distribution(self) -> None:
        """The rules between `distribution`, `target_hours`, `tail_copies` and `right_size`
        (issue 10; /work/wt/CONTRACT.md "Request & sizing")."""
        if self.target_hours is not None:
            # `workers` has a default, so only a `workers` the body names conflicts.
            if "workers" in self.model_fields_set:
                raise _fail(
                    "target_hours_with_workers",
                    "give target_hours or workers, not both (target_hours sizes the workers)",
                )
            longest = max(expected_minutes(t) for t in resolve_tasks(self))
            least = DEFAULT_PROVISIONING_MINUTES + longest
            if self.target_hours * 60 < least:
                raise _fail(
                    "target_hours_short",
                    "{h} h is shorter than a job's provisioning ({p} min) plus the longest "
                    "task's expected {m} min: at least {least} min",
                    # PydanticCustomError templates take no format specs: formatted here.
                    h=f"{self.target_hours:g}",
                    p=f"{DEFAULT_PROVISIONING_MINUTES:g}",
                    m=f"{longest:g}",
                    least=f"{least:g}",
                )
        if self.tail_copies and self.distribution == "static":
            raise _fail(
                "tail_copies_static",
                "only with distribution queue (a static shard's job runs its own tasks)",
            )
        if self.right_size and self.distribution == "queue":
            raise _fail(
                "right_size_queue",
                "only with distribution static (it sizes the VMs of planned shards)",
            )


# Whole-request errors are reported against the field a user has to fix.
_MODEL_ERROR_FIELD = {
    "tasks_source": "tasks",
    "job_timeout_short": "job_timeout_hours",
    "runs_too_many": "trials",
    "target_hours_with_workers": "target_hours",
    "target_hours_short": "target_hours",
    "tail_copies_static": "tail_copies",
    "right_size_queue": "right_size",
}
_FRIENDLY = {
    "extra_forbidden": "unknown field",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "list_type": "must be a list",
}


def _to_request_error(err: ValidationError) -> RequestError:
    parts: list[str] = []
    first_field = ""
    for e in err.errors(include_url=False):
        loc = e["loc"]
        kind = e["type"]
        if kind == "json_invalid":
            field, text = "body", "body: is not valid JSON"
        elif kind == "model_type" and not loc:
            field, text = "body", "body: must be a JSON object"
        elif not loc:
            field = _MODEL_ERROR_FIELD.get(kind, "body")
            text = f"{field}: {e['msg']}"
        else:
            field = str(loc[0])
            path = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
            msg = _FRIENDLY.get(kind, e["msg"])
            text = f"{path}: {msg[:1].lower()}{msg[1:]}"
        first_field = first_field or field
        parts.append(text)
    return RequestError(first_field or "body", "; ".join(parts))


def parse_evaluation_request(body: bytes, max_workers: int) -> EvaluationRequest:
    """Validate the raw body of `POST /api/evaluations`; `max_workers` comes from settings."""
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    try:
        return EvaluationRequest.model_validate_json(body, context={"max_workers": max_workers})
    except ValidationError as err:
        raise _to_request_error(err) from None


def resolve_tasks(req: EvaluationRequest) -> list[TaskRef]:
    """The request's tasks with their domains, in the order the request (or task set) lists them."""
    if req.task_set is not None:
        return task_refs(load_task_set(req.task_set))
    if isinstance(req.tasks, dict):
        return task_refs(req.tasks)
    return [TaskRef(task_id=t, domain=domain_of(t)) for t in req.tasks or []]


# --- retry (POST /api/evaluations/{id}/retry) ---------------------------------------------------

# The evaluation row's column holding the request's settings (all but the task selection), so a
# retry starts with the same ones.
SETTINGS_COLUMN = "request"
# What a retry decides itself: the tasks (the source's unfinished runs, each in its own trial),
# the trials those runs belong to, and the idempotency key (derived from the source).
RETRY_FIXED_FIELDS: dict[str, str] = {
    "tasks": "a retry runs the tasks of the evaluation that did not complete",
    "task_set": "a retry runs the tasks of the evaluation that did not complete",
    "trials": "a retry runs each unfinished run again in its own trial",
    "idempotency_key": "a retry's key is derived from the evaluation it retries (see force)",
}
_SELECTION = {"tasks", "task_set", "idempotency_key"}


def request_settings(req: EvaluationRequest) -> str:
    """The request's settings as JSON, for the evaluation row (no task list: it can be long)."""
    return req.model_dump_json(exclude=_SELECTION)


def settings_from_row(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The settings an evaluation was started with. Rows written before the settings column
    existed give the columns they have; the rest take the request's defaults."""
    stored = evaluation.get(SETTINGS_COLUMN)
    if stored:
        settings: dict[str, Any] = json.loads(stored)
        out = {k: v for k, v in settings.items() if k not in _SELECTION}
        # Settings stored before the task queue (issue 10) have no `distribution`: that
        # evaluation ran static shards, and so does its retry (its `right_size` is valid there).
        out.setdefault("distribution", evaluation.get("distribution") or "static")
        return out
    out = {}
    for column in (
        "policy",
        "distribution",
        "workers",
        "vm_size",
        "spot",
        "agent",
        "model",
        "max_steps",
    ):
        if evaluation.get(column) is not None:
            out[column] = evaluation[column]
    out.setdefault("distribution", "static")
    if evaluation.get("tiers"):
        out["tiers"] = str(evaluation["tiers"]).split(",")
    if evaluation.get("budget_usd") is not None:
        out["budget_usd"] = float(evaluation["budget_usd"])
    return out


def parse_retry_request(
    body: bytes, *, source: dict[str, Any], task_ids: list[str], max_workers: int
) -> tuple[EvaluationRequest, bool]:
    """The request of a retry: the source's settings (`settings_from_row`) with the body's
    overrides, validated as a start request is, over `task_ids` (the distinct tasks of the runs
    to retry). The body is empty or a JSON object of start fields, minus RETRY_FIXED_FIELDS,
    plus `force` (bool: start another retry even if one exists). Returns (request, force)."""
    if body.strip():
        try:
            overrides = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RequestError("body", "body: is not valid JSON") from None
        if not isinstance(overrides, dict):
            raise RequestError("body", "body: must be a JSON object")
    else:
        overrides = {}
    for field, why in RETRY_FIXED_FIELDS.items():
        if field in overrides:
            raise RequestError(field, f"{field}: cannot be set on a retry: {why}")
    force = overrides.pop("force", False)
    if not isinstance(force, bool):
        raise RequestError("force", "force: must be true or false")
    source = dict(source)
    # `workers` and `target_hours` are alternatives: the one the body names replaces the
    # source's; a source sized by `target_hours` stored the default `workers` beside it, which
    # the retry leaves out so the target sizes the retry's tasks again.
    target = (
        overrides["target_hours"] if "target_hours" in overrides else source.get("target_hours")
    )
    if "workers" in overrides:
        source.pop("target_hours", None)
    elif target is not None:
        source.pop("workers", None)
    # A body that changes `distribution` drops the source's settings of the other one
    # (`right_size` is static's, `tail_copies` the queue's) unless it names them itself.
    if overrides.get("distribution", source.get("distribution")) != source.get("distribution"):
        for tied in ("right_size", "tail_copies"):
            source.pop(tied, None)
    merged = {**source, **overrides, "tasks": task_ids}
    return parse_evaluation_request(json.dumps(merged).encode(), max_workers), force


def _settings_list(names: tuple[str, ...] | list[str]) -> str:
    return " and ".join(names)


def resolve_model_provider(req: EvaluationRequest, credentials: ModelCredentials) -> ModelProvider:
    """The provider whose credentials the evaluation's jobs get, or `RequestError` naming the
    field to fix (`model_provider`, or `model` when the request named no provider) and the
    app settings that are missing. Checked before anything is created or spent."""
    configured = credentials.providers
    if req.model_provider is not None:
        provider = req.model_provider
        if provider not in configured:
            missing = credentials.missing(provider)
            raise RequestError(
                "model_provider",
                f"model_provider: {PROVIDER_LABEL[provider]} ({provider.value}) has no "
                f"credentials configured for model {req.model!r}: app setting(s) "
                f"{_settings_list(missing)} not set",
            )
        return provider
    if len(configured) == 1:
        return configured[0]
    if not configured:
        options = "; or ".join(
            f"{_settings_list(PROVIDER_SETTINGS[p])} ({PROVIDER_LABEL[p]})" for p in ModelProvider
        )
        raise RequestError(
            "model",
            f"model: no credentials are configured for model {req.model!r}: set the app "
            f"settings {options}",
        )
    raise RequestError(
        "model_provider",
        "model_provider: credentials for both OpenAI and Azure OpenAI are configured: say "
        "which the model uses (" + " or ".join(repr(p.value) for p in ModelProvider) + ")",
    )
