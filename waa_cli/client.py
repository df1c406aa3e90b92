"""The evaluation API over HTTP (triggers/http_api.py on the server side), with the errors a
user can act on: an unreachable URL, a refused function key, a request the server rejected."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from waa_cli.config import Target

KEY_HEADER = "x-functions-key"
TERMINAL_STATES = frozenset({"completed", "cancelled", "failed"})
# The orchestration's runtime status once it ran to its end (Durable Functions'
# OrchestrationRuntimeStatus).
ENDED_RUNTIME = frozenset({"Completed", "Failed", "Terminated"})

# Exit codes of the CLI.
EXIT_REJECTED = 1  # the server answered with an error (4xx other than 401/403, or 5xx)
EXIT_UNREACHABLE = 2  # no answer from the URL (connection refused, DNS, timeout, TLS)
EXIT_KEY_REFUSED = 3  # 401 / 403


class ApiError(Exception):
    """A failed call; `message` is what to print (never the key), `exit_code` the CLI's."""

    def __init__(self, message: str, exit_code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status


def has_ended(view: dict[str, Any]) -> bool:
    """The evaluation reached a final state and its orchestration finished (its summary is
    written by then), as devhost/simulation.py's `wait` decides."""
    return view.get("state") in TERMINAL_STATES and view.get("runtime_status") in ENDED_RUNTIME


class Client:
    def __init__(self, target: Target, *, timeout: float = 30.0) -> None:
        self.target = target
        headers = {"accept": "application/json", "user-agent": "waa-eval"}
        if target.key:
            headers[KEY_HEADER] = target.key
        self._http = httpx.Client(base_url=target.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the API
    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/api/evaluations", json=body)

    def status(self, evaluation_id: str, *, tasks: bool = True) -> dict[str, Any]:
        params = {"tasks": "true" if tasks else "false"}
        return self._json("GET", f"/api/evaluations/{_seg(evaluation_id)}", params=params)

    def list(self, limit: int = 20) -> list[dict[str, Any]]:
        body = self._json("GET", "/api/evaluations", params={"limit": str(limit)})
        return list(body.get("evaluations", []))

    def cancel(self, evaluation_id: str) -> dict[str, Any]:
        return self._json("POST", f"/api/evaluations/{_seg(evaluation_id)}/cancel")

    def retry(self, evaluation_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", f"/api/evaluations/{_seg(evaluation_id)}/retry", json=overrides)

    def results(self, evaluation_id: str, fmt: str = "json") -> str:
        """The results table as the server renders it (json, csv or markdown text)."""
        path = f"/api/evaluations/{_seg(evaluation_id)}/results"
        return self._send("GET", path, params={"format": fmt}).text

    def results_json(self, evaluation_id: str) -> dict[str, Any]:
        path = f"/api/evaluations/{_seg(evaluation_id)}/results"
        return self._json("GET", path, params={"format": "json"})

    # ------------------------------------------------------------------ plumbing
    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ApiError(
                f"{method} {self._shown(path)}: the answer is not JSON "
                f"(HTTP {response.status_code}: {_excerpt(response.text)})",
                EXIT_REJECTED,
                response.status_code,
            ) from None
        if not isinstance(body, dict):
            raise ApiError(
                f"{method} {self._shown(path)}: expected a JSON object, got {_excerpt(body)}",
                EXIT_REJECTED,
                response.status_code,
            )
        return body

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        where = self._shown(path)
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as err:
            raise ApiError(
                f"cannot reach {self.target.base_url} (from {self.target.url_source}): "
                f"{_reason(err)}. Is the URL right and the app running?",
                EXIT_UNREACHABLE,
            ) from None
        except httpx.TimeoutException:
            raise ApiError(
                f"no answer from {self.target.base_url} within {self._http.timeout.read} s "
                f"({method} {where})",
                EXIT_UNREACHABLE,
            ) from None
        except httpx.HTTPError as err:
            raise ApiError(f"{method} {where} failed: {_reason(err)}", EXIT_UNREACHABLE) from None
        if response.status_code in (401, 403):
            hint = (
                "the function key was refused"
                if self.target.key
                else "the server wants a function key and none was given "
                "(--key, WAA_EVAL_KEY or `key` in the config file)"
            )
            raise ApiError(
                f"{hint} (HTTP {response.status_code} from {where})",
                EXIT_KEY_REFUSED,
                response.status_code,
            )
        if response.status_code >= 400:
            raise ApiError(
                f"{method} {where}: HTTP {response.status_code}: {_server_message(response)}",
                EXIT_REJECTED,
                response.status_code,
            )
        return response

    def _shown(self, path: str) -> str:
        return f"{self.target.base_url}{path}"


def _seg(value: str) -> str:
    """An id as one path segment: nothing in it can change the route."""
    return quote(value, safe="")


def _reason(err: Exception) -> str:
    text = str(err) or type(err).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text


def _excerpt(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(response: httpx.Response) -> str:
    """The app answers errors as {"error": "<field>: <what is wrong>", "field": "<field>"}
    (triggers/http_api.py `error`); anything else is shown as an excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        return _excerpt(response.text) or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message: str = body["error"]
        field = body.get("field")
        if isinstance(field, str) and field and not message.startswith(field):
            message = f"{field}: {message}"
        return message
    return _excerpt(body)
