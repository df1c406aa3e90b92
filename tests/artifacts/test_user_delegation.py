"""The identity-based path: a user-delegation SAS, signed with a key the app's identity gets
from the Blob service, checked by a real Blob service (Azurite's, with OAuth and TLS, as in
Azure: Get User Delegation Key needs a bearer token, and azure-core sends one over https only).

Azurite's `--oauth basic` reads the token's issuer, audience, lifetime, oid and tid without
checking its signature (node_modules/azurite/dist/src/blob/authentication/
BlobTokenAuthenticator.js), and validates the user-delegation SAS against the key it handed
out (BlobSASAuthenticator.js): so a SAS that verifies here is one that Azure would accept too.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.storage.blob import UserDelegationKey

from adapters.artifacts import (
    DELEGATION_KEY_LIFETIME,
    ArtifactStore,
    UserDelegationSigner,
)
from adapters.settings import AppSettings
from devhost.azurite import AZURITE_BIN, free_port
from tests.fakes._http import write_self_signed_cert

pytestmark = pytest.mark.azurite

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OBJECT_ID = "0b3c1a5e-6d2f-4c8e-9a7b-1e2d3c4b5a69"
PREFIX = "ev1/vlc/task-9/attempt-1/"
BLOCK = {"x-ms-blob-type": "BlockBlob"}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class EntraLikeCredential:
    """A token shaped like the app identity's for Azure Storage (unsigned: Azurite's basic
    OAuth does not check signatures)."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        now = int(time.time())
        claims = {
            "aud": "https://storage.azure.com",
            "iss": f"https://sts.windows.net/{TENANT}/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "oid": OBJECT_ID,
            "tid": TENANT,
        }
        token = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2ln"
        return AccessToken(token, now + 3600)


@dataclass
class OAuthAzurite:
    blob_url: str
    ca_file: str


