"""A fake Azure ML management front end (MFE) for the real `azure-ai-ml` client.

`AZUREML_DEV_URL_MFE=<fake.url>` routes MLClient's workspace, compute, environment and job calls
here (the paths below are the ones azure-ai-ml 1.35.2 was seen to send). The fake keeps compute
and job state like the service, validates request bodies the way the service would reject them,
and can be told to fail the next requests (throttling with Retry-After, 5xx, quota, not found,
authorization, invalid image).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import isodate

from tests.fakes._faults import FaultInjectingServer
from tests.fakes._http import Reply, Request

WORKSPACE_PREFIX = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)(?P<rest>/.*)?$"
)

# Azure ML job statuses (MFE `JobStatus`), in the order a successful job passes through them.
TERMINAL_STATUSES = {"Completed", "Failed", "Canceled", "NotResponding"}
# MFE `JobInput` types and `InputDeliveryMode` values (the REST spec of
# Microsoft.MachineLearningServices jobs, as azure-ai-ml 1.35.2's restclient models them).
INPUT_TYPES = {"uri_folder", "uri_file", "mltable", "custom_model", "mlflow_model", "literal"}
INPUT_MODES = {"ReadOnlyMount", "ReadWriteMount", "Download", "Direct", "EvalMount", "EvalDownload"}
INPUT_REFERENCE = re.compile(r"\$\{\{inputs\.([\w.-]+)\}\}")
PRIORITIES = {"Dedicated", "LowPriority"}
IDENTITY_TYPES = {"None", "SystemAssigned", "UserAssigned", "SystemAssigned,UserAssigned"}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, headers or {})


FAULTS: dict[str, Callable[[], Reply]] = {
    "throttle": lambda: _error(
        429, "TooManyRequests", "Rate limit exceeded, retry later.", {"Retry-After": "1"}
    ),
    "server_error": lambda: _error(503, "ServiceUnavailable", "The service is unavailable."),
    "quota": lambda: _error(
        400,
        "QuotaExceeded",
        "Operation could not be completed as it results in exceeding approved "
        "standardDSv5Family Cores quota. Current Limit: 0.",
    ),
    "not_found": lambda: _error(404, "NotFound", "The resource was not found."),
    "auth": lambda: _error(
        403,
        "AuthorizationFailed",
        "The client does not have authorization to perform action "
        "'Microsoft.MachineLearningServices/workspaces/jobs/write'.",
    ),
    "invalid_image": lambda: _error(
        400, "InvalidImage", "Image 'registry.invalid/none:0' could not be found."
    ),
}


class FakeAzureML(FaultInjectingServer):
    def __init__(self, *, location: str = "westeurope") -> None:
        super().__init__(tls=True, canned=FAULTS, error=_error)
        self.location = location
        self.computes: dict[str, dict[str, Any]] = {}
        self.environments: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_creates: list[str] = []
        # Run history (a separate data-plane API) is where a failed job's error text lives.
        self.run_errors: dict[str, tuple[str, str]] = {}
        self._ops = 0
        # The provisioning state a newly created cluster reports (the service takes minutes
        # to go from Creating to Succeeded); tests move it on with `set_compute_state`.
        self.new_compute_state = "Succeeded"
        # False: cancel operations stay in progress until tests set it back to True.
        self.confirm_cancels = True

    # --- controls for tests --------------------------------------------------------------
    def set_job_status(
        self, name: str, status: str, *, error: tuple[str, str] | None = None
    ) -> None:
        """Move a job to `status`; `error` (code, message) is what run history then reports."""
        with self.lock:
            self.jobs[name]["properties"]["status"] = status
            if error is not None:
                self.run_errors[name] = error

    def set_compute_state(self, name: str, state: str, *, error_code: str | None = None) -> None:
        """Move a cluster to provisioning `state`; `error_code` is what it then reports."""
        with self.lock:
            props = self.computes[name]["properties"]
            props["provisioningState"] = state
            if error_code is not None:
                props["provisioningErrors"] = [
                    {"error": {"code": error_code, "message": f"{error_code} (fake)"}}
                ]

    def job_status(self, name: str) -> str:
        return str(self.jobs[name]["properties"]["status"])

    def job_body(self, name: str) -> dict[str, Any]:
        return self.jobs[name]["properties"]

    # --- service behaviour ----------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        if request.path == "/discovery":
            # Workspace discovery is anonymous: it only lists the regional endpoints.
            return Reply(200, {"api": self.url, "history": self.url, "catalog": self.url})
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "AuthenticationFailed", "Missing bearer token.")
        fault = self.take_fault(request)
        if fault is not None:
            return fault
        history = request.path.startswith("/history/v1.0")
        m = WORKSPACE_PREFIX.match(request.path.removeprefix("/history/v1.0"))
        if not m:
            if request.path.startswith("/operations/"):
                return self._operation(request.path.rsplit("/", 1)[-1])
            return _error(404, "NotFound", f"no route {request.path}")
        self._scope = m.group(0)[: len(m.group(0)) - len(m.group("rest") or "")]
        rest = (m.group("rest") or "").strip("/").split("/")
        route = (request.method, *rest)
        if history:
            match route:
                case ("GET", "runs", name, "details") if name in self.jobs:
                    return Reply(200, self._run_details(name))
            return _error(404, "NotFound", f"no run {request.path}")
        match route:
            case ("GET", ""):
                return Reply(200, self._workspace())
            case ("GET", "computes", name):
                return self._get(self.computes, name)
            case ("PUT", "computes", name):
                return self._put_compute(name, request.json())
            case ("PUT", "environments", name, "versions", version):
                return self._put_environment(name, version, request.json())
            case ("GET", "jobs", name):
                return self._get(self.jobs, name)
            case ("PUT", "jobs", name):
                return self._put_job(name, request.json())
            case ("POST", "jobs", name, "cancel"):
                return self._cancel(name)
        return _error(404, "NotFound", f"no route {request.method} {request.path}")

    def _workspace(self) -> dict[str, Any]:
        return {
            "id": self._scope,
            "name": self._scope.rsplit("/", 1)[-1],
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": self.location,
            "properties": {
                "provisioningState": "Succeeded",
                "discoveryUrl": f"{self.url}/discovery",
            },
        }

    def _run_details(self, name: str) -> dict[str, Any]:
        details: dict[str, Any] = {"runId": name, "status": self.job_status(name)}
        if name in self.run_errors:
            code, message = self.run_errors[name]
            details["error"] = {"error": {"code": code, "message": message}}
        return details

    @staticmethod
    def _get(store: dict[str, dict[str, Any]], name: str) -> Reply:
        if name not in store:
            return _error(404, "NotFound", f"Resource {name} not found.")
        return Reply(200, store[name])

    def _put_compute(self, name: str, body: dict[str, Any]) -> Reply:
        props = body.get("properties") or {}
        if props.get("computeType") != "AmlCompute":
            return _error(400, "BadRequest", "computeType must be AmlCompute")
        inner = props.get("properties") or {}
        scale = inner.get("scaleSettings") or {}
        problems = []
        if not inner.get("vmSize"):
            problems.append("vmSize is required")
        if inner.get("vmPriority") not in PRIORITIES:
            problems.append(f"vmPriority must be one of {sorted(PRIORITIES)}")
        lo, hi = scale.get("minNodeCount"), scale.get("maxNodeCount")
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
            problems.append("scaleSettings needs 0 <= minNodeCount <= maxNodeCount")
        idle = scale.get("nodeIdleTimeBeforeScaleDown")
        try:
            isodate.parse_duration(idle)
        except (isodate.ISO8601Error, TypeError):
            problems.append("nodeIdleTimeBeforeScaleDown must be an ISO 8601 duration")
        existing = self.computes.get(name)
        if existing is not None:
            old_size = existing["properties"]["properties"]["vmSize"]
            if str(old_size).lower() != str(inner.get("vmSize", "")).lower():
                problems.append("Updating the VM size of an existing compute is not supported")
        if problems:
            return _error(400, "BadRequest", "; ".join(problems))
        resource = {
            "id": f"{self._scope}/computes/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/computes",
            "location": body.get("location") or self.location,
            "properties": {
                **props,
                "provisioningState": "Succeeded" if existing else self.new_compute_state,
            },
        }
        identity = body.get("identity")
        if identity is not None:
            if identity.get("type") not in IDENTITY_TYPES:
                return _error(400, "BadRequest", f"identity.type {identity.get('type')!r}")
            # The service fills in each identity's principal and client ids.
            resource["identity"] = {
                **identity,
                "userAssignedIdentities": {
                    rid: {"principalId": "00000000-0000-0000-0000-0000000000p1", "clientId": "c1"}
                    for rid in identity.get("userAssignedIdentities") or {}
                },
            }
        elif existing is not None and "identity" in existing:
            resource["identity"] = existing["identity"]
        self.computes[name] = resource
        return Reply(201 if existing is None else 200, resource)

    def _put_environment(self, name: str, version: str, body: dict[str, Any]) -> Reply:
        props = body.get("properties") or {}
        if not props.get("image"):
            return _error(400, "BadRequest", "environment needs an image")
        env_id = f"{self._scope}/environments/{name}/versions/{version}"
        resource = {"id": env_id, "name": version, "properties": props}
        self.environments[env_id] = resource
        return Reply(201, resource)

    def _put_job(self, name: str, body: dict[str, Any]) -> Reply:
        if name in self.jobs:
            return _error(409, "UserError", f"A job with name '{name}' already exists.")
        props = body.get("properties") or {}
        problems = []
        if props.get("jobType") != "Command":
            problems.append("only Command jobs are modelled")
        compute_id = str(props.get("computeId") or "")
        if compute_id.rsplit("/", 1)[-1] not in self.computes:
            problems.append(f"compute '{compute_id}' does not exist")
        env = self.environments.get(str(props.get("environmentId") or ""))
        if env is None:
            problems.append("environmentId does not name a registered environment")
        for field_name in ("environmentVariables", "tags"):
            value = props.get(field_name) or {}
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                problems.append(f"{field_name} must map strings to strings")
        inputs = props.get("inputs") or {}
        for input_name, item in inputs.items():
            kind = item.get("jobInputType")
            if kind not in INPUT_TYPES:
                problems.append(f"inputs.{input_name}.jobInputType {kind!r} is not known")
            elif kind != "literal" and not item.get("uri"):
                problems.append(f"inputs.{input_name}.uri is required")
            if item.get("mode") is not None and item["mode"] not in INPUT_MODES:
                problems.append(f"inputs.{input_name}.mode {item['mode']!r} is not known")
        for referenced in INPUT_REFERENCE.findall(str(props.get("command") or "")):
            if referenced not in inputs:
                problems.append(f"command references input {referenced!r}, which the job lacks")
        timeout = (props.get("limits") or {}).get("timeout")
        if timeout is not None:
            try:
                isodate.parse_duration(timeout)
            except isodate.ISO8601Error:
                problems.append("limits.timeout must be an ISO 8601 duration")
        if problems:
            return _error(400, "UserError", "; ".join(problems))
        resource = {
            "id": f"{self._scope}/jobs/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "properties": {**props, "status": "NotStarted"},
        }
        self.jobs[name] = resource
        self.job_creates.append(name)
        return Reply(201, resource)

    def _cancel(self, name: str) -> Reply:
        job = self.jobs.get(name)
        if job is None:
            return _error(404, "NotFound", f"Job {name} not found.")
        if job["properties"]["status"] not in TERMINAL_STATUSES:
            job["properties"]["status"] = "CancelRequested"
        self._ops += 1
        op = f"cancel-{self._ops}-{name}"
        # The service finishes a cancel asynchronously; the SDK polls the Location header.
        return Reply(202, None, {"Location": f"{self.url}/operations/{op}", "Retry-After": "0"})

    def _operation(self, op: str) -> Reply:
        if not self.confirm_cancels:
            return Reply(202, None, {"Location": f"{self.url}/operations/{op}", "Retry-After": "1"})
        name = op.split("-", 2)[-1]
        job = self.jobs.get(name)
        if job is not None and job["properties"]["status"] == "CancelRequested":
            job["properties"]["status"] = "Canceled"
        return Reply(200, {"status": "Succeeded"})
