"""adapters/secrets.py with the real azure-keyvault-secrets client against a loopback fake Key
Vault over TLS (tests/fakes/keyvault_server.py): the challenge handshake, what the secret is
written with, how failures are classified, and that the token never reaches a log or error."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta

import pytest

from adapters.secrets import TOKEN_CONTENT_TYPE, HeartbeatTokenVault
from domain.jobs import FailureKind, PermanentTierError, TransientBackendError
from tests.credentials.conftest import RecordingCredential, loopback_vault
from tests.fakes.credentials import FAKE_BEARER_TOKEN
from tests.fakes.keyvault_server import RESOURCE, TENANT_ID, FakeKeyVault

TOKEN = "0f" * 32  # the shape of a heartbeat token (an HMAC-SHA256 hex digest)
NAME = "waa-3f9a0c1d2e4b-s0-a1-heartbeat"
EXPIRES = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def _store(writer: HeartbeatTokenVault, name: str = NAME) -> None:
    writer.store_token(name, TOKEN, expires_on=EXPIRES, tags={"waa_job": "waa-x"})


def test_the_first_request_is_challenged_then_sent_with_the_vault_token(
    vault: FakeKeyVault, credential: RecordingCredential
) -> None:
    _store(loopback_vault(vault, credential))
    first, second = vault.requests
    # Key Vault's challenge protocol: the first request goes out without a token or a body...
    assert first.method == "PUT" and "authorization" not in first.headers
    assert first.body == b""
    # ...the 401's challenge names the resource; the credential is asked for its scope, in the
    # challenge's tenant...
    ((scopes, options),) = credential.asked
    assert scopes == (RESOURCE + "/.default",)
    assert options.get("tenant_id") == TENANT_ID
    # ...and the real request follows with the token and the body.
    assert second.headers["authorization"] == f"Bearer {FAKE_BEARER_TOKEN}"
    assert second.path == f"/secrets/{NAME}" and second.query["api-version"]
    assert vault.challenges == 1


def test_the_secret_holds_the_token_as_text_and_expires(
    vault: FakeKeyVault, credential: RecordingCredential
) -> None:
    _store(loopback_vault(vault, credential))
    body = vault.requests[-1].json()
    assert body["value"] == TOKEN
    assert body["contentType"] == TOKEN_CONTENT_TYPE
    assert body["attributes"]["exp"] == int(EXPIRES.timestamp())
    assert body["attributes"]["enabled"] is True
    assert body["tags"] == {"waa_job": "waa-x"}
    assert vault.latest(NAME)["value"] == TOKEN


def test_a_second_write_is_a_new_version_and_needs_no_new_challenge(
    vault: FakeKeyVault, credential: RecordingCredential
) -> None:
    writer = loopback_vault(vault, credential)
    _store(writer)
    _store(writer)  # a re-delivered submit
    assert len(vault.secrets[NAME]) == 2
    assert vault.challenges == 1  # the policy cached the challenge for this vault


def test_throttling_is_retried_by_the_sdk(
    vault: FakeKeyVault, credential: RecordingCredential, sdk_sleeps: list[float]
) -> None:
    vault.fail_next("throttle", count=2, when=lambda r: "authorization" in r.headers)
    _store(loopback_vault(vault, credential))
    assert vault.latest(NAME)["value"] == TOKEN
    assert sdk_sleeps, "the retry policy backed off (Retry-After)"


def test_an_unavailable_vault_is_transient(
    vault: FakeKeyVault, credential: RecordingCredential, sdk_sleeps: list[float]
) -> None:
    vault.fail_next("server_error", count=100, when=lambda r: "authorization" in r.headers)
    with pytest.raises(TransientBackendError) as err:
        _store(loopback_vault(vault, credential))
    assert "HTTP 503" in str(err.value) and TOKEN not in str(err.value)
    assert err.value.kind is FailureKind.TRANSIENT


def test_a_missing_role_is_permanent_for_the_tier_and_says_which(
    vault: FakeKeyVault, credential: RecordingCredential, caplog: pytest.LogCaptureFixture
) -> None:
    vault.fail_next("forbidden", when=lambda r: "authorization" in r.headers)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PermanentTierError) as err:
        _store(loopback_vault(vault, credential))
    text = str(err.value)
    assert "HTTP 403 Forbidden/ForbiddenByRbac" in text
    assert "Key Vault Secrets Officer" in text
    assert err.value.code == "Forbidden/ForbiddenByRbac"
    assert TOKEN not in text and TOKEN not in caplog.text


def test_an_unreachable_vault_is_transient(credential: RecordingCredential) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    writer = HeartbeatTokenVault.connect(
        f"https://127.0.0.1:{port}", credential, verify_challenge_resource=False, retry_total=0
    )
    with pytest.raises(TransientBackendError, match="unreachable"):
        _store(writer)


def test_the_app_keeps_the_challenge_resource_check_on(
    vault: FakeKeyVault, credential: RecordingCredential
) -> None:
    # As the app builds it (no verify_challenge_resource=False): the challenge names
    # vault.azure.net, which 127.0.0.1 is not under, so the SDK refuses to send a token there.
    assert vault.ca_file is not None
    writer = HeartbeatTokenVault.connect(vault.url, credential, connection_verify=vault.ca_file)
    with pytest.raises(PermanentTierError, match="challenge refused"):
        _store(writer)
    assert credential.asked == [] and len(vault.requests) == 1
    assert not vault.secrets


def test_the_token_never_reaches_a_log(
    vault: FakeKeyVault, credential: RecordingCredential, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _store(loopback_vault(vault, credential))
    assert vault.latest(NAME)["value"] == TOKEN
    assert caplog.records, "the SDK and the writer log at DEBUG/INFO"
    assert TOKEN not in caplog.text
    assert FAKE_BEARER_TOKEN not in caplog.text


def test_the_expiry_is_sent_in_utc_seconds(
    vault: FakeKeyVault, credential: RecordingCredential
) -> None:
    later = EXPIRES + timedelta(hours=5, seconds=7)
    loopback_vault(vault, credential).store_token(NAME, TOKEN, expires_on=later, tags={})
    assert vault.latest(NAME)["attributes"]["exp"] == int(later.timestamp())
