"""A fake Azure Key Vault (secrets data plane) for the real `azure-keyvault-secrets` client.

Served over TLS from a throwaway certificate (the SDK's challenge policy refuses plain http).
What it models, and where from:
- Authentication by challenge (learn.microsoft.com/azure/key-vault/general/rest-error-codes,
  "HTTP 401: Unauthenticated Request"; azure/keyvault/secrets/_shared/challenge_auth_policy.py in
  azure-keyvault-secrets 4.12.0): a request without a bearer token gets 401 with
  `WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="https://vault.azure.net"`
  and no secret is touched; the client then asks its credential for a token for that resource and
  sends the request again. A token other than the one the fake credential issues is refused the
  same way.
- Set Secret: `PUT /secrets/{name}?api-version=...`, name `^[0-9a-zA-Z-]+$` of at most 127
  characters, body `{"value", "contentType", "attributes": {"enabled", "nbf", "exp"}, "tags"}`,
  200 with the secret bundle (`id` = `<vault>/secrets/<name>/<version>`); a second set of the same
  name makes a new version (learn.microsoft.com/rest/api/keyvault/secrets/set-secret).
- Get Secret: `GET /secrets/{name}[/{version}]` (the latest without a version), 404
  `SecretNotFound` otherwise.
- Errors as Key Vault shapes them, `{"error": {"code", "message", "innererror"?}}`: 403 Forbidden
  with inner code ForbiddenByRbac (the caller lacks a role), 429 Throttled with Retry-After, 503.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.fakes._faults import FaultInjectingServer
from tests.fakes._http import Reply, Request
from tests.fakes.credentials import FAKE_BEARER_TOKEN

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUTHORITY = f"https://login.microsoftonline.com/{TENANT_ID}"
RESOURCE = "https://vault.azure.net"
CHALLENGE = f'Bearer authorization="{AUTHORITY}", resource="{RESOURCE}"'
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_PATH = re.compile(r"^/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?/?$")


def _error(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    inner: str | None = None,
) -> Reply:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if inner:
        body["error"]["innererror"] = {"code": inner}
    return Reply(status, body, headers or {})


FAULTS: dict[str, Callable[[], Reply]] = {
    "throttle": lambda: _error(
        429,
        "Throttled",
        "Request was not processed because too many requests were received.",
        {"Retry-After": "1"},
    ),
    "server_error": lambda: _error(503, "ServiceUnavailable", "The service is unavailable."),
    "forbidden": lambda: _error(
        403,
        "Forbidden",
        "Caller is not authorized to perform action on resource.\r\n"
        "Action: 'Microsoft.KeyVault/vaults/secrets/setSecret/action'\r\n"
        "Assignment: (not found)\r\n",
        inner="ForbiddenByRbac",
    ),
}


class FakeKeyVault(FaultInjectingServer):
    def __init__(self) -> None:
        super().__init__(tls=True, canned=FAULTS, error=_error)
        # name -> versions, oldest first; each the bundle the service returned.
        self.secrets: dict[str, list[dict[str, Any]]] = {}
        self.challenges = 0

    def latest(self, name: str) -> dict[str, Any]:
        return self.secrets[name][-1]

    def handle(self, request: Request) -> Reply:
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {FAKE_BEARER_TOKEN}":
            # The challenge: sent before any check of the request, as the service does (the
            # SDK's first request of a client has no token and, for a PUT, no body).
            self.challenges += 1
            return _error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                {"WWW-Authenticate": CHALLENGE},
            )
        if not request.query.get("api-version"):
            return _error(400, "BadParameter", "The api-version query parameter is required.")
        fault = self.take_fault(request)
        if fault is not None:
            return fault
        m = _PATH.match(request.path)
        if not m:
            return _error(404, "NotFound", f"no route {request.method} {request.path}")
        name = m.group("name")
        if not _SECRET_NAME.fullmatch(name):
            return _error(
                400,
                "BadParameter",
                "The request URI contains an invalid name: only 0-9, a-z, A-Z and - are allowed.",
            )
        if request.method == "PUT" and m.group("version") is None:
            return self._set(name, request.json() or {})
        if request.method == "GET":
            return self._get(name, m.group("version") or "")
        return _error(405, "MethodNotAllowed", f"{request.method} is not supported here")

    def _set(self, name: str, body: dict[str, Any]) -> Reply:
        if not isinstance(body.get("value"), str):
            return _error(400, "BadParameter", "Property 'value' is required.")
        now = int(time.time())
        attributes = {k: v for k, v in (body.get("attributes") or {}).items() if v is not None}
        attributes.setdefault("enabled", True)
        attributes |= {
            "created": now,
            "updated": now,
            "recoveryLevel": "CustomizedRecoverable+Purgeable",
            "recoverableDays": 7,
        }
        bundle: dict[str, Any] = {
            "value": body["value"],
            "id": f"{self.url}/secrets/{name}/{uuid.uuid4().hex}",
            "attributes": attributes,
        }
        if body.get("contentType") is not None:
            bundle["contentType"] = body["contentType"]
        if body.get("tags"):
            bundle["tags"] = body["tags"]
        self.secrets.setdefault(name, []).append(bundle)
        return Reply(200, bundle)

    def _get(self, name: str, version: str) -> Reply:
        versions = self.secrets.get(name, [])
        found = [b for b in versions if not version or b["id"].endswith("/" + version)]
        if not found:
            return _error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found.")
        return Reply(200, found[-1])
