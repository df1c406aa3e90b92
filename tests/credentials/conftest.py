from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport

from adapters.secrets import HeartbeatTokenVault
from tests.fakes.credentials import StaticTokenCredential
from tests.fakes.keyvault_server import FakeKeyVault


class RecordingCredential(StaticTokenCredential):
    """The fake token, and every (scopes, options) it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.asked.append((scopes, kwargs))
        return super().get_token(*scopes, **kwargs)


@pytest.fixture
def vault() -> Iterator[FakeKeyVault]:
    fake = FakeKeyVault()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def credential() -> RecordingCredential:
    return RecordingCredential()


def loopback_vault(fake: FakeKeyVault, credential: Any) -> HeartbeatTokenVault:
    """The app's writer on the fake: its certificate trusted, and the challenge's resource
    check off, because a loopback address cannot be a subdomain of vault.azure.net (the check
    itself is exercised in test_keyvault_writer)."""
    assert fake.ca_file is not None
    return HeartbeatTokenVault.connect(
        fake.url, credential, connection_verify=fake.ca_file, verify_challenge_resource=False
    )


@pytest.fixture
def sdk_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every back-off the SDK's retry policy would sleep, recorded instead of slept."""
    sleeps: list[float] = []
    monkeypatch.setattr(RequestsTransport, "sleep", lambda self, seconds: sleeps.append(seconds))
    return sleeps
