"""PUBLIC_BASE_URL is where jobs in Azure post heartbeats: with the real tiers it must be an
https URL they can reach, refused at settings load otherwise; the simulator takes loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.settings import SettingsError, load_settings
from tests.support.settings_env import fresh_settings


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from fresh_settings(monkeypatch, ("PUBLIC_BASE_URL", "COMPUTE_BACKEND"))


@pytest.mark.parametrize(
    "url",
    [
        None,  # unset: the loopback default
        "http://127.0.0.1:7071",
        "http://waa-eval.azurewebsites.net",
        "https://localhost:7071",
        "https://[::1]:7071",
        "https://0.0.0.0",
        "https://169.254.169.254",
        "https://app.localhost",
    ],
)
def test_the_azure_backend_refuses_a_url_jobs_cannot_reach(
    monkeypatch: pytest.MonkeyPatch, url: str | None
) -> None:
    monkeypatch.setenv("COMPUTE_BACKEND", "azure")
    if url is not None:
        monkeypatch.setenv("PUBLIC_BASE_URL", url)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith("app setting PUBLIC_BASE_URL is malformed")
    assert "COMPUTE_BACKEND is azure" in message


@pytest.mark.parametrize(
    "url", ["https://waa-eval.azurewebsites.net/", "https://10.1.2.3", "https://eval.example.org/x"]
)
def test_the_azure_backend_takes_an_https_url(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("COMPUTE_BACKEND", "azure")
    monkeypatch.setenv("PUBLIC_BASE_URL", url)
    assert load_settings().public_base_url == url.rstrip("/")


@pytest.mark.parametrize("url", [None, "http://127.0.0.1:7071", "http://localhost:7071"])
def test_the_simulator_takes_loopback_http(
    monkeypatch: pytest.MonkeyPatch, url: str | None
) -> None:
    monkeypatch.setenv("COMPUTE_BACKEND", "simulated")
    if url is not None:
        monkeypatch.setenv("PUBLIC_BASE_URL", url)
    assert load_settings().public_base_url == (url or "http://127.0.0.1:7071")


def test_credentials_in_the_url_are_refused_and_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMPUTE_BACKEND", "azure")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://user:hunter2secret@waa.azurewebsites.net")
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL is malformed") as err:
        load_settings()
    assert "hunter2secret" not in str(err.value)


def test_an_invalid_backend_is_named_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPUTE_BACKEND", "aws")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "COMPUTE_BACKEND is malformed" in str(err.value)
    assert "PUBLIC_BASE_URL" not in str(err.value)
