"""A fake Azure Batch account endpoint for the real `azure-batch` 15.x BatchClient.

Plain http on 127.0.0.1 with shared-key auth: every request's `SharedKey` signature is checked
against the account key with Batch's documented string-to-sign, so a wrong key or a tampered
request is refused like the service does (403 AuthenticationFailed). It models pools (with
their nodes), jobs and tasks and their states, container failure codes, unusable nodes, pool
resize errors, and can be told to fail the next requests (429 with Retry-After, 5xx, quota,
authorization).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import isodate

from tests.fakes._faults import FaultInjectingServer
from tests.fakes._http import Reply, Request

SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"code": code, "message": {"lang": "en-US", "value": message}}
    return Reply(status, body, headers or {})


FAULTS: dict[str, Callable[[], Reply]] = {
    "throttle": lambda: _error(
        429, "TooManyRequests", "The server is busy, retry later.", {"Retry-After": "1"}
    ),
    "server_error": lambda: _error(503, "ServerBusy", "The server is currently unavailable."),
    "quota": lambda: _error(
        409,
        "ActiveJobAndScheduleQuotaReached",
        "The specified account has reached the maximum number of active jobs and job schedules.",
    ),
    "auth": lambda: _error(
        403,
        "AuthorizationFailure",
        "This request is not authorized to perform this operation.",
    ),
    "not_found": lambda: _error(404, "NotFound", "The specified resource does not exist."),
}

# ContainerHostDataPath values (azure-batch 15 models).
DATA_PATHS = {"Shared", "Startup", "VfsMounts", "Task", "JobPrep", "Applications"}
# Node states in which a node can run tasks.
USABLE_NODE_STATES = {"idle", "running", "waitingforstarttask"}


def string_to_sign(request: Request, account: str) -> str:
    """Batch's shared-key string-to-sign, computed from what arrived on the wire."""
    parts = [request.method]
    for name in SIGNED_HEADERS:
        value = request.headers.get(name, "")
        if name == "content-length" and value == "" and request.method not in ("GET", "HEAD"):
            value = "0"
        parts.append(value)
    text = "\n".join(parts) + "\n"
    for name in sorted(k for k in request.headers if k.startswith("ocp-")):
        if request.headers[name]:
            text += f"{name}:{request.headers[name]}\n"
    text += f"/{account}{request.path}"
    for name in sorted(request.query):
        if request.query[name]:
            text += f"\n{name}:{request.query[name]}"
    return text


