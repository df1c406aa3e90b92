"""Identity-based AzureWebJobsStorage for the state table: no key, a token from the identity.

The store is built by `adapters.runtime.services()` from the settings, exactly as in Azure,
and talks through the real azure-data-tables client to a local Table service over TLS (azure-core
sends bearer tokens over https only). The token comes through the real azure-identity
credential from a local managed-identity endpoint: App Service and Flex Consumption give an app
its identity as IDENTITY_ENDPOINT + IDENTITY_HEADER, which ManagedIdentityCredential calls with
the user-assigned identity's client_id. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from adapters import runtime
from adapters.settings import SettingsError, load_settings
from tests.fakes._http import FakeServer, Reply, Request

TOKEN = "token-from-the-managed-identity"
IDENTITY_HEADER = "identity-header-secret"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "h" * 24


class FakeIdentityEndpoint(FakeServer):
    """The App Service managed-identity endpoint (api-version 2019-08-01)."""

    def handle(self, request: Request) -> Reply:
        if request.headers.get("x-identity-header") != IDENTITY_HEADER:
            return Reply(401, {"error": "bad identity header"})
        return Reply(
            200,
            {
                "access_token": TOKEN,
                "expires_on": str(int(time.time()) + 3600),
                "resource": request.query.get("resource", ""),
                "token_type": "Bearer",
                "client_id": request.query.get("client_id", ""),
            },
        )


class FakeTableService(FakeServer):
    """The Table service calls the store makes here: create the table, read an entity."""

    def __init__(self) -> None:
        super().__init__(tls=True)
        self.tables: set[str] = set()

    def handle(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(403, _odata_error("AuthorizationFailure", "no valid bearer token"))
        if request.method == "POST" and request.path == "/Tables":
            name = request.json()["TableName"]
            if name in self.tables:
                return Reply(409, _odata_error("TableAlreadyExists", "exists"))
            self.tables.add(name)
            return Reply(201, {"TableName": name})
        if request.method == "GET" and "(PartitionKey=" in request.path:
            return Reply(404, _odata_error("ResourceNotFound", "no such entity"))
        return Reply(400, _odata_error("InvalidInput", f"unexpected {request.method}"))


def _odata_error(code: str, message: str) -> dict[str, Any]:
    return {"odata.error": {"code": code, "message": {"lang": "en-US", "value": message}}}


Fakes = tuple[FakeIdentityEndpoint, FakeTableService]


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    with FakeIdentityEndpoint() as identity, FakeTableService() as tables:
        assert tables.ca_file is not None
        for name in (
            "AzureWebJobsStorage",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_USERNAME",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("IDENTITY_ENDPOINT", identity.url + "/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", tables.ca_file)
        monkeypatch.setenv("HEARTBEAT_SECRET", SECRET)
        monkeypatch.setenv("STATE_TABLE_PREFIX", "waa")
        runtime.reset_services()
        yield identity, tables
        runtime.reset_services()


def test_user_assigned_identity_reaches_the_table_with_a_token_and_no_key(
    azure: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity, tables = azure
    # What infra/main.bicep sets: the table endpoint, managedidentity, the identity's client id.
    monkeypatch.setenv("AzureWebJobsStorage__tableServiceUri", tables.url + "/")
    monkeypatch.setenv("AzureWebJobsStorage__credential", "managedidentity")
    monkeypatch.setenv("AzureWebJobsStorage__clientId", CLIENT_ID)

    store = runtime.services().store
    assert store.lookup_job("waa-e-s0-a1") is None

    assert tables.tables == {"waastate"}
    sent = list(tables.requests)
    assert [r.method for r in sent] == ["POST", "GET"]
    for r in sent:
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
        assert "sharedkey" not in r.headers["authorization"].lower()
    asked = identity.requests
    assert asked and asked[0].query["client_id"] == CLIENT_ID
    assert asked[0].query["resource"].startswith("https://storage.azure.com")


def test_without_credential_setting_the_default_chain_finds_the_identity(
    azure: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity, tables = azure
    monkeypatch.setenv("AzureWebJobsStorage__tableServiceUri", tables.url)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)

    assert runtime.services().store.lookup_job("waa-e-s0-a1") is None
    assert tables.tables == {"waastate"}
    assert identity.requests[0].query["client_id"] == CLIENT_ID


def test_the_credential_follows_the_functions_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("HEARTBEAT_SECRET", SECRET)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "waastore")
    monkeypatch.setenv("AzureWebJobsStorage__credential", "managedidentity")
    load_settings.cache_clear()
    settings = load_settings()
    # __accountName is the public cloud's endpoint, as the host derives it.
    assert settings.storage_table_endpoint == "https://waastore.table.core.windows.net"
    assert settings.storage_connection is None
    assert isinstance(runtime.storage_credential(settings), ManagedIdentityCredential)

    monkeypatch.delenv("AzureWebJobsStorage__credential")
    load_settings.cache_clear()
    assert isinstance(runtime.storage_credential(load_settings()), DefaultAzureCredential)
    load_settings.cache_clear()


def test_a_connection_string_wins_over_identity_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTBEAT_SECRET", SECRET)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "waastore")
    load_settings.cache_clear()
    settings = load_settings()
    assert settings.storage_connection is not None
    load_settings.cache_clear()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "app setting AzureWebJobsStorage is missing (a storage connection string, or"),
        (
            {"AzureWebJobsStorage__tableServiceUri": "http://waastore.table.core.windows.net"},
            "app setting AzureWebJobsStorage__tableServiceUri is malformed",
        ),
        (
            {"AzureWebJobsStorage__accountName": "Not_A_Name"},
            "app setting AzureWebJobsStorage__accountName is malformed",
        ),
        (
            {
                "AzureWebJobsStorage__accountName": "waastore",
                "AzureWebJobsStorage__credential": "password",
            },
            "app setting AzureWebJobsStorage__credential is malformed",
        ),
    ],
)
def test_a_missing_or_malformed_storage_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name in (
        "AzureWebJobsStorage",
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__tableServiceUri",
        "AzureWebJobsStorage__credential",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HEARTBEAT_SECRET", SECRET)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    load_settings.cache_clear()
    with pytest.raises(SettingsError) as err:
        load_settings()
    load_settings.cache_clear()
    assert expected in str(err.value)
    assert str(err.value).count("AzureWebJobsStorage") >= 1
