from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "HEARTBEAT_SECRET": "s" * 24}


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]:
        monkeypatch.delenv(name, raising=False)
    for name in ("PUBLIC_BASE_URL", "MAX_WORKERS", "VM_POOL"):
        monkeypatch.delenv(name, raising=False)
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


def test_every_missing_required_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "AzureWebJobsStorage is missing" in str(err.value)
    assert "HEARTBEAT_SECRET is missing" in str(err.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_WORKERS", "ten"),
        ("MAX_WORKERS", "0"),
        ("PUBLIC_BASE_URL", "ftp://x"),
        ("COMPUTE_BACKEND", "aws"),
        ("VM_POOL", "[not json"),
        ("HEARTBEAT_SECRET", "short"),
    ],
)
def test_a_malformed_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"app setting {name} is malformed"):
        load_settings()


def test_an_empty_setting_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "")
    monkeypatch.setenv("VM_POOL", "")
    monkeypatch.setenv("MAX_WORKERS", "")
    s = load_settings()
    assert s.azure_subscription_id is None and s.vm_pool == [] and s.max_workers == 20


def test_the_sample_settings_load_and_cover_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    assert settings.compute_backend == "simulated"
    read = {f.alias for f in type(settings).model_fields.values()}
    assert read <= set(values), f"settings missing from the sample: {sorted(read - set(values))}"


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("BATCH_ACCOUNT_KEY", "very-secret-key")
    text = repr(load_settings()) + str(load_settings())
    assert "very-secret-key" not in text and REQUIRED["HEARTBEAT_SECRET"] not in text
