"""The OpenAPI 3.1 description of the HTTP API, built from the pydantic models it validates with.

One table, `OPERATIONS`, lists every HTTP function of the app: its name, method and route (as
registered with `@bp.route`), who may call it, its request body model, query parameters and
responses. `openapi_document()` turns the table into the document served at
`GET /api/openapi.json`. tests/openapi checks the table against the functions the app really
registers (a route without a description, or a description without a route, fails) and runs
schemathesis against the devhost with the document.

Schemas: the request bodies are `domain.requests.EvaluationRequest` and
`domain.messages.JobMessage` themselves, the response bodies the models of
`domain.api_models`, all through pydantic's `models_json_schema` with
`ref_template="#/components/schemas/{model}"` (pydantic emits JSON Schema 2020-12, the schema
dialect of OpenAPI 3.1, so no translation is needed). Rules that the request model enforces in
field validators, which pydantic cannot see, are added to its schema from the same constants
(`_evaluation_request_rules`).

Security, as the app registers it (Azure Functions HTTP trigger auth levels): every evaluation
route is `AuthLevel.FUNCTION`, i.e. a function key in the `x-functions-key` header or the `code`
query parameter ("Authorization level", Azure Functions HTTP trigger reference); the heartbeat
route is anonymous to the host and checks a per-attempt bearer token itself; this document is
served anonymously (it holds no secret, only the shape of the API, and a client reads it before
it has a key).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from domain import api_models as m
from domain.cost import PRICED_VM_SIZES
from domain.messages import TASK_ID_PATTERN, JobMessage
from domain.requests import (
    DEFAULT_MAX_WORKERS,
    DOMAIN_LABEL_PATTERN,
    MAX_TASKS,
    EvaluationRequest,
)
from domain.results import RESULT_FORMATS
from domain.tasksets import TASK_SETS

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
ROUTE_PREFIX = "api"  # host.json sets no extensions.http.routePrefix: the Functions default
REF_TEMPLATE = "#/components/schemas/{model}"

Auth = Literal["function_key", "bearer", "anonymous"]

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    # Azure Functions: a key "can be included in a query string variable named `code`, or it
    # can be included in an `x-functions-key` HTTP header" (HTTP trigger reference, API keys).
    "functionKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "x-functions-key",
        "description": "A function key (or the host key) of the function app.",
    },
    "functionKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "code",
        "description": "The same function key, as the `code` query parameter.",
    },
    "heartbeatToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The per-attempt token the control plane gave the job "
        "(WAA_HEARTBEAT_TOKEN): an HMAC of the job name.",
    },
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "function_key": [{"functionKeyHeader": []}, {"functionKeyQuery": []}],
    "bearer": [{"heartbeatToken": []}],
    "anonymous": [],
}


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str
    where: Literal["query", "path"] = "query"


@dataclass(frozen=True)
class Resp:
    description: str
    json: type[BaseModel] | None = m.ErrorBody
    # Other media types of the same response, each a plain-text body.
    text: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True)
class Operation:
    function: str  # the app's function name (the Python function under @bp.route)
    method: Literal["GET", "POST"]
    route: str  # the route template as registered, without the route prefix
    summary: str
    auth: Auth
    responses: dict[int, Resp]
    body: type[BaseModel] | None = None
    body_description: str = ""
    body_required: bool = True
    params: tuple[Param, ...] = ()
    tag: str = "evaluations"

    @property
    def path(self) -> str:
        return f"/{ROUTE_PREFIX}/{self.route}"


EVALUATION_ID = Param(
    "evaluation_id",
    {"type": "string"},
    "The evaluation's id (as returned by the start request).",
    where="path",
)
_NOT_FOUND = Resp("No evaluation with this id.")

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        function="start_evaluation",
        method="POST",
        route="evaluations",
        summary="Start an evaluation",
        auth="function_key",
        body=EvaluationRequest,
        body_description="Exactly one of `tasks` (a list of WAA task ids, or WAA's "
        "test_all.json shape: domain -> task ids) or `task_set`. "
        "`job_timeout_hours` must be longer than `container_start_timeout_minutes`. "
        "`target_hours` replaces `workers` (giving both is refused) and must cover a job's "
        "provisioning plus the longest task; `tail_copies` only with `distribution: queue`, "
        "`right_size` only with `distribution: static`.",
        responses={
            202: Resp(
                "Started: the evaluation and its orchestration were created.",
                m.EvaluationStarted,
                headers={"Location": "The status URL."},
            ),
            200: Resp(
                "The idempotency key names an evaluation already started: nothing new.",
                m.EvaluationExisting,
            ),
            400: Resp("The body is invalid; `field` names the field to fix."),
        },
    ),
    Operation(
        function="list_evaluations",
        method="GET",
        route="evaluations",
        summary="List recent evaluations",
        auth="function_key",
        params=(
            Param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                "How many evaluations, newest first.",
            ),
        ),
        responses={
            200: Resp("The most recent evaluations.", m.EvaluationList),
            400: Resp("`limit` is not a whole number from 1 to 100."),
        },
    ),
    Operation(
        function="get_evaluation",
        method="GET",
        route="evaluations/{evaluation_id}",
        summary="An evaluation's status",
        auth="function_key",
        params=(
            EVALUATION_ID,
            Param(
                "tasks",
                {"type": "string", "default": "true"},
                "`false` (any case) leaves out the per-task list; any other value keeps it.",
            ),
        ),
        responses={
            200: Resp(
                "Progress, cost, ETA, every shard and (unless ?tasks=false) every task.",
                m.EvaluationStatus,
            ),
            404: _NOT_FOUND,
        },
    ),
    Operation(
        function="get_results",
        method="GET",
        route="evaluations/{evaluation_id}/results",
        summary="The agent's score per domain",
        auth="function_key",
        params=(
            EVALUATION_ID,
            Param(
                "format",
                {"type": "string", "enum": list(RESULT_FORMATS), "default": "json"},
                "The table's format (case-insensitive).",
            ),
        ),
        responses={
            200: Resp(
                "The results table: JSON, or CSV / markdown with ?format=csv|markdown.",
                m.EvaluationResults,
                text=("text/csv", "text/markdown"),
            ),
            400: Resp("`format` is not one of json, csv, markdown."),
            404: _NOT_FOUND,
        },
    ),
    Operation(
        function="cancel_evaluation",
        method="POST",
        route="evaluations/{evaluation_id}/cancel",
        summary="Cancel an evaluation",
        auth="function_key",
        params=(EVALUATION_ID,),
        responses={
            202: Resp(
                "Cancel requested: every job is cancelled; tasks not run yet end as not run.",
                m.CancelAccepted,
            ),
            404: _NOT_FOUND,
            409: Resp("The evaluation has already ended."),
        },
    ),
    Operation(
        function="retry_evaluation",
        method="POST",
        route="evaluations/{evaluation_id}/retry",
        summary="Retry the tasks of an evaluation that did not complete",
        auth="function_key",
        params=(EVALUATION_ID,),
        body=m.RetryRequest,
        body_required=False,
        body_description="Optional overrides of the original evaluation's options: the fields "
        "of the start request (each optional) but the task selection, plus `force`.",
        responses={
            202: Resp(
                "Started: a new evaluation of the runs that did not complete (its status "
                "shows `retry_of`; the original's shows `retried_by`).",
                m.EvaluationStarted,
                headers={"Location": "The new evaluation's status URL."},
            ),
            200: Resp(
                "A retry of this evaluation exists already (and `force` is not set): its id.",
                m.EvaluationExisting,
            ),
            400: Resp("An override is invalid; `field` names it."),
            404: _NOT_FOUND,
            409: Resp("The evaluation is still running, or has nothing left to retry."),
        },
    ),
    Operation(
        function="heartbeat",
        method="POST",
        route="heartbeats",
        summary="A message from a running job (heartbeat, task result, failure, finished)",
        auth="bearer",
        tag="jobs",
        body=JobMessage,
        body_description="Sent by the shard runner inside the job; any message counts as a "
        "heartbeat.",
        responses={
            202: Resp("Recorded.", m.HeartbeatAccepted),
            200: Resp(
                "kind `artifact_urls`: the upload URLs of a task's result files.", m.ArtifactUrls
            ),
            400: Resp("The body is invalid; `field` names the field."),
            401: Resp("No bearer token."),
            403: Resp("The token is not this job's, or the job has ended."),
            404: Resp("No such job."),
            409: Resp("kind `artifact_urls`: artifacts are not configured; skip uploads."),
            503: Resp("kind `artifact_urls`: artifact storage is unavailable; try again later."),
        },
    ),
    Operation(
        function="dashboard",
        method="GET",
        route="dashboard",
        summary="The live dashboard (one self-contained HTML page)",
        auth="function_key",
        tag="meta",
        responses={200: Resp("The page.", None, text=("text/html",))},
    ),
    Operation(
        function="openapi_json",
        method="GET",
        route="openapi.json",
        summary="This document",
        auth="anonymous",
        tag="meta",
        responses={200: Resp("The OpenAPI description of this API.", m.OpenApiDocument)},
    ),
)


def _evaluation_request_rules(schema: dict[str, Any], max_workers: int) -> None:
    """What `EvaluationRequest`'s field validators check, in JSON Schema, from the same
    constants (pydantic's schema shows the annotations only)."""
    props = schema["properties"]
    if "workers" in props:
        props["workers"].update(minimum=1, maximum=max_workers)
    if "vm_size" in props:
        props["vm_size"]["enum"] = list(PRICED_VM_SIZES)
    if "tiers" in props:
        props["tiers"]["uniqueItems"] = True
    if "tasks" not in props:  # a retry's body: the tasks are the original's
        return
    task_list = {
        "type": "array",
        "items": {"type": "string", "pattern": TASK_ID_PATTERN},
        "minItems": 1,
        "maxItems": MAX_TASKS,
        "uniqueItems": True,
    }
    tasks = props["tasks"]
    tasks["anyOf"] = [
        task_list,
        {
            "type": "object",
            "propertyNames": {"pattern": DOMAIN_LABEL_PATTERN},
            "additionalProperties": task_list,
            "minProperties": 1,
        },
        {"type": "null"},
    ]
    tasks["description"] = "WAA task ids (unique across domains), or domain -> task ids."
    task_set = props["task_set"]
    task_set["anyOf"] = [{"type": "string", "enum": sorted(TASK_SETS)}, {"type": "null"}]
    task_set["description"] = "A task set shipped with the app."


def component_schemas(max_workers: int = DEFAULT_MAX_WORKERS) -> dict[str, Any]:
    """Every schema the operations use, keyed by model name, references as
    `#/components/schemas/{model}`."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for op in OPERATIONS:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted.extend((r.json, "serialization") for r in op.responses.values() if r.json)
    _, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = copy.deepcopy(top.get("$defs", {}))
    for model in (EvaluationRequest, m.RetryRequest):
        _evaluation_request_rules(schemas[model.__name__], max_workers)
    # A retry's omitted field takes the original evaluation's value, not the start default.
    for name, prop in schemas[m.RetryRequest.__name__]["properties"].items():
        if name != "force":
            prop.pop("default", None)
    return schemas


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.function,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _SECURITY[op.auth],
    }
    if op.params:
        out["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.params
        ]
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "description": op.body_description,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    responses: dict[str, Any] = {}
    for status, resp in sorted(op.responses.items()):
        content: dict[str, Any] = {}
        if resp.json is not None:
            content["application/json"] = {"schema": _ref(resp.json)}
        for media in resp.text:
            content[media] = {"schema": {"type": "string"}}
        entry: dict[str, Any] = {"description": resp.description, "content": content}
        if resp.headers:
            entry["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in resp.headers.items()
            }
        responses[str(status)] = entry
    out["responses"] = responses
    return out


def openapi_document(
    *, server_url: str | None = None, max_workers: int = DEFAULT_MAX_WORKERS
) -> dict[str, Any]:
    """The whole document. `server_url`: the app's origin (scheme://host), when known;
    `max_workers`: the app's MAX_WORKERS setting (the start request's `workers` maximum)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "WAA evaluation control plane",
            "version": API_VERSION,
            "description": "Start, follow, cancel and retry Windows Agent Arena evaluations; "
            "the jobs report through /api/heartbeats. Errors are "
            '`{"error": "<field>: <what is wrong>", "field": "<field>"}`.',
        },
        "paths": paths,
        "components": {
            "schemas": component_schemas(max_workers),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url.rstrip("/")}]
    return doc