class FakeBatch(FaultInjectingServer):
    def __init__(self, *, account_name: str = "waabatch", account_key: str | None = None) -> None:
        super().__init__(tls=False, canned=FAULTS, error=_error)
        self.account_name = account_name
        self.account_key = (
            account_key or base64.b64encode(hashlib.sha256(b"fake").digest()).decode()
        )
        self.pools: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, list[dict[str, Any]]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.tasks: dict[tuple[str, str], dict[str, Any]] = {}
        self.task_creates: list[str] = []
        self.job_terminates: list[str] = []
        self.auth_failures = 0

    # --- controls for tests ----------------------------------------------------------------
    def task(self, task_id: str) -> dict[str, Any]:
        matches = [t for (_, tid), t in self.tasks.items() if tid == task_id]
        assert len(matches) == 1, f"{len(matches)} tasks named {task_id}"
        return matches[0]

    def start_task(self, task_id: str) -> None:
        with self.lock:
            task = self.task(task_id)
            self._transition(task, "running")
            task["executionInfo"] = {"startTime": _now(), "retryCount": 0, "requeueCount": 0}

    def complete_task(self, task_id: str, exit_code: int) -> None:
        with self.lock:
            task = self.task(task_id)
            info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
            info.update(endTime=_now(), exitCode=exit_code)
            info["result"] = "success" if exit_code == 0 else "failure"
            if exit_code != 0:
                info["failureInfo"] = {
                    "category": "usererror",
                    "code": "FailureExitCode",
                    "message": "The task exited with an exit code representing a failure",
                }
            self._transition(task, "completed")

    def fail_task(self, task_id: str, code: str, message: str) -> None:
        """The task ends before its process ran, e.g. ContainerInvalidImage."""
        with self.lock:
            task = self.task(task_id)
            task["executionInfo"] = {
                "retryCount": 0,
                "requeueCount": 0,
                "result": "failure",
                "failureInfo": {"category": "usererror", "code": code, "message": message},
            }
            self._transition(task, "completed")

    def declare_pool(self, body: dict[str, Any]) -> None:
        """A pool as ARM (infra/app/batch.bicep) creates it, seen through the data plane: the
        data plane cannot create a pool with an identity, but reports the one ARM gave it."""
        with self.lock:
            reply = self._create_pool({k: v for k, v in body.items() if k != "identity"})
            assert reply.status == 201, reply.body
            if "identity" in body:
                self.pools[body["id"]]["identity"] = body["identity"]

    def set_node_states(self, pool_id: str, state: str, *, error: str = "") -> None:
        with self.lock:
            for node in self.nodes[pool_id]:
                node["state"] = state
                if error:
                    node["errors"] = [{"code": "NodeError", "message": error}]

    def set_resize_error(self, pool_id: str, code: str, message: str) -> None:
        """Allocation failed (e.g. core quota): no nodes, the pool reports a resize error."""
        with self.lock:
            pool = self.pools[pool_id]
            pool["resizeErrors"] = [{"code": code, "message": message}]
            pool["currentDedicatedNodes"] = pool["currentLowPriorityNodes"] = 0
            self.nodes[pool_id] = []

    # --- service behaviour ------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        if not self._signature_ok(request):
            self.auth_failures += 1
            return _error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of "
                "Authorization header is formed correctly including the signature.",
            )
        fault = self.take_fault(request)
        if fault is not None:
            return fault
        parts = tuple(p for p in request.path.split("/") if p)
        body = request.json() if request.body else None
        match (request.method, *parts):
            case ("POST", "pools"):
                return self._create_pool(body)
            case ("GET", "pools", pool_id):
                return self._get(self.pools.get(pool_id), "PoolNotFound", "pool")
            case ("POST", "pools", pool_id, "resize"):
                return self._resize(pool_id, body)
            case ("GET", "pools", pool_id, "nodes"):
                if pool_id not in self.pools:
                    return _error(404, "PoolNotFound", "The specified pool does not exist.")
                return Reply(200, {"value": self.nodes[pool_id]})
            case ("POST", "jobs"):
                return self._create_job(body)
            case ("GET", "jobs"):
                return self._list_jobs(request.query.get("$filter", ""))
            case ("GET", "jobs", job_id):
                return self._get(self.jobs.get(job_id), "JobNotFound", "job")
            case ("POST", "jobs", job_id, "terminate"):
                return self._terminate_job(job_id, body)
            case ("POST", "jobs", job_id, "tasks"):
                return self._create_task(job_id, body)
            case ("GET", "jobs", job_id, "tasks", task_id):
                return self._get(self.tasks.get((job_id, task_id)), "TaskNotFound", "task")
            case ("POST", "jobs", job_id, "tasks", task_id, "terminate"):
                return self._terminate(job_id, task_id)
        return _error(404, "InvalidUri", f"no route {request.method} {request.path}")

    def _signature_ok(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        prefix = f"SharedKey {self.account_name}:"
        if not auth.startswith(prefix) or not request.headers.get("ocp-date"):
            return False
        key = base64.b64decode(self.account_key)
        digest = hmac.new(
            key, string_to_sign(request, self.account_name).encode(), hashlib.sha256
        ).digest()
        return hmac.compare_digest(base64.b64encode(digest).decode(), auth[len(prefix) :])

    @staticmethod
    def _get(resource: dict[str, Any] | None, code: str, what: str) -> Reply:
        if resource is None:
            return _error(404, code, f"The specified {what} does not exist.")
        return Reply(200, resource, {"ETag": resource["eTag"]})

    def _created(self, url: str) -> Reply:
        return Reply(201, None, {"ETag": '"0x1"', "Location": url, "DataServiceId": url})

    @staticmethod
    def _transition(resource: dict[str, Any], state: str) -> None:
        resource["previousState"] = resource["state"]
        resource["previousStateTransitionTime"] = resource["stateTransitionTime"]
        resource["state"] = state
        resource["stateTransitionTime"] = _now()

    def _base(self, kind: str, rid: str) -> dict[str, Any]:
        now = _now()
        return {
            "id": rid,
            "url": f"{self.url}/{kind}/{rid}",
            "eTag": '"0x1"',
            "lastModified": now,
            "creationTime": now,
            "stateTransitionTime": now,
        }

    def _create_pool(self, body: dict[str, Any]) -> Reply:
        pool_id = body.get("id", "")
        if pool_id in self.pools:
            return _error(409, "PoolExists", "The specified pool already exists.")
        vm = body.get("virtualMachineConfiguration") or {}
        containers = vm.get("containerConfiguration") or {}
        problems = []
        if not body.get("vmSize"):
            problems.append("vmSize is required")
        if not (vm.get("imageReference") and vm.get("nodeAgentSKUId")):
            problems.append("virtualMachineConfiguration needs imageReference and nodeAgentSKUId")
        if containers and containers.get("type") not in ("dockerCompatible", "criCompatible"):
            problems.append("containerConfiguration.type must be dockerCompatible or criCompatible")
        if problems:
            return _error(400, "InvalidPropertyValue", "; ".join(problems))
        pool = {
            **self._base("pools", pool_id),
            **body,
            "state": "active",
            "allocationState": "steady",
            "targetDedicatedNodes": body.get("targetDedicatedNodes", 0),
            "targetLowPriorityNodes": body.get("targetLowPriorityNodes", 0),
        }
        self.pools[pool_id] = pool
        self.nodes[pool_id] = []
        self._allocate(pool_id)
        return self._created(pool["url"])

    def _allocate(self, pool_id: str) -> None:
        """Allocation in the fake is instant: nodes match the targets."""
        pool = self.pools[pool_id]
        nodes = self.nodes[pool_id]
        wanted = [True] * pool["targetDedicatedNodes"] + [False] * pool["targetLowPriorityNodes"]
        del nodes[len(wanted) :]
        for index in range(len(nodes), len(wanted)):
            nodes.append(
                {
                    "id": f"tvm-{pool_id}-{index}",
                    "url": f"{pool['url']}/nodes/tvm-{pool_id}-{index}",
                    "state": "idle",
                    "vmSize": pool["vmSize"],
                    "isDedicated": wanted[index],
                    "stateTransitionTime": _now(),
                }
            )
        pool["currentDedicatedNodes"] = pool["targetDedicatedNodes"]
        pool["currentLowPriorityNodes"] = pool["targetLowPriorityNodes"]
        pool["resizeErrors"] = []

    def _resize(self, pool_id: str, body: dict[str, Any]) -> Reply:
        pool = self.pools.get(pool_id)
        if pool is None:
            return _error(404, "PoolNotFound", "The specified pool does not exist.")
        if pool["allocationState"] != "steady":
            return _error(409, "PoolNotSteady", "The pool is not in a steady state.")
        for name in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            if name in body:
                pool[name] = body[name]
        self._allocate(pool_id)
        return Reply(202, None, {"DataServiceId": pool["url"]})

    def _create_job(self, body: dict[str, Any]) -> Reply:
        job_id = body.get("id", "")
        if job_id in self.jobs:
            return _error(409, "JobExists", "The specified job already exists.")
        if not (body.get("poolInfo") or {}).get("poolId"):
            return _error(400, "InvalidPropertyValue", "poolInfo.poolId is required")
        self.jobs[job_id] = {**self._base("jobs", job_id), **body, "state": "active"}
        return self._created(self.jobs[job_id]["url"])

    def _list_jobs(self, odata_filter: str) -> Reply:
        # The one filter the app sends; anything else would be a new need of the fake.
        if odata_filter not in ("", "state eq 'active'"):
            return _error(400, "InvalidQueryParameterValue", f"unmodelled $filter {odata_filter}")
        jobs = [j for j in self.jobs.values() if not odata_filter or j["state"] == "active"]
        return Reply(200, {"value": jobs})

    def _terminate_job(self, job_id: str, body: dict[str, Any] | None) -> Reply:
        """Terminate Job (POST /jobs/{jobId}/terminate): 202, the job goes terminating ->
        completed (at once here); its running tasks end, as for a task terminate. A job that is
        already completed answers 409 JobCompleted, as the service does."""
        job = self.jobs.get(job_id)
        if job is None:
            return _error(404, "JobNotFound", "The specified job does not exist.")
        self.job_terminates.append(job_id)
        if job["state"] == "completed":
            return _error(409, "JobCompleted", "The specified job is already in a completed state.")
        for (jid, task_id), task in self.tasks.items():
            if jid == job_id and task["state"] != "completed":
                self._terminate(job_id, task_id)
        job["executionInfo"] = {
            "startTime": job["creationTime"],
            "endTime": _now(),
            "terminateReason": (body or {}).get("terminateReason", "UserTerminate"),
        }
        self._transition(job, "completed")
        return Reply(202, None, {"DataServiceId": job["url"]})

    def _create_task(self, job_id: str, body: dict[str, Any]) -> Reply:
        job = self.jobs.get(job_id)
        if job is None:
            return _error(404, "JobNotFound", "The specified job does not exist.")
        if job["state"] != "active":
            return _error(409, "JobCompleted", "The specified job is already in a completed state.")
        task_id = body.get("id", "")
        if (job_id, task_id) in self.tasks:
            return _error(409, "TaskExists", "The specified task already exists.")
        problems = []
        pool = self.pools.get(job["poolInfo"]["poolId"]) or {}
        container_pool = bool(
            (pool.get("virtualMachineConfiguration") or {}).get("containerConfiguration")
        )
        settings = body.get("containerSettings")
        if settings is not None and not settings.get("imageName"):
            problems.append("containerSettings.imageName is required")
        if settings is not None and not container_pool:
            return _error(
                409,
                "ContainerPoolNotSupported",
                "The pool does not have a container configuration.",
            )
        for entry in (settings or {}).get("containerHostBatchBindMounts") or []:
            if entry.get("source") not in DATA_PATHS:
                problems.append(f"containerHostBatchBindMounts source {entry.get('source')!r}")
        constraints = body.get("constraints") or {}
        if "maxWallClockTime" in constraints:
            try:
                isodate.parse_duration(constraints["maxWallClockTime"])
            except isodate.ISO8601Error:
                problems.append("constraints.maxWallClockTime must be an ISO 8601 duration")
        for item in body.get("environmentSettings") or []:
            if not isinstance(item.get("name"), str) or not isinstance(item.get("value"), str):
                problems.append("environmentSettings items need string name and value")
        if problems:
            return _error(400, "InvalidPropertyValue", "; ".join(problems))
        task = {**self._base(f"jobs/{job_id}/tasks", task_id), **body, "state": "active"}
        self.tasks[(job_id, task_id)] = task
        self.task_creates.append(task_id)
        return self._created(task["url"])

    def _terminate(self, job_id: str, task_id: str) -> Reply:
        task = self.tasks.get((job_id, task_id))
        if task is None:
            return _error(404, "TaskNotFound", "The specified task does not exist.")
        if task["state"] != "completed":
            info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
            info.update(
                endTime=_now(),
                result="failure",
                failureInfo={
                    "category": "usererror",
                    "code": "TaskEnded",
                    "message": "Task Was Ended by User Request",
                },
            )
            self._transition(task, "completed")
        return Reply(204)
