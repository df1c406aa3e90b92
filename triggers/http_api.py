"""The evaluation API: start, status, list, cancel.

POST /api/evaluations                 start (202 + status URL; 400 naming the field)
GET  /api/evaluations                 recent evaluations (?limit=1..100)
GET  /api/evaluations/{id}            progress, cost, ETA, every shard and task (404 if unknown)
GET  /api/evaluations/{id}/results    the agent's score per domain (?format=json|csv|markdown)
POST /api/evaluations/{id}/cancel     cancel every job; remaining tasks not run (cancelled)
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func

from adapters import runtime
from adapters.logs import ids
from adapters.state import views
from domain import names
from domain.contracts import (
    CancelRequested,
    EvaluationInput,
    EvaluationState,
    JobSnapshot,
    PlannedShard,
)
from domain.naming import new_evaluation_id, shard_instance_id
from domain.outcomes import CANCELLED_BY_USER, TaskOutcome
from domain.planning import plan_shards
from domain.policy import PolicyConfig
from domain.requests import (
    EvaluationRequest,
    RequestError,
    parse_evaluation_request,
    resolve_model_provider,
    resolve_tasks,
)
from domain.results import (
    RESULT_FORMATS,
    results_table,
    table_csv,
    table_json,
    table_markdown,
)
from triggers.offload import off_loop
from triggers.signals import is_live

bp = df.Blueprint()
log = logging.getLogger(__name__)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str),
        status_code=status,
        mimetype="application/json",
        headers=headers,
    )


def error(status: int, message: str, field: str | None = None) -> func.HttpResponse:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return json_response(body, status)


def _base_url(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}"


def _links(req: func.HttpRequest, evaluation_id: str) -> dict[str, str]:
    base = f"{_base_url(req)}/api/evaluations/{evaluation_id}"
    return {"status_url": base, "cancel_url": f"{base}/cancel"}


def _orchestration_input(
    evaluation_id: str, req: EvaluationRequest, plan: list[Any], workers: int
) -> dict[str, Any]:
    policy = PolicyConfig.for_request(req)
    return EvaluationInput(
        evaluation_id=evaluation_id,
        shards=[PlannedShard(index=s.index, task_ids=s.task_ids, vm_size=s.vm_size) for s in plan],
        tiers=list(req.tiers),
        policy=policy,
        # Snapshotted here so that replays never read settings.
        job=JobSnapshot.for_request(
            req, policy, image=runtime.services().settings.waa_image, workers=workers
        ),
    ).to_json()


@bp.route(route="evaluations", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def start_evaluation(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    svc = await off_loop(runtime.services)
    try:
        request = parse_evaluation_request(req.get_body(), svc.settings.max_workers)
        # A model without credentials could only fail every task after paying for the compute:
        # refused here, before an idempotency key, a state row or an orchestration exists.
        provider = resolve_model_provider(request, svc.settings.model_credentials())
    except RequestError as err:
        return error(400, str(err), err.field)
    request = request.model_copy(update={"model_provider": provider})

    now = runtime.now()
    store = svc.store
    if request.idempotency_key:
        evaluation_id = new_evaluation_id(b"idempotency:" + request.idempotency_key.encode())
        evaluation_id = await off_loop(
            store.claim_idempotency_key, request.idempotency_key, evaluation_id, now
        )
    else:
        evaluation_id = new_evaluation_id(uuid.uuid4().bytes)
    fields = ids(evaluation_id=evaluation_id)

    existing = await client.get_status(evaluation_id)
    if existing is not None and existing.runtime_status is not None:
        log.info("idempotency key matched an existing evaluation", **fields)
        return json_response(
            {"evaluation_id": evaluation_id, "created": False, **_links(req, evaluation_id)}, 200
        )

    tasks = resolve_tasks(request)
    workers = min(request.workers, len(tasks))
    plan = plan_shards(tasks, workers, vm_size=request.vm_size, right_size=request.right_size)
    shard_of = {t: s.index for s in plan for t in s.task_ids}
    evaluation_row: dict[str, Any] = {
        "evaluation_id": evaluation_id,
        "created_at": now.isoformat(),
        "state": EvaluationState.RUNNING.value,
        "policy": request.policy,
        "workers": workers,
        "vm_size": request.vm_size,
        "spot": request.spot,
        "tiers": ",".join(t.value for t in request.tiers),
        "task_count": len(tasks),
        "shard_count": len(plan),
        "spent_usd": 0.0,
        "reserved_usd": 0.0,
        "agent": request.agent,
        "model": request.model,
        "max_steps": request.max_steps,
    }
    if request.budget_usd is not None:
        evaluation_row["budget_usd"] = request.budget_usd
    await off_loop(
        store.create_evaluation,
        evaluation_row,
        [
            {
                "shard_index": s.index,
                "task_count": len(s.task_ids),
                "expected_minutes": s.expected_minutes,
                "vm_size": s.vm_size,
                "status": "waiting",
                "attempt": 0,
            }
            for s in plan
        ],
        [
            {
                "task_id": t.task_id,
                "domain": t.domain,
                "shard_index": shard_of[t.task_id],
                "outcome": TaskOutcome.PENDING.value,
            }
            for t in tasks
        ],
    )
    await client.start_new(
        names.EVALUATION_ORCHESTRATOR,
        evaluation_id,
        _orchestration_input(evaluation_id, request, plan, workers),
    )
    log.info(
        "evaluation started: %d tasks on %d shards (%s policy)",
        len(tasks),
        len(plan),
        request.policy,
        **fields,
    )
    links = _links(req, evaluation_id)
    return json_response(
        {
            "evaluation_id": evaluation_id,
            "created": True,
            "tasks": len(tasks),
            "shards": len(plan),
            **links,
        },
        202,
        headers={"Location": links["status_url"]},
    )


@bp.route(route="evaluations", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_evaluations(req: func.HttpRequest) -> func.HttpResponse:
    raw = req.params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        return error(400, "limit: must be a whole number from 1 to 100", "limit")
    store = runtime.services().store
    rows = store.list_evaluations(int(raw))
    return json_response(
        {
            "evaluations": [
                {
                    "evaluation_id": r["evaluation_id"],
                    "state": r.get("state"),
                    "created_at": r["created_at"],
                    "tasks": r["task_count"],
                    "policy": r.get("policy"),
                    **_links(req, r["evaluation_id"]),
                }
                for r in rows
            ]
        }
    )


@bp.route(route="evaluations/{evaluation_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def get_evaluation(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    evaluation_id = req.route_params["evaluation_id"]
    store = (await off_loop(runtime.services)).store
    rows = await off_loop(store.get_evaluation_rows, evaluation_id)
    if rows is None:
        return error(404, f"evaluation_id: no evaluation {evaluation_id!r}", "evaluation_id")
    include_tasks = req.params.get("tasks", "true").lower() != "false"
    view = views.evaluation_view(rows, runtime.now(), include_tasks=include_tasks)
    status = await client.get_status(evaluation_id)
    view["runtime_status"] = (
        status.runtime_status.value if status and status.runtime_status else None
    )
    return json_response(view)


@bp.route(
    route="evaluations/{evaluation_id}/results", methods=["GET"], auth_level=func.AuthLevel.FUNCTION
)
async def get_results(req: func.HttpRequest) -> func.HttpResponse:
    """The results table (domain/results.py): per domain and overall, from the task rows, so it
    is current while the evaluation runs and final once it ends."""
    fmt = req.params.get("format", "json").lower()
    if fmt not in RESULT_FORMATS:
        return error(400, f"format: must be one of {', '.join(RESULT_FORMATS)}", "format")
    evaluation_id = req.route_params["evaluation_id"]
    store = (await off_loop(runtime.services)).store
    rows = await off_loop(store.get_evaluation_rows, evaluation_id)
    if rows is None:
        return error(404, f"evaluation_id: no evaluation {evaluation_id!r}", "evaluation_id")
    table = results_table(rows["tasks"])
    if fmt == "csv":
        return func.HttpResponse(table_csv(table), mimetype="text/csv")
    if fmt == "markdown":
        return func.HttpResponse(table_markdown(table), mimetype="text/markdown")
    state = rows["evaluation"].get("state", EvaluationState.RUNNING.value)
    return json_response({"evaluation_id": evaluation_id, "state": state, **table_json(table)})


@bp.route(
    route="evaluations/{evaluation_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION
)
@bp.durable_client_input(client_name="client")
async def cancel_evaluation(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    evaluation_id = req.route_params["evaluation_id"]
    store = (await off_loop(runtime.services)).store
    evaluation = await off_loop(store.get_evaluation, evaluation_id)
    if evaluation is None:
        return error(404, f"evaluation_id: no evaluation {evaluation_id!r}", "evaluation_id")
    if evaluation.get("state", EvaluationState.RUNNING) != EvaluationState.RUNNING:
        return error(409, f"evaluation {evaluation_id} already ended ({evaluation.get('state')})")
    await off_loop(store.update_evaluation, evaluation_id, cancel_requested=True)
    # Every shard waits on the cancel event in each of its waits; one that is between waits
    # sees the flag in its next activity.
    for index in range(int(evaluation["shard_count"])):
        instance = shard_instance_id(evaluation_id, index)
        if await is_live(client, instance):
            try:
                await client.raise_event(
                    instance,
                    names.CANCEL_EVENT,
                    CancelRequested(reason=CANCELLED_BY_USER).to_json(),
                )
            except Exception as err:  # finished meanwhile: nothing to cancel
                log.info(
                    "shard already finished: %s",
                    err,
                    **ids(evaluation_id=evaluation_id, shard=index),
                )
    log.info("evaluation cancel requested", **ids(evaluation_id=evaluation_id))
    return json_response(
        {"evaluation_id": evaluation_id, "cancel_requested": True, **_links(req, evaluation_id)},
        202,
    )
