from __future__ import annotations

import pytest

from devhost.routes import RouteTemplateError, build_route, find_route


def test_route_params_are_extracted_and_percent_decoded() -> None:
    route = build_route("get_evaluation", "evaluations/{evaluation_id}", ["GET"])
    assert route.match("GET", "evaluations/ev-1") == {"evaluation_id": "ev-1"}
    assert route.match("GET", "/evaluations/a%20b/") == {"evaluation_id": "a b"}


def test_literals_match_case_insensitively_and_methods_are_enforced() -> None:
    route = build_route("cancel", "evaluations/{id}/cancel", ["POST"])
    assert route.match("post", "Evaluations/x/CANCEL") == {"id": "x"}
    assert route.match("GET", "evaluations/x/cancel") is None
    assert route.match("POST", "evaluations/x") is None
    assert route.match("POST", "evaluations/x/cancel/more") is None


def test_constraints_optional_and_catch_all() -> None:
    guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    route = build_route("item", "items/{id:guid}/{part?}", None)
    assert route.match("DELETE", f"items/{guid}") == {"id": guid}
    assert route.match("GET", f"items/{guid}/x") == {"id": guid, "part": "x"}
    assert route.match("GET", "items/not-a-guid") is None
    assert build_route("n", "n/{k:int}", None).match("GET", "n/12a") is None
    assert build_route("f", "files/{*path}", None).match("GET", "files/a/b") == {"path": "a/b"}


def test_default_route_is_the_function_name_and_all_methods() -> None:
    route = build_route("heartbeats", None, None)
    assert route.match("PUT", "heartbeats") == {}
    assert route.match("GET", "heartbeat") is None


def test_literal_route_wins_over_parameter_route() -> None:
    routes = [
        build_route("by_id", "evaluations/{id}", ["GET"]),
        build_route("summary", "evaluations/summary", ["GET"]),
    ]
    found = find_route(routes, "GET", "evaluations/summary")
    assert found is not None and found[0].function_name == "summary"
    found = find_route(routes, "GET", "evaluations/e1")
    assert found is not None and found[0].function_name == "by_id"
    assert find_route(routes, "GET", "nothing/here") is None


def test_unsupported_constraint_is_rejected() -> None:
    with pytest.raises(RouteTemplateError, match="regex"):
        build_route("x", "x/{id:regex(^a$)}", None)
