"""The upload SAS against the real Blob service of Azurite, through the real SDK: each URL
writes its one blob, for as long as the job may run, and can do nothing else."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from adapters.artifacts import AccountKeySigner, ArtifactStore
from adapters.settings import AppSettings

pytestmark = pytest.mark.azurite

SECRET = "h" * 24
PREFIX = "ev1/msedge/task-1/attempt-2/"
BLOCK = {"x-ms-blob-type": "BlockBlob"}


def _settings(connection_string: str, **extra: str) -> AppSettings:
    values = {
        "AzureWebJobsStorage": connection_string,
        "HEARTBEAT_SECRET": SECRET,
        "ARTIFACTS_CONTAINER": f"art{uuid.uuid4().hex[:12]}",
        **extra,
    }
    return AppSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def store(azurite_connection_string: str) -> ArtifactStore:
    made = ArtifactStore.from_settings(_settings(azurite_connection_string), _no_identity)
    assert made is not None
    return made


def _no_identity() -> object:
    raise AssertionError("a connection string needs no identity")


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _elsewhere(url: str, blob_name: str, container: str) -> str:
    """The same SAS on another blob's URL."""
    parts = urlsplit(url)
    head = parts.path.split(f"/{container}/", 1)[0]
    return urlunsplit(parts._replace(path=f"{head}/{container}/{blob_name}"))


def test_a_url_writes_its_own_blob(store: ArtifactStore, blob_service: BlobServiceClient) -> None:
    before = datetime.now(UTC)
    grant = store.upload_urls(PREFIX, ["traj.jsonl", "shots/step 1.png"], timedelta(hours=2))
    assert set(grant.urls) == {"traj.jsonl", "shots/step 1.png"}
    assert grant.prefix_url == f"{store.container_url}/{PREFIX}"
    assert "?" not in grant.prefix_url

    for path, url in grant.urls.items():
        q = _query(url)
        assert q["sp"] == "cw"  # create and write, nothing else
        assert q["sr"] == "b"  # one blob, not the container
        assert q["spr"] == "https,http"  # Azurite is served over http
        expiry = datetime.fromisoformat(q["se"].replace("Z", "+00:00"))
        assert before + timedelta(hours=2) - timedelta(seconds=5) <= expiry
        assert expiry <= datetime.now(UTC) + timedelta(hours=2)
        assert abs((grant.expires_at - expiry).total_seconds()) < 1
        body = f"content of {path}".encode()
        r = requests.put(url, data=body, headers=BLOCK, timeout=10)
        assert r.status_code == 201, r.text
        blob = blob_service.get_blob_client(store.container, PREFIX + path)
        assert blob.download_blob().readall() == body

    # A retried upload replaces the blob (write).
    url = grant.urls["traj.jsonl"]
    assert requests.put(url, data=b"again", headers=BLOCK, timeout=10).status_code == 201


def test_a_url_cannot_write_another_blob_nor_read(store: ArtifactStore) -> None:
    grant = store.upload_urls(PREFIX, ["traj.jsonl"], timedelta(hours=1))
    url = grant.urls["traj.jsonl"]
    assert requests.put(url, data=b"{}", headers=BLOCK, timeout=10).status_code == 201
    for other in (
        PREFIX + "other.txt",  # beside it
        "ev1/msedge/task-1/attempt-1/traj.jsonl",  # another attempt's
        "ev2/msedge/task-1/attempt-2/traj.jsonl",  # another evaluation's
    ):
        r = requests.put(
            _elsewhere(url, other, store.container), data=b"x", headers=BLOCK, timeout=10
        )
        assert r.status_code == 403, (other, r.status_code, r.text)
    # No read, no delete, no listing with it.
    assert requests.get(url, timeout=10).status_code == 403
    assert requests.delete(url, timeout=10).status_code == 403
    listing = f"{store.container_url}?restype=container&comp=list&{urlsplit(url).query}"
    assert requests.get(listing, timeout=10).status_code == 403


def test_an_expired_url_is_refused(store: ArtifactStore) -> None:
    grant = store.upload_urls(PREFIX, ["late.txt"], timedelta(seconds=-60))
    r = requests.put(grant.urls["late.txt"], data=b"x", headers=BLOCK, timeout=10)
    assert r.status_code == 403, r.text


def test_the_container_is_created_on_first_use_and_may_exist(
    azurite_connection_string: str, blob_service: BlobServiceClient
) -> None:
    settings = _settings(azurite_connection_string)
    container = blob_service.get_container_client(settings.artifacts_container)
    assert not container.exists()
    first = ArtifactStore.from_settings(settings, _no_identity)
    assert first is not None
    first.upload_urls(PREFIX, ["a.txt"], timedelta(minutes=5))
    assert container.exists()
    # Another instance of the app, with the container already there.
    second = ArtifactStore.from_settings(settings, _no_identity)
    assert second is not None
    grant = second.upload_urls(PREFIX, ["b.txt"], timedelta(minutes=5))
    assert requests.put(grant.urls["b.txt"], data=b"b", headers=BLOCK, timeout=10).ok


def test_a_connection_string_signs_with_its_account_key(azurite_connection_string: str) -> None:
    store = ArtifactStore.from_settings(_settings(azurite_connection_string), _no_identity)
    assert store is not None
    assert isinstance(store._signer, AccountKeySigner)


def test_no_store_when_artifacts_are_off_or_nothing_can_sign(
    azurite_connection_string: str,
) -> None:
    off = _settings(azurite_connection_string, ARTIFACTS_ENABLED="false")
    assert ArtifactStore.from_settings(off, _no_identity) is None
    # A connection string holding a SAS instead of a key cannot mint SAS for others.
    blob = next(p for p in azurite_connection_string.split(";") if p.startswith("BlobEndpoint="))
    sas_only = _settings(f"{blob};SharedAccessSignature=sv=2024-08-04&sig=abc")
    assert ArtifactStore.from_settings(sas_only, _no_identity) is None
    # Tables only: no Blob service.
    table = next(p for p in azurite_connection_string.split(";") if p.startswith("TableEndpoint="))
    assert ArtifactStore.from_settings(_settings(table), _no_identity) is None
