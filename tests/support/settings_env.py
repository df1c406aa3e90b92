"""The app's settings as a test sets them: the required ones, the ones under test cleared, and
the settings cache emptied before and after, so each test reads its own environment."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from adapters.settings import SettingsError, load_settings

REQUIRED = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "HEARTBEAT_SECRET": "s" * 24}


def fresh_settings(monkeypatch: pytest.MonkeyPatch, cleared: Iterable[str]) -> Iterator[None]:
    """For an autouse fixture: `yield from fresh_settings(monkeypatch, NAMES)`."""
    for name in cleared:
        monkeypatch.delenv(name, raising=False)
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


def assert_malformed(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """Loading the settings with `name` set to `value` fails with an error naming `name`."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"app setting {name} is malformed"):
        load_settings()
