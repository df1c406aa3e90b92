"""The OpenAPI document itself: valid OpenAPI 3.1, every schema valid JSON Schema 2020-12, every
reference resolvable, and the request schemas those of the models the endpoints validate with."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import schemathesis
from schemathesis.specs.openapi.definitions import OPENAPI_31

from domain import api_models
from domain.messages import JobMessage
from domain.openapi import OPERATIONS, REF_TEMPLATE, openapi_document
from domain.requests import EvaluationRequest
from domain.tasksets import TASK_SETS


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document(server_url="https://waa-eval.example.net")
    jsonschema.Draft202012Validator(OPENAPI_31).validate(doc)
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    prefix = REF_TEMPLATE.format(model="")
    for ref in _refs(doc):
        assert ref.startswith(prefix), ref
        assert ref.removeprefix(prefix) in doc["components"]["schemas"], ref
    # schemathesis loads every operation (the fuzz test depends on it).
    loaded = [r.ok().label for r in schemathesis.openapi.from_dict(doc).get_all_operations()]
    assert loaded == [f"{op.method} {op.path}" for op in OPERATIONS]
    json.dumps(doc)  # served as JSON


def test_request_schemas_are_the_validating_models() -> None:
    schemas = openapi_document()["components"]["schemas"]
    # The heartbeat body is JobMessage's own schema, unchanged.
    own = JobMessage.model_json_schema(ref_template=REF_TEMPLATE)
    defs = own.pop("$defs", {})
    assert schemas["JobMessage"] == own
    for name, sub in defs.items():
        assert schemas[name] == sub
    # The start body is EvaluationRequest's, with what its field validators check stated.
    start = schemas["EvaluationRequest"]
    assert set(start["properties"]) == set(EvaluationRequest.model_fields)
    assert start["additionalProperties"] is False
    task_set = start["properties"]["task_set"]["anyOf"][0]
    assert task_set["enum"] == sorted(TASK_SETS)
    # The retry body: the start fields but those a retry decides, plus force; no defaults
    # (an omitted field keeps the retried evaluation's value).
    retry = schemas["RetryRequest"]
    assert set(retry["properties"]) == (
        set(EvaluationRequest.model_fields) - set(api_models.RETRY_FIXED_FIELDS)
    ) | {"force"}
    assert all("default" not in p for n, p in retry["properties"].items() if n != "force")


@pytest.mark.parametrize("max_workers", [1, 20, 200])
def test_the_workers_bound_is_the_apps_setting(max_workers: int) -> None:
    schemas = openapi_document(max_workers=max_workers)["components"]["schemas"]
    for name in ("EvaluationRequest", "RetryRequest"):
        assert schemas[name]["properties"]["workers"]["maximum"] == max_workers


def test_security_is_declared_per_operation() -> None:
    doc = openapi_document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["functionKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-functions-key",
        "description": schemes["functionKeyHeader"]["description"],
    }
    assert schemes["functionKeyQuery"]["in"] == "query"
    assert schemes["functionKeyQuery"]["name"] == "code"
    assert schemes["heartbeatToken"]["scheme"] == "bearer"
    security = {
        op["operationId"]: op["security"] for path in doc["paths"].values() for op in path.values()
    }
    assert security.pop("heartbeat") == [{"heartbeatToken": []}]
    assert security.pop("openapi_json") == []
    for name, required in security.items():
        assert required == [{"functionKeyHeader": []}, {"functionKeyQuery": []}], name


def test_every_error_answer_is_the_error_body() -> None:
    for op in OPERATIONS:
        for status, resp in op.responses.items():
            if status >= 400:
                assert resp.json is api_models.ErrorBody, (op.function, status)
