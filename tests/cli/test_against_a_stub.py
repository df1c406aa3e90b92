"""`waa-eval` against a loopback stub of the API that checks function keys.

The devhost does not enforce function keys (devhost/README.md: "Auth levels are not enforced,
as locally with Core Tools"), so the key paths are tested here. The stub answers as the Azure
Functions host does for an HTTP trigger of auth level FUNCTION: the key comes in the
`x-functions-key` header (or `code` query parameter), and a request without a valid key gets
401 (learn.microsoft.com/azure/azure-functions/function-keys-how-to; Microsoft Q&A 1133820:
"You can also utilize x-functions-key in the HTTP header instead appending the key to code=").
The stub's answers to the routes follow triggers/http_api.py's shapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Run
from tests.fakes._http import FakeServer, Reply, Request

KEY = "s3cret-function-key-value"
EID = "abcdef012345"


def _task(task_id: str, **extra: Any) -> dict[str, Any]:
    return {"task_id": task_id, "domain": "notepad", "shard": 0, "outcome": "completed",
            "reason": "", "score": 1.0, "attempt": 1, "failed_runs": 0, **extra}  # fmt: skip


class FunctionsHostStub(FakeServer):
    def handle(self, request: Request) -> Reply:
        given = request.headers.get("x-functions-key") or request.query.get("code")
        if given != KEY:
            return Reply(401)  # the host's answer carries no body
        if request.method == "GET" and request.path == "/api/evaluations":
            return Reply(200, {"evaluations": [{"evaluation_id": EID, "state": "running",
                         "created_at": "2026-01-01T00:00:00+00:00", "tasks": 3,
                         "policy": "resilient"}]})  # fmt: skip
        if request.method == "POST" and request.path == f"/api/evaluations/{EID}/retry":
            body = request.json() or {}
            if "workers" in body and not isinstance(body["workers"], int):
                return Reply(400, {"error": "workers: must be an integer", "field": "workers"})
            if not body.get("force"):  # the trials branch's rule: a second POST returns it
                return Reply(200, {"evaluation_id": "fedcba543210", "created": False,
                                   "retry_of": EID, "retried_by": ["fedcba543210"]})  # fmt: skip
            return Reply(202, {"evaluation_id": "fedcba543210", "created": True, "tasks": 2,
                               "shards": 1, "retry_of": EID})  # fmt: skip
        if request.method == "GET" and request.path == f"/api/evaluations/{EID}":
            return Reply(200, {
                "evaluation_id": EID, "state": "completed", "runtime_status": "Completed",
                "counts": {"total": 3, "completed": 3, "failed": 0, "running": 0,
                           "pending": 0, "not_run": 0},
                "summary": {"artifacts": {
                    "container_url": "https://acct.blob.core.windows.net/artifacts",
                    "prefix": f"https://acct.blob.core.windows.net/artifacts/{EID}/"}},
                "tasks": [
                    _task("t-1", artifacts=f"https://acct.blob.core.windows.net/artifacts/{EID}/notepad/t-1/attempt-1/"),
                    _task("t-2#0", artifacts=f"https://acct.blob.core.windows.net/artifacts/{EID}/notepad/t-2#0/attempt-1/"),
                    _task("t-2#1"),
                ],
            })  # fmt: skip
        return Reply(404, {"error": "no such route"})


@pytest.fixture
def stub() -> Iterator[FunctionsHostStub]:
    with FunctionsHostStub() as server:
        assert isinstance(server, FunctionsHostStub)
        yield server


def _no_key_in(*texts: str) -> None:
    for text in texts:
        assert KEY not in text


def test_a_wrong_key_is_refused_and_never_printed(stub: FunctionsHostStub, cli: Run) -> None:
    wrong = cli("--url", stub.url, "--key", "not-the-key", "list")
    assert wrong.exit_code == 3
    assert "the function key was refused (HTTP 401" in wrong.stderr
    assert "not-the-key" not in wrong.stderr + wrong.stdout
    assert stub.requests[-1].headers["x-functions-key"] == "not-the-key"

    none = cli("--url", stub.url, "list")
    assert none.exit_code == 3
    assert "none was given (--key, WAA_EVAL_KEY or `key` in the config file)" in none.stderr
    assert "x-functions-key" not in stub.requests[-1].headers


def test_the_key_travels_in_the_header_from_option_environment_or_config_file(
    stub: FunctionsHostStub, cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_option = cli("--url", stub.url, "--key", KEY, "list")
    assert by_option.exit_code == 0, by_option.stderr
    assert EID in by_option.stdout
    _no_key_in(by_option.stdout, by_option.stderr)
    assert stub.requests[-1].headers["x-functions-key"] == KEY
    assert "code" not in stub.requests[-1].query  # never in the URL (it would end up in logs)

    by_env = cli("list", "--json", env={"WAA_EVAL_URL": stub.url, "WAA_EVAL_KEY": KEY})
    assert by_env.exit_code == 0, by_env.stderr
    assert json.loads(by_env.stdout)[0]["evaluation_id"] == EID

    config = tmp_path / "config-home" / "waa-eval" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{stub.url}/api/"\nkey = "{KEY}"\n', encoding="utf-8")
    by_file = cli("list")
    assert by_file.exit_code == 0, by_file.stderr
    assert EID in by_file.stdout

    # The option wins over the environment, the environment over the file.
    monkeypatch.setenv("WAA_EVAL_KEY", "from-the-environment")
    env_wins = cli("list")
    assert env_wins.exit_code == 3
    assert stub.requests[-1].headers["x-functions-key"] == "from-the-environment"
    assert cli("--key", KEY, "list").exit_code == 0


def test_a_bad_config_file_is_named(cli: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('url = "ftp://x"\n', encoding="utf-8")
    result = cli("list", env={"WAA_EVAL_CONFIG": str(bad)})
    assert result.exit_code == 2
    assert f"url from {bad}: must start with http:// or https://" in result.stderr
    bad.write_text('url = "http://127.0.0.1:1"\ntoken = "x"\n', encoding="utf-8")
    result = cli("list", env={"WAA_EVAL_CONFIG": str(bad)})
    assert result.exit_code == 2 and "unknown setting 'token'" in result.stderr
    gone = cli("list", env={"WAA_EVAL_CONFIG": str(tmp_path / "missing.toml")})
    assert gone.exit_code == 2 and "does not exist" in gone.stderr


def test_retry_posts_the_overrides_and_reports_the_new_evaluation(
    stub: FunctionsHostStub, cli: Run
) -> None:
    # The stub's route stands in for POST /api/evaluations/{id}/retry (CONTRACT.md); the
    # integrator tests it against the real route once it is merged.
    result = cli("--url", stub.url, "--key", KEY, "retry", EID, "--workers", "3", "--tier",
                 "batch", "--tier", "vm", "--spot", "--force", "--field",
                 "budget_usd=12.5")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert f"retrying {EID} as evaluation fedcba543210: 2 tasks on 1 shards" in result.stdout
    sent = stub.requests[-1]
    assert sent.method == "POST" and sent.path == f"/api/evaluations/{EID}/retry"
    assert sent.json() == {
        "workers": 3,
        "tiers": ["batch", "vm"],
        "spot": True,
        "force": True,
        "budget_usd": 12.5,
    }
    # Nothing given: an empty body, the original request's fields apply; the server answers
    # with the retry that exists already.
    again = cli("--url", stub.url, "--key", KEY, "retry", EID)
    assert again.exit_code == 0
    assert stub.requests[-1].json() == {}
    assert f"evaluation {EID} was retried already as fedcba543210" in again.stdout

    # The task queue's options (issue 10) under the request's field names.
    queue = cli("--url", stub.url, "--key", KEY, "retry", EID, "--distribution", "queue",
                "--target-hours", "2.5", "--tail-copies", "--force")  # fmt: skip
    assert queue.exit_code == 0, queue.stderr
    assert stub.requests[-1].json() == {
        "distribution": "queue",
        "target_hours": 2.5,
        "tail_copies": True,
        "force": True,
    }
    static = cli("--url", stub.url, "--key", KEY, "retry", EID, "--distribution", "static",
                 "--no-tail-copies", "--right-size")  # fmt: skip
    assert static.exit_code == 0, static.stderr
    assert stub.requests[-1].json() == {
        "distribution": "static",
        "tail_copies": False,
        "right_size": True,
    }

    rejected = cli("--url", stub.url, "--key", KEY, "retry", EID, "--field", 'workers="many"')
    assert rejected.exit_code == 1
    assert "HTTP 400: workers: must be an integer" in rejected.stderr
    _no_key_in(result.stdout, rejected.stderr)


def test_artifacts_shows_each_uploaded_folder_and_what_is_not_uploaded_yet(
    stub: FunctionsHostStub, cli: Run
) -> None:
    base = f"https://acct.blob.core.windows.net/artifacts/{EID}"
    one = cli("--url", stub.url, "--key", KEY, "artifacts", EID, "t-1")
    assert one.exit_code == 0, one.stderr
    assert f"t-1 (completed): {base}/notepad/t-1/attempt-1/" in one.stdout
    assert f"artifacts of evaluation {EID}: {base}/" in one.stdout

    trials = cli("--url", stub.url, "--key", KEY, "artifacts", EID, "t-2")
    assert f"t-2#0 (completed): {base}/notepad/t-2#0/attempt-1/" in trials.stdout
    assert "t-2#1 (completed): not uploaded yet" in trials.stdout

    every = json.loads(cli("--url", stub.url, "--key", KEY, "artifacts", EID, "--json").stdout)
    assert every["prefix"] == f"{base}/"
    assert [t["artifacts"] is not None for t in every["tasks"]] == [True, True, False]


def test_a_route_the_server_does_not_have_is_reported(stub: FunctionsHostStub, cli: Run) -> None:
    result = cli("--url", stub.url, "--key", KEY, "cancel", "nope")
    assert result.exit_code == 1
    assert f"POST {stub.url}/api/evaluations/nope/cancel: HTTP 404: no such route" in (
        " ".join(result.stderr.split())
    )