@pytest.fixture(scope="module")
def oauth_azurite() -> Iterator[OAuthAzurite]:
    """Azurite's Blob service over TLS with OAuth on: its own process, stopped at the end."""
    tmp = tempfile.TemporaryDirectory(prefix="azurite-oauth-")
    cert, key = write_self_signed_cert(Path(tmp.name))
    port = free_port()
    log = open(Path(tmp.name) / "azurite.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(AZURITE_BIN.with_name("azurite-blob")),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--inMemoryPersistence",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--oauth",
            "basic",
            "--cert",
            str(cert),
            "--key",
            str(key),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        url = f"https://127.0.0.1:{port}/devstoreaccount1"
        while True:
            assert process.poll() is None, (Path(tmp.name) / "azurite.log").read_text()
            try:
                requests.get(url, verify=str(cert), timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "Azurite (OAuth) did not answer"
                time.sleep(0.2)
        yield OAuthAzurite(blob_url=url, ca_file=str(cert))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        tmp.cleanup()


@pytest.fixture
def identity_store(
    oauth_azurite: OAuthAzurite, monkeypatch: pytest.MonkeyPatch
) -> tuple[ArtifactStore, EntraLikeCredential]:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", oauth_azurite.ca_file)
    # What infra/app/api.bicep sets: identity-based storage, no key anywhere.
    settings = AppSettings(  # type: ignore[call-arg]
        **{
            "AzureWebJobsStorage__blobServiceUri": oauth_azurite.blob_url + "/",
            "AzureWebJobsStorage__tableServiceUri": "https://127.0.0.1:9/devstoreaccount1",
            "AzureWebJobsStorage__credential": "managedidentity",
            "HEARTBEAT_SECRET": "h" * 24,
            "ARTIFACTS_CONTAINER": f"art{uuid.uuid4().hex[:12]}",
        }
    )
    credential = EntraLikeCredential()
    store = ArtifactStore.from_settings(settings, lambda: credential)  # type: ignore[arg-type, return-value]
    assert store is not None
    return store, credential


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_a_user_delegation_sas_writes_its_blob_and_nothing_else(
    identity_store: tuple[ArtifactStore, EntraLikeCredential], oauth_azurite: OAuthAzurite
) -> None:
    store, credential = identity_store
    assert isinstance(store._signer, UserDelegationSigner)
    grant = store.upload_urls(PREFIX, ["traj.jsonl", "result.txt"], timedelta(hours=3))
    assert credential.calls >= 1  # the key and the container came with the identity's token
    ca = oauth_azurite.ca_file
    for path, url in grant.urls.items():
        q = _query(url)
        assert q["sp"] == "cw" and q["sr"] == "b" and q["spr"] == "https"
        assert q["skoid"] == OBJECT_ID and q["sktid"] == TENANT  # signed with the identity's key
        r = requests.put(url, data=path.encode(), headers=BLOCK, verify=ca, timeout=10)
        assert r.status_code == 201, r.text
    url = grant.urls["traj.jsonl"]
    other = url.replace("/traj.jsonl?", "/other.jsonl?")
    assert requests.put(other, data=b"x", headers=BLOCK, verify=ca, timeout=10).status_code == 403
    assert requests.get(url, verify=ca, timeout=10).status_code == 403
    # The key is cached: more URLs, no new key.
    signer = store._signer
    assert isinstance(signer, UserDelegationSigner)
    fetched = signer.keys_fetched
    store.upload_urls(PREFIX, ["more.txt"], timedelta(hours=3))
    assert signer.keys_fetched == fetched == 1


@dataclass
class KeyService:
    """Get User Delegation Key as the service answers it: the key valid from start to expiry."""

    account_name: str = "acct"
    asked: list[tuple[datetime, datetime]] | None = None

    def get_user_delegation_key(
        self, key_start_time: datetime, key_expiry_time: datetime, **kwargs: Any
    ) -> UserDelegationKey:
        if self.asked is None:
            self.asked = []
        self.asked.append((key_start_time, key_expiry_time))
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = OBJECT_ID, TENANT
        key.signed_start = key_start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_expiry = key_expiry_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service, key.signed_version = "b", "2026-02-06"
        key.value = base64.b64encode(b"k" * 32).decode()
        return key


def test_the_key_is_refreshed_before_it_would_end_before_a_sas() -> None:
    clock = [datetime(2026, 6, 1, tzinfo=UTC)]
    service = KeyService()
    signer = UserDelegationSigner(service, now=lambda: clock[0])  # type: ignore[arg-type]
    _, expiry = signer.sign("c", "a/b.txt", clock[0] + timedelta(hours=4))
    assert expiry == clock[0] + timedelta(hours=4)
    assert service.asked is not None and len(service.asked) == 1
    start, end = service.asked[0]
    # Never longer than the service's 7 days, starting a little early for clock skew.
    assert end - clock[0] == DELEGATION_KEY_LIFETIME <= timedelta(days=7)
    assert start < clock[0]

    clock[0] += timedelta(days=5)  # the cached key ends in a day: still fine for 4 hours ...
    signer.sign("c", "a/b.txt", clock[0] + timedelta(hours=4))
    assert len(service.asked) == 1
    # ... not for a SAS that must outlive it: a new key first.
    _, expiry = signer.sign("c", "a/b.txt", clock[0] + timedelta(hours=30))
    assert len(service.asked) == 2
    assert expiry == clock[0] + timedelta(hours=30)


def test_a_sas_never_outlives_the_longest_key() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    signer = UserDelegationSigner(KeyService(), now=lambda: now)  # type: ignore[arg-type]
    token, expiry = signer.sign("c", "x", now + timedelta(days=30))
    assert expiry <= now + timedelta(days=7)
    se = _query("https://h/?" + token)["se"]
    assert datetime.fromisoformat(se.replace("Z", "+00:00")) == expiry.replace(microsecond=0)
