"""The OpenAPI description against the running app: the route table is the app's, the served
document is the built one, and schemathesis fuzzes every operation on the devhost.

Fuzzing (schemathesis's pytest integration, `@schema.parametrize()` with
`case.call_and_validate()`): every documented operation gets the examples, coverage and fuzzing
phases, at most 25 generated cases each, derandomized with a fixed seed and no example database
(the same cases on every run), no shrinking (a failure is reported as found, which bounds the
run). Each response passes schemathesis's checks: no 5xx (`not_a_server_error`), a documented
status code, content type and headers, a body valid against the documented schema, invalid
input refused with a 4xx, valid input accepted. Checks turned off, and why:

- `unsupported_method` (and the coverage phase's undeclared methods): what answers a method
  the app does not register is the host, not the app (the devhost: 404 like any unserved path,
  or Python http.server's 501 for methods it has no handler for, such as TRACE).
- `ignored_auth` for the function-key operations: function keys are enforced by the Functions
  host in Azure; the devhost, like `func start`, does not enforce auth levels (devhost/README).
  The heartbeat route checks its bearer token itself, so there the check stays on.
- `positive_data_acceptance` and `negative_data_rejection` for start and retry: their bodies
  have rules JSON Schema cannot state (exactly one of `tasks` / `task_set`, null meaning
  absent; `job_timeout_hours` longer than `container_start_timeout_minutes`; task ids unique
  across domains), so a schema-valid body may rightly get 400 and a "schema-invalid" one may be
  valid. Instead, every 400 must name the field to fix (`_names_the_field`).
- `positive_data_acceptance` for heartbeats: the message's artifact paths are checked by a
  field validator (relative POSIX path: not empty, no leading '/', no '..' or empty segment, no
  '\\' or control character; domain/artifacts.py `path_problem`) that its JSON Schema does not
  show, so a schema-valid message may rightly get 400. Invalid messages must still be refused
  (`negative_data_rejection` stays on), and every 400 must name the field.
"""

from __future__ import annotations

from typing import Any

import requests
import schemathesis
from schemathesis import Case, Response

from adapters.settings import load_settings
from devhost.simulation import Simulation
from domain.openapi import OPERATIONS, ROUTE_PREFIX, Operation, openapi_document
from tests.openapi.conftest import FUZZ_MAX_WORKERS

SEED = 20261202
# Bodies with rules JSON Schema cannot state (module docstring).
CROSS_FIELD_BODIES = ("start_evaluation", "retry_evaluation")
# Bodies whose field validators refuse some schema-valid values (module docstring).
VALIDATED_BODIES = ("heartbeat",)


def _operation_config(op: Operation) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    if op.auth == "function_key":  # enforced by the Functions host, not by the devhost
        checks["ignored_auth"] = {"enabled": False}
    if op.function in CROSS_FIELD_BODIES:
        checks["positive_data_acceptance"] = {"enabled": False}
        checks["negative_data_rejection"] = {"enabled": False}
    if op.function in VALIDATED_BODIES:
        checks["positive_data_acceptance"] = {"enabled": False}
    return {"include-operation-id": op.function, "checks": checks}


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": 25,
            "deterministic": True,
            "database": "none",
            "no-shrink": True,
        },
        # A bearer token of the right form but no job's, so heartbeat bodies get past the
        # 401 for a missing token and are parsed (then 400, or 403 for the token).
        "auth": {"openapi": {"heartbeatToken": {"bearer": "0" * 64}}},
        "checks": {"unsupported_method": {"enabled": False}},
        "phases": {"stateful": {"enabled": False}, "coverage": {"unexpected-methods": []}},
        "operations": [_operation_config(op) for op in OPERATIONS],
    }
)
schema = schemathesis.openapi.from_dict(
    openapi_document(max_workers=FUZZ_MAX_WORKERS), config=CONFIG
)


def _names_the_field(response: Response) -> None:
    if response.status_code == 400:
        body = response.json()
        assert isinstance(body.get("field"), str) and body["field"], body
        assert body["error"].startswith(body["field"]), body


@schema.parametrize()
def test_every_operation_honours_its_description(case: Case, fuzz_simulation: Simulation) -> None:
    response = case.call_and_validate(base_url=fuzz_simulation.base_url, timeout=60)
    _names_the_field(response)


def _registered(sim: Simulation) -> set[tuple[str, str, str]]:
    return {
        (route.function_name, method, route.template.strip("/"))
        for route in sim.host.router.routes
        for method in route.methods
    }


def test_the_route_table_is_the_apps_http_functions(fuzz_simulation: Simulation) -> None:
    """Every HTTP function the app registers is described, and every description is of a
    registered function, by name, method and route."""
    documented = {(op.function, op.method, op.route) for op in OPERATIONS}
    registered = _registered(fuzz_simulation)
    assert registered - documented == set(), "registered but not in domain/openapi.py OPERATIONS"
    assert documented - registered == set(), "in OPERATIONS but not registered by the app"
    assert fuzz_simulation.host.router.route_prefix == ROUTE_PREFIX


def test_the_served_document_is_the_built_one(fuzz_simulation: Simulation) -> None:
    base = fuzz_simulation.base_url
    r = requests.get(f"{base}/api/openapi.json", timeout=30)  # no function key: anonymous
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    served: dict[str, Any] = r.json()
    assert load_settings().max_workers == FUZZ_MAX_WORKERS
    assert served == openapi_document(server_url=base, max_workers=FUZZ_MAX_WORKERS)
    assert served["servers"] == [{"url": base}]
