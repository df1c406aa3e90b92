"""Loopback stand-ins for the managed identity token endpoints and Key Vault's secret API.

What they check is what the real services require, as azure-identity 1.27 calls them
(azure/identity/_credentials/imds.py, app_service.py, azure_ml.py) and as Key Vault documents
"Get Secret" (learn.microsoft.com/rest/api/keyvault/secrets/get-secret/get-secret):
- IMDS `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...[&client_id=]`
  with header `Metadata: true` (IMDS refuses a request without it);
- App Service-style `IDENTITY_ENDPOINT`: `api-version=2019-08-01`, header `X-IDENTITY-HEADER`,
  `client_id`;
- Azure ML compute `MSI_ENDPOINT`: `api-version=2017-09-01`, header `secret`, `clientid`;
- Key Vault `GET /secrets/{name}?api-version=7.4` with `Authorization: Bearer <token>`,
  answering `{"value", "id", "attributes"}`, 401 without a valid token, 404 `SecretNotFound`.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.shard_runner.conftest import _serve

ACCESS_TOKEN = "eyJ0eXAiOiJKV1Qi.fake-aad-access-token.for-key-vault-only"
IDENTITY_HEADER = "identity-header-secret-4f2a"
MSI_SECRET = "msi-secret-9c1b7e"
VAULT_RESOURCE = "https://vault.azure.net"


@dataclass
class FakeAzure:
    secrets: dict[str, str]
    port: int = 0
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    vault_requests: list[str] = field(default_factory=list)
    # Transient failures, answered before the real answer (a retry must get through them).
    token_failures: list[int] = field(default_factory=list)
    vault_failures: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def imds_url(self) -> str:
        return f"{self.base}/metadata/identity/oauth2/token"


# (path, api-version, header that carries the endpoint's secret and its value, client id param)
_ENDPOINTS = {
    "/metadata/identity/oauth2/token": ("2018-02-01", "Metadata", "true", "client_id"),
    "/msi/token": ("2017-09-01", "secret", MSI_SECRET, "clientid"),
    "/identity/token": ("2019-08-01", "X-IDENTITY-HEADER", IDENTITY_HEADER, "client_id"),
}


def _handler(fake: FakeAzure) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path in _ENDPOINTS:
                self._token(url.path, query)
            elif url.path.startswith("/secrets/"):
                self._secret(urllib.parse.unquote(url.path[len("/secrets/") :]), query)
            else:
                self._answer(404, {"error": "no such path"})

        def _token(self, path: str, query: dict[str, str]) -> None:
            api_version, header, value, client_param = _ENDPOINTS[path]
            with fake.lock:
                fake.token_requests.append({"path": path, "query": query})
                failure = fake.token_failures.pop(0) if fake.token_failures else None
            if self.headers.get(header) != value:
                self._answer(400, {"error": "invalid_request", "error_description": "header"})
            elif query.get("api-version") != api_version or query.get("resource") != (
                VAULT_RESOURCE
            ):
                self._answer(400, {"error": "invalid_request"})
            elif {k for k in query if "client" in k} - {client_param}:
                self._answer(400, {"error": "invalid_request", "error_description": "client"})
            elif failure is not None:
                self._answer(failure, {"error": "temporarily_unavailable"})
            else:
                self._answer(
                    200,
                    {
                        "access_token": ACCESS_TOKEN,
                        "expires_in": "3599",
                        "expires_on": "1924991999",
                        "resource": VAULT_RESOURCE,
                        "token_type": "Bearer",
                        "client_id": query.get(client_param, "system-assigned"),
                    },
                )

        def _secret(self, name: str, query: dict[str, str]) -> None:
            with fake.lock:
                fake.vault_requests.append(name)
                failure = fake.vault_failures.pop(0) if fake.vault_failures else None
            if self.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
                self._answer(401, {"error": {"code": "Unauthorized", "message": "no token"}})
            elif query.get("api-version") != "7.4":
                self._answer(400, {"error": {"code": "BadParameter", "message": "api-version"}})
            elif failure is not None:
                self._answer(failure, {"error": {"code": "Throttled", "message": "slow down"}})
            elif name not in fake.secrets:
                message = f"A secret with (name/id) {name} was not found in this key vault."
                self._answer(404, {"error": {"code": "SecretNotFound", "message": message}})
            else:
                self._answer(
                    200,
                    {
                        "value": fake.secrets[name],
                        "id": f"{fake.base}/secrets/{name}/4387e9f3d6e14c459867679a90fd0f79",
                        "attributes": {"enabled": True, "recoveryLevel": "Recoverable"},
                    },
                )

    return Handler


def serve_fake_azure(secrets: dict[str, str]) -> Iterator[FakeAzure]:
    fake = FakeAzure(secrets=secrets)
    for server in _serve(_handler(fake)):
        fake.port = server.server_address[1]
        yield fake
