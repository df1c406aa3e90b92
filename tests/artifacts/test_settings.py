"""The artifacts settings: defaults, and malformed values named by their app setting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.settings import load_settings
from tests.support.settings_env import assert_malformed, fresh_settings

NAMES = (
    "ARTIFACTS_ENABLED",
    "ARTIFACTS_CONTAINER",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__accountName",
)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from fresh_settings(monkeypatch, NAMES)


def test_defaults() -> None:
    s = load_settings()
    assert s.artifacts_enabled is True
    assert s.artifacts_container == "waa-artifacts"
    assert s.storage_blob_endpoint is None


def test_the_blob_endpoint_of_identity_based_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "waastore1")
    assert load_settings().storage_blob_endpoint == "https://waastore1.blob.core.windows.net"
    load_settings.cache_clear()
    monkeypatch.setenv("AzureWebJobsStorage__blobServiceUri", "https://blob.example.net/")
    assert load_settings().storage_blob_endpoint == "https://blob.example.net"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ARTIFACTS_CONTAINER", "Waa_Artifacts"),
        ("ARTIFACTS_CONTAINER", "waa--artifacts"),
        ("ARTIFACTS_CONTAINER", "-waa"),
        ("ARTIFACTS_CONTAINER", "ab"),
        ("ARTIFACTS_CONTAINER", "a" * 64),
        ("ARTIFACTS_ENABLED", "perhaps"),
        ("AzureWebJobsStorage__blobServiceUri", "http://blob.example.net"),
    ],
)
def test_a_malformed_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    assert_malformed(monkeypatch, name, value)
